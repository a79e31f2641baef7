"""Comparisons: a question, two answers with their quotes, and a preference in [0, 1].

`preference` is the probability that answer 0 is the better one: 1.0 answer 0, 0.0 answer 1,
0.5 a tie; None while unlabeled. Stored as JSON lines (one comparison per line). Converters:
- `to_trl`: TRL's implicit-prompt preference rows {"chosen","rejected"} (texts laid out by
  `reward.text`), ties dropped since that format cannot say "equal";
- `from_webgpt`: the public `openai/webgpt_comparisons` layout (question.full_text,
  quotes_0/1 as {title: [...], extract: [...]}, answer_0/1, score_0/1 in [-1, 1]).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from env.record import append_jsonl, read_jsonl
from reward.text import Answer, Quote, reward_text


class ComparisonError(ValueError):
    """A comparison line that cannot be read (the message names file and line)."""


@dataclass
class Comparison:
    question: str
    answer_0: Answer
    answer_1: Answer
    preference: float | None = None
    """P(answer 0 is better): 1, 0, 0.5 for a tie; None until labeled."""
    labeler: str | None = None
    """Who set the preference: gold | human | webgpt | …"""
    id: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preference is not None and not 0.0 <= float(self.preference) <= 1.0:
            raise ComparisonError(f"preference must be in [0, 1], got {self.preference}")
        if not self.id:
            key = json.dumps([self.question, self.answer_0.to_dict(), self.answer_1.to_dict()])
            self.id = hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def is_tie(self) -> bool:
        return self.preference == 0.5

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "question": self.question,
            "answer_0": self.answer_0.to_dict(),
            "answer_1": self.answer_1.to_dict(),
            "preference": self.preference,
            "labeler": self.labeler,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Comparison:
        try:
            return cls(
                question=str(data["question"]),
                answer_0=Answer.from_dict(data["answer_0"]),
                answer_1=Answer.from_dict(data["answer_1"]),
                preference=None if data.get("preference") is None else float(data["preference"]),
                labeler=data.get("labeler"),
                id=str(data.get("id") or ""),
                meta=dict(data.get("meta") or {}),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ComparisonError(f"not a comparison: {exc!r}") from exc


def read_comparisons(path: str | Path) -> list[Comparison]:
    out = []
    for line_no, obj in enumerate(read_jsonl(path), start=1):
        try:
            out.append(Comparison.from_dict(obj))
        except ComparisonError as exc:
            raise ComparisonError(f"{path}: record {line_no}: {exc}") from None
    return out


def write_comparisons(path: str | Path, comparisons: Iterable[Comparison]) -> None:
    append_jsonl(path, [c.to_dict() for c in comparisons])


def to_trl(c: Comparison) -> dict | None:
    """{"chosen","rejected"} texts (implicit prompt: the question is inside both), plus a
    `margin` = |2p - 1|; None for ties and unlabeled comparisons."""
    if c.preference is None or c.is_tie:
        return None
    better, worse = (c.answer_0, c.answer_1) if c.preference > 0.5 else (c.answer_1, c.answer_0)
    return {
        "chosen": reward_text(c.question, better),
        "rejected": reward_text(c.question, worse),
        "margin": abs(2 * c.preference - 1),
    }


def _webgpt_quotes(quotes: dict | None) -> tuple[Quote, ...]:
    quotes = quotes or {}
    titles, extracts = quotes.get("title") or [], quotes.get("extract") or []
    return tuple(Quote(str(t or ""), str(e or "")) for t, e in zip(titles, extracts, strict=False))


def from_webgpt(row: dict) -> Comparison:
    """One `webgpt_comparisons` row. Its scores are in [-1, 1] and opposite (score_1 = -score_0);
    the preference for answer 0 is 0.5 + (score_0 - score_1) / 4."""
    try:
        question = row["question"]["full_text"]
        s0, s1 = float(row["score_0"]), float(row["score_1"])
        answers = [
            Answer(str(row[f"answer_{i}"] or ""), _webgpt_quotes(row.get(f"quotes_{i}")))
            for i in (0, 1)
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ComparisonError(f"not a webgpt_comparisons row: {exc!r}") from exc
    pref = min(1.0, max(0.0, 0.5 + (s0 - s1) / 4))
    meta = {"dataset": row["question"].get("dataset")}
    return Comparison(question, answers[0], answers[1], pref, "webgpt", meta=meta)


def read_webgpt(path: str | Path) -> Iterator[Comparison]:
    """Rows of a webgpt_comparisons export: JSON lines (optionally .gz) or one JSON list."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        head = f.read(1)
        f.seek(0)
        rows = json.load(f) if head == "[" else (json.loads(line) for line in f if line.strip())
        for i, row in enumerate(rows, start=1):
            try:
                yield from_webgpt(row)
            except ComparisonError as exc:
                raise ComparisonError(f"{path}: row {i}: {exc}") from None
