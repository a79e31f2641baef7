"""Question sets with gold answers, in the three layouts people have: detected, not declared.

- ours (as in ../shared/data/triviaqa): JSON lines `{"question_id","question","answer":{"value","aliases"}}`
- the official TriviaQA release: one JSON `{"Data":[{"Question","QuestionId","Answer":{"Value","Aliases","NormalizedAliases"}}]}`
- NQ-open: JSON lines `{"question","answer":[...]}`
A malformed row is a `DatasetError` naming its line; nothing is silently skipped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


class DatasetError(ValueError):
    """The file is not a question set we can read; the message names the file and line."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str
    """The canonical answer (first alias for NQ-open)."""
    aliases: tuple[str, ...]
    """Every accepted answer, the canonical one included."""


def _qid(question: str) -> str:
    return "q_" + hashlib.sha256(question.encode("utf-8")).hexdigest()[:10]


def _aliases(value: str, aliases) -> tuple[str, ...]:
    out = [value, *(aliases or [])]
    return tuple(dict.fromkeys(str(a) for a in out if str(a).strip()))


def _row(obj: dict, where: str, require_answer: bool = True) -> Question:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object")
    question = obj.get("question", obj.get("Question"))
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: no question text")
    answer = obj.get("answer", obj.get("Answer"))
    if isinstance(answer, dict):  # ours or official TriviaQA
        value = answer.get("value", answer.get("Value"))
        aliases = answer.get("aliases", answer.get("Aliases", []))
        if not isinstance(value, str) or not isinstance(aliases, list):
            raise DatasetError(f"{where}: answer needs a 'value' string and an 'aliases' list")
        qid = obj.get("question_id", obj.get("QuestionId")) or _qid(question)
        return Question(str(qid), question.strip(), value, _aliases(value, aliases))
    if isinstance(answer, list) and answer and all(isinstance(a, str) for a in answer):  # NQ-open
        qid = obj.get("question_id") or obj.get("id") or _qid(question)
        return Question(str(qid), question.strip(), answer[0], _aliases(answer[0], answer[1:]))
    if answer is None and not require_answer:  # questions to train on with a reward model
        qid = obj.get("question_id") or obj.get("id") or _qid(question)
        return Question(str(qid), question.strip(), "", ())
    raise DatasetError(f"{where}: answer must be {{'value','aliases'}} or a list of strings")


def load_questions(path: str | Path, *, require_answers: bool = True) -> list[Question]:
    """Read any of the three layouts; ids are unique (duplicates are an error).

    `require_answers=False` also accepts rows with no answer (PPO against a reward model, or
    comparisons a person labels, need none); such a question has no aliases."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    questions: list[Question] = []
    if stripped.startswith("{") and '"Data"' in stripped[:2000]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(data.get("Data"), list):
            raise DatasetError(f"{path}: 'Data' must be a list")
        questions = [
            _row(row, f"{path}: Data[{i}]", require_answers) for i, row in enumerate(data["Data"])
        ]
    else:
        for n, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is text
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            questions.append(_row(obj, f"{path}:{n}", require_answers))
    if not questions:
        raise DatasetError(f"{path}: no questions")
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise DatasetError(f"{path}: question id {q.id!r} appears twice")
        seen.add(q.id)
    return questions
