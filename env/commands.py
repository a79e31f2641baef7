"""The command grammar: the one place that knows what a browser command looks like.

`parse` turns the text a model writes into a frozen dataclass or raises `CommandError`;
`str(command)` gives the canonical text back; `describe` is the help text prompts show;
`sample` draws a valid command (for Gymnasium's `action_space.sample()` and fuzz tests).
No I/O happens here.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from typing import Literal

QUOTE_SPAN_SEPARATOR = "━"
"""`Quote: <start>━<end>` quotes the page text from <start> through <end> (WebGPT's short form)."""

SCROLL_AMOUNTS = (1, 2, 3)


class CommandError(ValueError):
    """The text is not a command of the grammar; the message says what would have been valid."""


@dataclass(frozen=True)
class Search:
    query: str

    def __str__(self) -> str:
        return f"Search {self.query}"


@dataclass(frozen=True)
class Click:
    link_id: int

    def __str__(self) -> str:
        return f"Clicked on link {self.link_id}"


@dataclass(frozen=True)
class Find:
    text: str

    def __str__(self) -> str:
        return f"Find in page: {self.text}"


@dataclass(frozen=True)
class Quote:
    text: str

    @property
    def span(self) -> tuple[str, str] | None:
        """(start, end) for the abbreviated form `start━end`, else None."""
        if QUOTE_SPAN_SEPARATOR not in self.text:
            return None
        start, _, end = self.text.partition(QUOTE_SPAN_SEPARATOR)
        return start.strip(), end.strip()

    def __str__(self) -> str:
        return f"Quote: {self.text}"


@dataclass(frozen=True)
class Scroll:
    direction: Literal["down", "up"]
    amount: int = 1

    def __str__(self) -> str:
        return f"Scrolled {self.direction} {self.amount}"


@dataclass(frozen=True)
class Top:
    def __str__(self) -> str:
        return "Top"


@dataclass(frozen=True)
class Back:
    def __str__(self) -> str:
        return "Back"


@dataclass(frozen=True)
class End:
    kind: Literal["answer", "nonsense", "controversial"] = "answer"

    def __str__(self) -> str:
        return f"End: {self.kind.capitalize()}"


Command = Search | Click | Find | Quote | Scroll | Top | Back | End

COMMAND_NAMES: dict[type, str] = {
    Search: "search",
    Click: "click",
    Find: "find",
    Quote: "quote",
    Scroll: "scroll",
    Top: "top",
    Back: "back",
    End: "end",
}

# Keyword prefixes, matched case-insensitively with any run of spaces between words.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"search\s+(?P<arg>.+)", re.I | re.S), "search"),
    (re.compile(r"clicked\s+on\s+link\s+(?P<arg>.+)", re.I | re.S), "click"),
    (re.compile(r"find\s+in\s+page\s*:\s*(?P<arg>.+)", re.I | re.S), "find"),
    (re.compile(r"quote\s*:\s*(?P<arg>.+)", re.I | re.S), "quote"),
    (re.compile(r"scrolled\s+(?P<dir>down|up)(?:\s+(?P<arg>\S+))?", re.I), "scroll"),
    (re.compile(r"top", re.I), "top"),
    (re.compile(r"back", re.I), "back"),
    (re.compile(r"end\s*:\s*(?P<arg>answer|nonsense|controversial)", re.I), "end"),
]

KEYWORDS = (
    "Search",
    "Clicked on link",
    "Find in page:",
    "Quote:",
    "Scrolled down",
    "Scrolled up",
    "Top",
    "Back",
    "End: Answer",
    "End: Nonsense",
    "End: Controversial",
)
"""How every command starts, in canonical spelling (constrained decoding starts from these)."""

_USAGE = (
    "expected one of: Search <query> | Clicked on link <id> | Find in page: <text> | "
    f"Quote: <text> (or <start>{QUOTE_SPAN_SEPARATOR}<end>) | Scrolled down <1|2|3> | "
    "Scrolled up <1|2|3> | Top | Back | End: Answer | End: Nonsense | End: Controversial"
)


