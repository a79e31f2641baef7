"""Best-of-n: score every candidate answer with the reward model and keep the best.

The episodes are sampled elsewhere (`webagent.rollout`, batched); this module only ranks
finished `env.record.EpisodeRecord`s, so ask, eval and PPO share one rule. A candidate's final
score is its reward plus `vote_weight` times its agreement, the share of the other candidates
that give the same answer (TriviaQA-normalised, citations removed: self-consistency). The
highest final score wins, the earliest candidate on a tie (so best-of-1 is the plain policy).
Why a vote: a 270M policy's samples that agree are right more often than the reward model can
tell (4 samples at T=0.7 on 300 train questions: the most common answer 39 right, the first
sample 35). The weight belongs to the reward model it was tuned with: its reward.json's
`best_of.vote_weight` (0 when absent: the reward model alone).

Candidate 0 is the greedy episode (`webagent.rollout.best_of_tasks`), right more often than a
sample, so the judge also adds `best_of.greedy_bonus` to its score: the reward margin a sample
needs to displace it. Tuned on held-out train questions, a small reward model's margins do
not earn that (bench/README.md, best-of-n after issue 21's session): with a large bonus and a
larger vote weight the judge becomes "the most common answer; greedy on a tie; the reward
model orders the rest".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from reward.text import Answer


@dataclass(frozen=True)
class Ranked:
    best: int
    """Index of the chosen candidate."""
    scores: list[float]
    """The reward model's score of each candidate."""
    agreement: list[float]
    """Share of the other candidates giving the same answer (0 with one candidate)."""
    final: list[float]
    """scores + vote_weight * agreement (+ greedy_bonus for candidate 0): what the pick is
    made on."""
    vote_weight: float
    greedy_bonus: float = 0.0

    def judged(self, i: int) -> dict:
        """Candidate i's scores as ask's --json and eval's rows keep them."""
        return {"score": self.scores[i], "agreement": self.agreement[i], "final": self.final[i]}


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


def agreement(answers: Sequence[str | None]) -> list[float]:
    """For each answer, the share of the OTHER answers that are the same once normalised
    (citations removed); an answer that normalises to nothing agrees with nothing."""
    keys = [Answer(a or "").normalized for a in answers]
    others = len(keys) - 1
    if others <= 0:
        return [0.0] * len(keys)
    return [0.0 if not k else (keys.count(k) - 1) / others for k in keys]


def check_vote_weight(value, name: str = "vote weight") -> float:
    """A vote weight or greedy bonus (from a flag or a reward model's reward.json: untrusted)
    as a float >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be 0 or more, got {value}")
    return float(value)


def _best_of_meta(scorer) -> dict:
    best_of = (getattr(scorer, "meta", None) or {}).get("best_of") or {}
    if not isinstance(best_of, dict):
        raise ValueError(f"reward model meta: best_of must be an object, got {best_of!r}")
    return best_of


def vote_weight_of(scorer) -> float:
    """The vote weight a reward model was tuned with (its reward.json `best_of.vote_weight`),
    0 when it names none."""
    return check_vote_weight(_best_of_meta(scorer).get("vote_weight", 0.0))


def greedy_bonus_of(scorer) -> float:
    """The greedy candidate's bonus a reward model was tuned with (`best_of.greedy_bonus`),
    0 when it names none."""
    return check_vote_weight(_best_of_meta(scorer).get("greedy_bonus", 0.0), "greedy bonus")


def judge(
    scores: Sequence[float],
    answers: Sequence[str | None],
    vote_weight: float = 0.0,
    greedy_bonus: float = 0.0,
) -> Ranked:
    """The pick from reward-model scores and the candidates' answers (no model needed: how
    `webagent.eval` re-judges recorded candidates, e.g. the first k of n). Candidate 0 is
    the greedy one and gets `greedy_bonus`."""
    if len(scores) != len(answers):
        raise ValueError(f"{len(scores)} scores for {len(answers)} answers")
    weight = check_vote_weight(vote_weight)
    bonus = check_vote_weight(greedy_bonus, "greedy bonus")
    agree = agreement(answers)
    final = [
        float(s) + weight * a + (bonus if i == 0 else 0.0)
        for i, (s, a) in enumerate(zip(scores, agree, strict=True))
    ]
    named = [Answer(a or "").names_something for a in answers]
    return Ranked(pick(final, named), [float(s) for s in scores], agree, final, weight, bonus)


def rank(
    question: str,
    records: Sequence,
    scorer,
    *,
    vote_weight: float | None = None,
    greedy_bonus: float | None = None,
) -> Ranked:
    """Score each record's answer (with its quotes) and pick the best; `vote_weight` and
    `greedy_bonus` None: the reward model's own (`vote_weight_of`, `greedy_bonus_of`); `judge`
    checks them."""
    weight = vote_weight_of(scorer) if vote_weight is None else vote_weight
    bonus = greedy_bonus_of(scorer) if greedy_bonus is None else greedy_bonus
    answers = [Answer.from_record(r) for r in records]
    scores = scorer.score(question, answers)
    return judge(scores, [a.text for a in answers], weight, bonus)
