"""Answer metrics, TriviaQA's way: the official normalisation, then max over the aliases.

Answers are scored with their citation markers removed (`The Tigris [1]` -> `The Tigris`).
`supported` and `citation_valid` are what matter for a browsing agent: an answer that names the
truth but cites nothing (or cites a quote that does not say it) is not evidence-backed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from reward.text import normalize_answer
from webagent.answers import cited, strip_citations


def exact_match(prediction: str | None, aliases: Sequence[str]) -> float:
    p = normalize_answer(strip_citations(prediction))
    return float(bool(p) and any(p == normalize_answer(a) for a in aliases))


def f1(prediction: str | None, aliases: Sequence[str]) -> float:
    """Token F1 against the best alias."""
    pred = normalize_answer(strip_citations(prediction)).split()
    best = 0.0
    for alias in aliases:
        gold = normalize_answer(alias).split()
        common = Counter(pred) & Counter(gold)
        same = sum(common.values())
        if same:
            precision, recall = same / len(pred), same / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def holds_alias(text: str | None, aliases: Sequence[str]) -> bool:
    """An alias appears in the text as whole words, both answer-normalised: the one test of
    "does this text hold the answer" (metrics here, the expert's choices in `demos`)."""
    t = f" {normalize_answer(text)} "
    return any(f" {a} " in t for a in map(normalize_answer, aliases) if a)


def contains(prediction: str | None, aliases: Sequence[str]) -> float:
    """An alias appears (as whole words) in the answer."""
    return float(holds_alias(strip_citations(prediction), aliases))


def citation_valid(prediction: str | None, n_quotes: int) -> float:
    """The answer cites at least one quote, and every [n] it cites exists."""
    numbers = cited(prediction)
    return float(bool(numbers) and all(1 <= n <= n_quotes for n in numbers))


def supported(prediction: str | None, aliases: Sequence[str], quotes: Sequence[str]) -> float:
    """An alias the answer names also appears in a quote the answer cites."""
    numbers = [n for n in cited(prediction) if 1 <= n <= len(quotes)]
    named = [a for a in aliases if holds_alias(strip_citations(prediction), [a])]
    return float(any(holds_alias(quotes[n - 1], named) for n in numbers))


def any_alias_in(texts: Sequence[str], aliases: Sequence[str]) -> bool:
    """An alias appears in any of the texts (coverage: did the agent ever see the answer?)."""
    return any(holds_alias(t, aliases) for t in texts)
