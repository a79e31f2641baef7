"""Every size, time and count limit of the environment, in one place, with units in the names.

A model chooses what the browser fetches and quotes, so each limit here bounds what one bad
choice can cost: memory (bytes), wall time (seconds) or context length (characters, lines).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


class LimitError(ValueError):
    """A limit that is not a whole number >= its minimum. `field` names it and `problem` says
    what is wrong, so each caller names it as its user knows it (`--max-actions`, a record's
    `meta.env.limits.max_actions`) without rewriting the message."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem

    def __reduce__(self):
        # pickle rebuilds an exception from `args` (the one message), not from our two fields
        return type(self), (self.field, self.problem)


def _check_counts(limits: object, minimum: int = 1) -> None:
    """LimitError naming the field when a count is not a whole number >= `minimum`.

    A budget of 0 or -1 actions is not a budget: refused here, once, for the Python API and
    for every flag and stored record that becomes one of these limits."""
    for f in fields(limits):  # type: ignore[arg-type]
        value = getattr(limits, f.name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise LimitError(f.name, f"must be a whole number, got {value!r}")
        if value < minimum:
            raise LimitError(f.name, f"must be at least {minimum}, got {value}")


@dataclass(frozen=True)
class FetchLimits:
    """Caps on one live fetch."""

    max_bytes: int = 5_000_000
    """Bodies larger than this are refused (PageTooLarge), whatever Content-Length claims."""
    connect_timeout_seconds: float = 5.0
    """Time to open a TCP/TLS connection."""
    read_timeout_seconds: float = 10.0
    """Time between two received chunks."""
    total_timeout_seconds: float = 20.0
    """Wall time for the whole fetch, redirects included (a slow-drip server cannot stall us)."""
    max_redirects: int = 5
    """Redirect hops followed before giving up (loops end here)."""


@dataclass(frozen=True)
class RenderLimits:
    """Caps on turning bytes into a page."""

    max_html_bytes: int = 3_000_000
    """Bytes of markup parsed; the rest is dropped (a note says the page was cut)."""
    max_lines: int = 2_000
    """Rendered lines kept per page."""
    max_links: int = 1_000
    """Links numbered per page; later anchors render as plain text."""
    line_width_chars: int = 100
    """Wrap width of rendered text lines (link markers are never split)."""
    max_pdf_pages: int = 30
    """PDF pages turned into text."""


@dataclass(frozen=True)
class BrowseLimits:
    """Caps on one browsing episode."""

    max_actions: int = 100
    """Actions (valid or not) before browsing stops: WebGPT's budget."""
    window_lines: int = 10
    """Page lines shown per observation; a scroll moves by this many lines times n."""
    max_quote_chars: int = 500
    """Longer quotes are cut at a word boundary to this length."""
    max_total_quote_chars: int = 3_000
    """Reaching this total of quoted characters ends browsing (the answer phase starts)."""
    max_past_actions_shown: int = 20
    """Most recent actions listed in the observation; older ones are summarised as a count."""
    max_query_chars: int = 300
    """Longest search query accepted."""

    def __post_init__(self) -> None:
        _check_counts(self)


@dataclass(frozen=True)
class QuestionLimits:
    """What a question may be: it is pasted into every observation and every prompt."""

    max_chars: int = 1_000
    """Longest question accepted (~250 tokens in each step's prompt; TriviaQA's longest has 324
    characters). A pasted 100 KB question cost 22k tokens a step and 4.9 GB of memory."""

    def __post_init__(self) -> None:
        _check_counts(self)
