"""Truthful citations: an answer keeps `[n]` only where quote n supports it.

The check runs when the answer is given (`EpisodeRecord.finish_answer`, called by `BrowserEnv`'s
answer step and by `webagent.rollout.reanswer` for answer-only episodes), so ask, the REPL, eval, best-of-n and PPO all see the same answer, and
replay reproduces it from what the record already holds: the answer step's action (the answer
as written, also `EpisodeRecord.raw_answer`), the quotes and the question. It knows no gold
answer: it is part of the agent's run, not of scoring (`webagent.metrics.supported` is the gold
check).

Rule: quote n supports an answer when every content word of the answer that is not already a
word of the question is a word of the quote; an answer made only of the question's words needs
all its content words in the quote. Words are Unicode letters/digits, case- and accent-folded;
articles and a few function words do not count. Why words rather than the answer as one
phrase: a free answer adds the question's own words or reorders ("The Tigris river" for "Which
river flows through Baghdad?", quote "…on the banks of the Tigris") and is still what the quote
says; an extractive answer (a span of the quote, as under the decoding aid) passes either way.
What words cannot see (a quote naming the same words in another relation) the gold
`supported` still counts against citation precision.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from env.observation import SavedQuote

CITATION = re.compile(r"\[(\d+)\]")
"""How an answer cites its quotes: `[n]`, numbered from 1 (webagent.answers reads them)."""

_WORD = re.compile(r"[^\W_]+")
# Words an answer needs no support for (a short list: "who" or "name" can be an answer's
# content). Not the index's `search.STOPWORDS_EN` nor `queries.QUESTION_WORDS`.
FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "and",
        "or",
        "in",
        "on",
        "at",
        "to",
        "by",
        "for",
        "is",
        "was",
        "are",
        "were",
        "it",
    ]
)
_MARKER = re.compile(r"\s*\[(\d+)\]")


def _words(text: str) -> list[str]:
    """Case- and accent-folded words ("Pelé" and "Pele" are one word)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _WORD.findall(plain)


def supports(answer: str, extract: str, question: str = "") -> bool:
    """Whether a quote's extract supports the answer (citation markers are ignored)."""
    content = [w for w in _words(CITATION.sub(" ", answer)) if w not in FUNCTION_WORDS]
    asked = set(_words(question))
    need = [w for w in content if w not in asked] or content
    return bool(need) and set(need) <= set(_words(extract))


@dataclass(frozen=True)
class CitationCheck:
    """An answer after the check: what it keeps and what it dropped."""

    answer: str
    """The answer with every `[n]` that does not support it removed."""
    kept: tuple[int, ...]
    """Quote numbers still cited (each supports the answer)."""
    removed: tuple[int, ...]
    """Quote numbers the answer cited that do not support it (or do not exist)."""

    @property
    def supported_by_quotes(self) -> bool:
        """The answer cites at least one quote that supports it; False: it is from memory."""
        return bool(self.kept)


def check(answer: str, quotes: Sequence[SavedQuote], question: str = "") -> CitationCheck:
    """Drop the citations of `answer` whose quote does not support it."""
    by_n = {q.n: q for q in quotes}
    kept: dict[int, None] = {}
    removed: dict[int, None] = {}
    for m in CITATION.finditer(answer):
        n = int(m.group(1))
        ok = n in by_n and supports(answer, by_n[n].extract, question)
        (kept if ok else removed).setdefault(n)

    def keep(m: re.Match) -> str:
        return m.group(0) if int(m.group(1)) in kept else ""

    text = _MARKER.sub(keep, answer).strip() if removed else answer.strip()
    return CitationCheck(text, tuple(kept), tuple(removed))
