"""The one canonical text a reward model reads: question, numbered quotes, answer.

Training (`reward.train_rm`), best-of-n and PPO all score `reward_text(...)`, so a reward model
always sees answers laid out the way it was trained on. Quotes are cut to `max_quote_chars`
each (the answer is never cut) so long quotes cannot push the answer out of the model's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from env.citations import CITATION


@dataclass(frozen=True)
class Quote:
    """A quote an answer rests on (WebGPT: a page title and an extract)."""

    title: str
    extract: str
    url: str = ""


@dataclass(frozen=True)
class Answer:
    """One answer to judge: its text (citing quotes as [n]) and the quotes, numbered from 1."""

    text: str
    quotes: tuple[Quote, ...] = ()

    @classmethod
    def from_record(cls, record) -> Answer:
        """From an `env.record.EpisodeRecord` (no answer counts as the empty answer)."""
        quotes = tuple(Quote(q.title, q.extract, q.url) for q in record.quotes)
        return cls(record.answer or "", quotes)

    @property
    def names_something(self) -> bool:
        """The answer has words besides its citations (`[1]` alone or nothing answers nothing)."""
        return any(ch.isalnum() for ch in CITATION.sub("", self.text))

    def to_dict(self) -> dict:
        return {"text": self.text, "quotes": [vars(q) for q in self.quotes]}

    @classmethod
    def from_dict(cls, data: dict) -> Answer:
        return cls(str(data.get("text") or ""), tuple(Quote(**q) for q in data.get("quotes", [])))


MAX_QUOTE_CHARS = 600


def clip(extract: str, max_chars: int = MAX_QUOTE_CHARS) -> str:
    """A quote on one line, cut to max_chars (what both a reward model and a labeler see)."""
    extract = " ".join(extract.split())
    return extract if len(extract) <= max_chars else extract[: max_chars - 1] + "…"


def reward_text(question: str, answer: Answer, *, max_quote_chars: int = MAX_QUOTE_CHARS) -> str:
    """Question, quotes, answer: the layout every reward model in webagent is trained on."""
    lines = [f"Question: {question.strip()}", "Quotes:"]
    if not answer.quotes:
        lines.append("(none)")
    for n, q in enumerate(answer.quotes, start=1):
        lines.append(f"[{n}] {q.title.strip()}: {clip(q.extract, max_quote_chars)}")
    lines.append(f"Answer: {answer.text.strip() or '(no answer)'}")
    return "\n".join(lines)


def texts(question: str, answers: Sequence[Answer], **kw) -> list[str]:
    return [reward_text(question, a, **kw) for a in answers]
