"""Question sets with gold answers, in the three layouts people have: detected, not declared.

- ours (as in ../shared/data/triviaqa): JSON lines `{"question_id","question","answer":{"value","aliases"}}`
- the official TriviaQA release: one JSON `{"Data":[{"Question","QuestionId","Answer":{"Value","Aliases","NormalizedAliases"}}]}`
- NQ-open: JSON lines `{"question","answer":[...]}`
A malformed row (no question text, no answer) is a `DatasetError` naming its line. A row whose
question text cannot be asked (`env.questions.check_question`: too long, control characters) is
skipped, and
the skips are counted in one warning naming their lines: such rows are data someone else wrote
(TriviaQA's own train split has three questions with cp1252 control bytes), and a user running
over thousands of questions expects the run to go on and say what it left out, not to stop.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from env.questions import QuestionError, check_question

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """The file is not a question set we can read; the message names the file and line."""


class _Unaskable(DatasetError):
    """A well-formed row whose question `check_question` refuses (skipped, and counted)."""


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
    try:
        check_question(question.strip())
    except QuestionError as exc:
        raise _Unaskable(f"{where}: {exc}") from None
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
    rows: list[tuple[object, str]] = []
    if stripped.startswith("{") and '"Data"' in stripped[:2000]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(data.get("Data"), list):
            raise DatasetError(f"{path}: 'Data' must be a list")
        rows = [(row, f"{path}: Data[{i}]") for i, row in enumerate(data["Data"])]
    else:
        for n, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is text
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            rows.append((obj, f"{path}:{n}"))
    questions: list[Question] = []
    skipped: list[str] = []
    for obj, where in rows:
        try:
            questions.append(_row(obj, where, require_answers))
        except _Unaskable as exc:
            skipped.append(str(exc))
    if skipped:
        log.warning(
            "%s: skipped %d question(s) that cannot be asked: %s%s",
            path,
            len(skipped),
            "; ".join(skipped[:3]),
            " …" if len(skipped) > 3 else "",
        )
    if not questions:
        raise DatasetError(
            f"{path}: no questions" + (f" ({len(skipped)} skipped)" if skipped else "")
        )
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise DatasetError(f"{path}: question id {q.id!r} appears twice")
        seen.add(q.id)
    return questions