def parse(text: str) -> Command:
    """Parse one command. Case and surrounding whitespace are tolerated; nothing else is."""
    if not isinstance(text, str):
        raise CommandError(f"a command is text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise CommandError(f"empty command; {_USAGE}")
    if "\n" in stripped:
        raise CommandError("a command is one line; got several")
    for pattern, name in _PATTERNS:
        m = pattern.fullmatch(stripped)
        if m is None:
            continue
        arg = (m.groupdict().get("arg") or "").strip()
        if name == "search":
            return Search(arg)
        if name == "click":
            if not re.fullmatch(r"\d{1,6}", arg):
                raise CommandError(f"link id must be a non-negative whole number, got {arg!r}")
            return Click(int(arg))
        if name == "find":
            return Find(arg)
        if name == "quote":
            quote = Quote(arg)
            span = quote.span
            if span is not None and not (span[0] and span[1]):
                raise CommandError(
                    f"abbreviated quote needs text on both sides of {QUOTE_SPAN_SEPARATOR}"
                )
            return quote
        if name == "scroll":
            amount = arg or "1"
            if amount not in {str(a) for a in SCROLL_AMOUNTS}:
                raise CommandError(f"scroll amount must be 1, 2 or 3, got {amount!r}")
            return Scroll(m.group("dir").lower(), int(amount))  # type: ignore[arg-type]
        if name == "top":
            return Top()
        if name == "back":
            return Back()
        return End(arg.lower())  # type: ignore[arg-type]
    raise CommandError(f"unknown command {stripped[:80]!r}; {_USAGE}")


def to_dict(command: Command) -> dict:
    """JSON-ready form for episode records: {"name": ..., plus the fields}."""
    return {"name": COMMAND_NAMES[type(command)], **asdict(command)}


def from_dict(data: dict) -> Command:
    """Inverse of `to_dict`."""
    fields = dict(data)
    name = fields.pop("name")
    for cls, cls_name in COMMAND_NAMES.items():
        if cls_name == name:
            return cls(**fields)
    raise CommandError(f"unknown command name {name!r} in record")


def describe() -> str:
    """The command reference shown to models and people; kept beside the parser so they agree."""
    return "\n".join(
        [
            "Search <query>: search the web (or the local corpus) and show the results page",
            "Clicked on link <id>: open the link 【id†text】 of the current page",
            "Find in page: <text>: move the view to the next occurrence of <text>",
            "Quote: <text>: save an exact extract of the current page (cite it later as [n]); "
            f"Quote: <start>{QUOTE_SPAN_SEPARATOR}<end> saves the span from <start> to <end>",
            "Scrolled down <1|2|3> / Scrolled up <1|2|3>: move the view by 1-3 windows",
            "Top: go to the top of the page",
            "Back: return to the previous page",
            "End: Answer: stop browsing and write the answer from the quotes",
            "End: Nonsense / End: Controversial: stop without answering",
        ]
    )


_SAMPLE_WORDS = ["river", "Baghdad", "capital", "music", "Ray Charles", "1954", "piano", "city"]


def sample(rng: random.Random | None = None, *, max_link_id: int = 20) -> Command:
    """A random valid command (uniform over kinds), for action-space sampling and fuzzing."""
    rng = rng or random.Random()
    kind = rng.choice(list(COMMAND_NAMES.values()))
    word = rng.choice(_SAMPLE_WORDS)
    if kind == "search":
        return Search(word)
    if kind == "click":
        return Click(rng.randrange(max_link_id + 1))
    if kind == "find":
        return Find(word)
    if kind == "quote":
        return Quote(word)
    if kind == "scroll":
        return Scroll(rng.choice(["down", "up"]), rng.choice(SCROLL_AMOUNTS))
    if kind == "top":
        return Top()
    if kind == "back":
        return Back()
    return End(rng.choice(["answer", "nonsense", "controversial"]))
