"""The one canonical text a reward model reads: question, numbered quotes, answer.

Training (`reward.train_rm`), best-of-n and PPO all score `reward_text(...)`, so a reward model
always sees answers laid out the way it was trained on. Quotes are cut to `max_quote_chars`
each (the answer is never cut) so long quotes cannot push the answer out of the model's window.
Answers are compared as TriviaQA compares them (`normalize_answer`): here, because both the
metrics (`webagent.metrics`) and best-of-n's vote (`reward.best_of_n`) need the same rule.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from env.citations import CITATION

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation + "‘’´`")


def normalize_answer(text: str | None) -> str:
    """TriviaQA's official answer normalisation (triviaqa_evaluation.normalize_answer).

    Plus Unicode NFC first, so a composed and a decomposed "é" compare equal.
    """
    text = unicodedata.normalize("NFC", text or "")
    text = text.replace("_", " ").lower()
    text = "".join(ch if ch not in _PUNCT else " " for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


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

    @property
    def normalized(self) -> str:
        """The answer as TriviaQA compares it, citations removed ("" if it names nothing)."""
        return normalize_answer(CITATION.sub("", self.text))

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
