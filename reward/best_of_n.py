"""Best-of-n: score every candidate answer with the reward model and keep the best.

The episodes are sampled elsewhere (`webagent.rollout`, batched); this module only ranks
finished `env.record.EpisodeRecord`s, so ask, eval and PPO share one rule: the highest reward
wins, the earliest candidate on a tie (so best-of-1 is the plain policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reward.text import Answer


@dataclass(frozen=True)
class Ranked:
    best: int
    """Index of the chosen candidate."""
    scores: list[float]


def pick(scores: Sequence[float], named: Sequence[bool] | None = None) -> int:
    """Index of the highest score (the first one on ties) among the candidates that name an
    answer (`named`); a reward model may score an empty or citation-only answer highly, but
    it is never the best answer while another candidate says something."""
    if not scores:
        raise ValueError("no candidates to pick from")
    named = [True] * len(scores) if named is None else list(named)
    if len(named) != len(scores):
        raise ValueError(f"{len(named)} named flags for {len(scores)} scores")
    return max(range(len(scores)), key=lambda i: (named[i] or not any(named), scores[i], -i))


def rank(question: str, records: Sequence, scorer) -> Ranked:
    """Score each record's answer (with its quotes) and pick the best."""
    answers = [Answer.from_record(r) for r in records]
    scores = scorer.score(question, answers)
    return Ranked(pick(scores, [a.names_something for a in answers]), list(scores))
