"""The observation format: the one place that decides the characters a model sees.

Pure functions of the browser state. Link markers (`【id†text†domain】`), section headers (`●`)
and the escaping that keeps page text from forging them all live here; `pages.py` calls
`link_marker` and `escape` when it renders, `browser.py` calls `render_browse` and
`render_answer`. Golden-file tests pin the exact output.

One escaping path: every string from outside (page text, titles, URLs, host names, search
results, the question, past actions, error messages) reaches the model through `escape`, either
when a page is rendered (`pages.py`, `search.py` and the sources build lines only from `escape`d
text and `link_marker`) or here, when an observation is assembled (the browser escapes the
question and each past action once, as they arrive: `render_browse`). The only marker characters
an observation holds are therefore those `link_marker` wrote, each for a link the page has
(tests/test_observation.py checks this with hypothesis).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

SECTION = "●"
LINK_OPEN, LINK_SEP, LINK_CLOSE = "【", "†", "】"
IMAGE_PREFIX = "[Image: "

# Page text may contain our marker characters; replace them with look-alikes that cannot be
# mistaken for markup, so a page cannot forge a link or a section.
_ESCAPES = str.maketrans({LINK_OPEN: "[", LINK_CLOSE: "]", LINK_SEP: "+", SECTION: "•", "━": "-"})
_LINK_RE = re.compile(
    f"{LINK_OPEN}(\\d+){LINK_SEP}([^{LINK_SEP}{LINK_CLOSE}]*)(?:{LINK_SEP}[^{LINK_CLOSE}]*)?{LINK_CLOSE}"
)
_SPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class SavedQuote:
    """A quote the browser stored: cited in the answer as [n]."""

    n: int
    title: str
    url: str
    extract: str


def valid_text(text: str) -> str:
    """`text` with what UTF-8 cannot encode (lone surrogates, e.g. from a JSON `"\\ud800"`)
    replaced by '?': every string the browser keeps must survive hashing and writing."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def escape(text: str) -> str:
    """Outside text with marker characters replaced (so it cannot forge links or sections),
    and made valid UTF-8 (`valid_text`).

    Idempotent: escaping escaped text changes nothing, so a layer may escape again."""
    return valid_text(text).translate(_ESCAPES)


def escape_inline(text: str) -> str:
    """`escape`, with all whitespace (newlines too) folded to single spaces: for one-line
    fields (titles, link texts, host names, URLs), which must not break a line."""
    return _SPACE_RE.sub(" ", escape(text)).strip()


def domain(url: str) -> str:
    """The host shown to the model: 'en.wikipedia.org' for any URL on it ('' if none).

    Escaped: a host name is outside text like any other (`http://x】【9†forged】/` parses with
    the host 'x】【9†forged】')."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # e.g. an invalid bracketed IPv6 host
        host = ""
    return escape_inline(host[4:] if host.startswith("www.") else host)


def link_marker(link_id: int, text: str, url: str, page_url: str) -> str:
    """`【id†text†domain】`, or `【id†text】` when the link stays on the page's own site."""
    text = escape_inline(text) or "link"
    link_domain = domain(url)
    if not link_domain or link_domain == domain(page_url):
        return f"{LINK_OPEN}{link_id}{LINK_SEP}{text}{LINK_CLOSE}"
    return f"{LINK_OPEN}{link_id}{LINK_SEP}{text}{LINK_SEP}{link_domain}{LINK_CLOSE}"


def image_marker(alt: str) -> str:
    return f"{IMAGE_PREFIX}{escape_inline(alt)}]"


def strip_markup(text: str) -> str:
    """Rendered text with link markers replaced by their link text (what Find and Quote match)."""
    return _LINK_RE.sub(lambda m: m.group(2), text)


def normalize(text: str) -> str:
    """Case- and whitespace-insensitive form used to match quotes and finds."""
    return _SPACE_RE.sub(" ", strip_markup(text)).strip().lower()


def truncate(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` at a word boundary, "…" marking the cut (quotes, past
    actions and the quotable sentences the browser lists)."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    if " " in cut[max_chars // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + "…"


def title_line(title: str, url: str) -> str:
    title, d = escape_inline(title), domain(url)
    return f"{title} ({d})" if d else title


def _quote_block(quotes: Sequence[SavedQuote], prefix: str) -> list[str]:
    if not quotes:
        return ["None"]
    out: list[str] = []
    for q in quotes:
        out.append(f"{prefix}[{q.n}] {title_line(q.title, q.url)}")
        out.append(escape_inline(q.extract))
    return out


def render_browse(
    *,
    question: str,
    quotes: Sequence[SavedQuote],
    past_actions: Sequence[str],
    title: str | None,
    lines: Sequence[str],
    cursor: int,
    window_lines: int,
    actions_left: int,
    error: str | None = None,
    max_past_actions: int = 20,
    history_escaped: bool = False,
) -> str:
    """The observation at a browse step. `title` None means no page is open yet.

    `lines` are a rendered page's (escaped, with its link markers); every other argument is
    escaped here, but the question and past actions when `history_escaped`: they are in
    every observation of an episode, so the browser escapes each once, as it arrives."""
    recent = past_actions[-max_past_actions:]
    if not history_escaped:
        question, recent = escape(question), [escape(a) for a in recent]
    out = [f"{SECTION}Question", question, f"{SECTION}Quotes"]
    out += _quote_block(quotes, "From ")
    out.append(f"{SECTION}Past actions")
    if not past_actions:
        out.append("None")
    else:
        hidden = len(past_actions) - max_past_actions
        if hidden > 0:
            out.append(f"({hidden} earlier actions)")
        out.extend(recent)
    if title is not None:
        out += [f"{SECTION}Title", escape_inline(title)]
        if lines:
            last = min(cursor + window_lines, len(lines)) - 1
            out.append(f"{SECTION}Scrollbar: {cursor} - {last} of {len(lines)}")
            out.append(f"{SECTION}Text")
            out.extend(lines[cursor : last + 1])
        else:
            out += [f"{SECTION}Scrollbar: 0 - 0 of 0", f"{SECTION}Text", "(empty page)"]
    if error:
        out += [f"{SECTION}Error", escape(error)]
    out += [f"{SECTION}Actions left: {actions_left}", f"{SECTION}Next action"]
    return "\n".join(out)


def render_passages(question: str, passages: Sequence[tuple[str, str]]) -> str:
    """Numbered passages, then the question, cueing a short answer: the layout of every
    answering prompt (the answer phase, retrieve-then-read, closed-book with no passages).

    `passages` are (label, text) pairs, label like "[1] Tigris". One passage per line."""
    lines = [f"Passage {escape_inline(label)}: {escape_inline(text)}" for label, text in passages]
    return "\n".join([*lines, f"Question: {escape(question)}", "Answer:"])


def render_answer(*, question: str, quotes: Sequence[SavedQuote]) -> str:
    """The observation of the answer phase: the numbered quotes as passages, then the question.

    Not the browse layout: read this way the shipped 270M policy answers from the same quotes
    1.5x as often (bench/README.md, "answer layout"), and a quote's [n] is its citation."""
    return render_passages(question, [(f"[{q.n}] {q.title}", q.extract) for q in quotes])
