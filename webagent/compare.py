"""Comparisons from the policy: sample K episodes per question and pair their answers.

    webagent compare ../shared/data/triviaqa/train.jsonl --samples 4 --out runs/rm/comparisons.jsonl

Every pair of distinct answers to a question becomes one `reward.comparisons.Comparison`.
With `--judge gold` (TriviaQA-style data with answer aliases) the pair is labeled at once:
correct and supported by its own quotes beats correct but unsupported beats wrong; equal
ranks tie (0.5). With `--judge none` the file waits for a person (`webagent label FILE`).
The episodes themselves are kept beside the file (`*.episodes.jsonl`), and a rerun skips
questions already done.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from env.record import EpisodeRecord, append_jsonl, read_jsonl
from reward.comparisons import Comparison
from reward.text import Answer
from webagent.datasets import Question
from webagent.metrics import exact_match, supported


def gold_rank(record: EpisodeRecord, aliases: Sequence[str]) -> int:
    """2: right and supported by a cited quote; 1: right but unsupported; 0: wrong or none."""
    if not record.answer or not exact_match(record.answer, aliases):
        return 0
    return 2 if supported(record.answer, aliases, [q.extract for q in record.quotes]) else 1


def gold_preference(rank_0: int, rank_1: int) -> float:
    return 1.0 if rank_0 > rank_1 else 0.0 if rank_0 < rank_1 else 0.5


def pairs(
    question: Question, records: Sequence[EpisodeRecord], *, judge: str = "gold"
) -> list[Comparison]:
    """All pairs of episodes whose answers (text and quotes) differ."""
    out = []
    for a, b in itertools.combinations(records, 2):
        ans_a, ans_b = Answer.from_record(a), Answer.from_record(b)
        if ans_a == ans_b:
            continue
        pref, labeler = None, None
        if judge == "gold" and question.aliases:
            pref, labeler = (
                gold_preference(gold_rank(a, question.aliases), gold_rank(b, question.aliases)),
                "gold",
            )
        out.append(Comparison(question.question, ans_a, ans_b, pref, labeler,
                              meta={"question_id": question.id, "episodes": [a.id, b.id]}))  # fmt: skip
    return out


def episodes_path(out: str | Path) -> Path:
    return Path(str(out).replace(".jsonl", "") + ".episodes.jsonl")


def done_questions(out: str | Path) -> set[str]:
    """Questions whose K episodes were all recorded (the episodes file is written first)."""
    path = episodes_path(out)
    if not path.exists():
        return set()
    return {r.get("meta", {}).get("question_id") for r in read_jsonl(path)}


def record_question(
    out: str | Path, question: Question, records: list[EpisodeRecord], judge: str
) -> int:
    """Append one question's episodes, then its comparisons; returns the number of comparisons."""
    append_jsonl(episodes_path(out), records)
    comps = pairs(question, records, judge=judge)
    append_jsonl(out, [c.to_dict() for c in comps])
    return len(comps)
