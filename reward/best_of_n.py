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


def pick(scores: Sequence[float]) -> int:
    """Index of the highest score (the first one on ties)."""
    if not scores:
        raise ValueError("no candidates to pick from")
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def rank(question: str, records: Sequence, scorer) -> Ranked:
    """Score each record's answer (with its quotes) and pick the best."""
    scores = scorer.score(question, [Answer.from_record(r) for r in records])
    return Ranked(pick(scores), list(scores))
