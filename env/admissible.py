"""The decoding aid: what is worth trying in the browser's current state (an `Admissible` set).

Like TextWorld's admissible commands: a weak policy (a few-shot base model) decodes only these,
and the scripted demonstrator issues only these, so a policy could have written each of its
commands. It is not a rule of the environment, which accepts any command.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from env.observation import SavedQuote, normalize, strip_markup, truncate
from env.queries import query_variants
from env.search import split_sentences

if TYPE_CHECKING:
    from env.config import EnvConfig
    from env.pages import Page


class BrowserState(Protocol):
    """What the aid reads of a `BrowserEnv` (it changes nothing)."""

    phase: str
    question: str
    page: Page | None
    cursor: int
    quotes: list[SavedQuote]
    history: list[tuple[Page, int]]
    config: EnvConfig

    @property
    def actions_left(self) -> int: ...


@dataclass(frozen=True)
class Admissible:
    commands: tuple[str, ...]
    """Complete commands, e.g. 'Clicked on link 3', 'Quote: <a sentence in view>'."""
    prefixes: tuple[str, ...]
    """Keywords whose argument is free text, e.g. 'Find in page:'."""

    def __bool__(self) -> bool:
        """False when nothing is listed (then a policy decodes freely)."""
        return bool(self.commands or self.prefixes)


_VISIBLE_LINK = re.compile("【(\\d+)†")


def _sentences(lines: Sequence[str], max_chars: int, width: int, limit: int = 24) -> list[str]:
    """Sentences (or sentence pieces) of the lines in view, markup stripped: quotable text.

    Wrapped lines are joined back into paragraphs; a line well short of the wrap width ends
    one (a heading or a short description line is not glued to the next sentence).
    """
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        plain = strip_markup(line).strip()
        paragraphs[-1].append(plain)
        if len(plain) < 0.6 * width:
            paragraphs.append([])
    out = []
    for para in paragraphs:
        text = re.sub(r"\s+", " ", " ".join(para)).strip()
        for sentence in split_sentences(text, quotable=True):
            sentence = sentence.strip()
            if len(sentence) >= 12 and len(out) < limit:
                out.append(truncate(sentence, max_chars).rstrip("…"))
    return out


def _extractive_answers(quotes: Sequence[SavedQuote], max_words: int = 6) -> tuple[str, ...]:
    """Short answers a weak policy may give: a span of up to `max_words` words of a quote, then
    its citation, as in "Leonardo da Vinci [1]"."""
    out: dict[str, None] = {}
    for q in quotes:
        words = q.extract.split()
        for i in range(len(words)):
            for j in range(i + 1, min(i + max_words, len(words)) + 1):
                span = " ".join(words[i:j]).strip(_EDGE_PUNCT)
                if span:
                    out.setdefault(f"{span} [{q.n}]")
    return tuple(out)


_EDGE_PUNCT = " \"'()[],.;:!?“”‘’"


def admissible_actions(env: BrowserState) -> Admissible:
    """The admissible set of `env` now (`BrowserEnv.admissible` says what it holds)."""
    if env.phase == "answer":
        return Admissible(_extractive_answers(env.quotes), ())
    if env.phase != "browse":
        return Admissible((), ())
    page = env.page
    commands: list[str] = []
    # a results page with results is for choosing one: searching again from it loops;
    # queries are the question's own words (a few-shot model copies its examples' queries)
    on_results = page is not None and page.kind == "search" and bool(page.links)
    if not on_results:
        commands += [f"Search {q}" for q in query_variants(env.question)]
    prefixes = []
    if page is not None:
        window = page.lines[env.cursor : env.cursor + env.config.limits.window_lines]
        for line in window:
            commands += [f"Clicked on link {m}" for m in _VISIBLE_LINK.findall(line)]
        if env.cursor + env.config.limits.window_lines < len(page.lines):
            commands.append("Scrolled down 1")
        if env.cursor > 0:
            commands += ["Scrolled up 1", "Top"]
        # quote documents, not result lists; one quote per page (a weak policy otherwise
        # quotes every sentence in view instead of moving on)
        if page.kind == "page" and not any(q.url == page.url for q in env.quotes):
            quoted = {normalize(q.extract) for q in env.quotes}
            limits = env.config.limits
            commands += [
                f"Quote: {q}"
                for q in _sentences(window, limits.max_quote_chars, env.config.render_width_chars)
                if normalize(q) not in quoted
            ]
        prefixes.append("Find in page:")
    if env.history:
        commands.append("Back")
    if env.quotes:
        commands.append("End: Answer")
    # nearly out of actions with nothing quoted: an answer needs a quote, so the last
    # actions can only quote (on a page) or, with two left, open a result to quote from
    if not env.quotes and env.actions_left <= 2:
        urgent = [c for c in commands if c.startswith("Quote: ")]
        if not urgent and env.actions_left == 2:
            urgent = [c for c in commands if c.startswith("Clicked on link ")]
        if urgent:
            return Admissible(tuple(dict.fromkeys(urgent)), ())
    return Admissible(tuple(dict.fromkeys(commands)), tuple(prefixes))
