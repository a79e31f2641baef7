"""The episode record: what one question's browsing and answering left behind, as JSON lines.

Everything downstream (eval, best-of-n, reward model, BC, PPO, replay) reads records; nothing
re-derives what a record holds. The environment fills the browser fields; the episode runner
adds the policy fields (prompt, token ids, log-probabilities, seconds) on the same steps.
Pages are not stored here: `page_id` points into the content-addressed page cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from env import citations
from env.config import config_from_dict
from env.fields import RecordError, shown, typed_fields
from env.observation import SavedQuote

__all__ = ["RecordError", "typed_fields"]  # and everything defined below

RECORD_VERSION = 1

WROTE_NO_ANSWER = "the policy wrote no answer"
"""`meta["no_answer"]` of an episode that quoted but whose answer step left no answer (nothing
written, or only citations its quotes do not support)."""
NO_QUOTES = "browsing collected no quotes"
"""`meta["no_answer"]` of an episode that reached the answer phase with nothing quoted (the
episode runner then answers nothing without asking the model)."""


@dataclass
class Step:
    """One action: the observation it was taken in, what was written, and what it did."""

    observation: str
    action: str
    phase: str = "browse"
    """'browse' for commands, 'answer' for the final answer text."""
    command: dict | None = None
    """The parsed command (`env.commands.to_dict`), None for invalid actions and answers."""
    error: str | None = None
    """Why the action failed (invalid command, missing link, page error), else None."""
    page_id: str | None = None
    """Content address of the page open after the action (see env.cache.PageCache)."""
    request: str | None = None
    """What was fetched when this step opened a new page: 'search:<query>' or the URL."""
    # --- filled by the policy's episode runner
    prompt: str | None = None
    completion: str | None = None
    """The exact generated text (before cutting at the first newline); action is what was kept."""
    prompt_tokens: int | None = None
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    """Sampling log-probabilities of `token_ids` under the policy that acted (for PPO)."""
    seconds: float | None = None

    @property
    def tokens(self) -> int | None:
        return None if self.token_ids is None else len(self.token_ids)


@dataclass
class EpisodeRecord:
    id: str
    question: str
    source: str
    steps: list[Step] = field(default_factory=list)
    quotes: list[SavedQuote] = field(default_factory=list)
    answer: str | None = None
    """The final answer: as written, minus every `[n]` whose quote does not support it
    (`env.citations.check`)."""
    raw_answer: str | None = None
    """The answer as the agent gave it (the answer step's action), before the citation check
    (nothing is lost; a policy's own completion stays in the step)."""
    supported_by_quotes: bool | None = None
    """The answer cites a quote that supports it; False: answered from memory (None: no answer
    step, or a record older than the check)."""
    end: str | None = None
    """Why browsing stopped: answer | nonsense | controversial | budget | quote_limit."""
    model: str | None = None
    seed: int | None = None
    meta: dict = field(default_factory=dict)
    """Free-form: question_id, gold answers, settings. Consumers must not require keys here."""
    version: int = RECORD_VERSION

    def finish_answer(self, written: str, quotes: Sequence[SavedQuote]) -> None:
        """Set the answer fields from the answer as written: the one place an answer is
        finalized (the browser's answer step and `webagent.rollout.reanswer` both call it). The
        answer keeps only the `[n]` its quotes support (`env.citations.check`); one that comes out
        empty is no answer: `answer` and `supported_by_quotes` are None and `meta["no_answer"]`
        says why, as for any episode without an answer. `raw_answer` keeps what was written."""
        finished = citations.check(written, quotes, self.question)
        self.raw_answer = written.strip()
        self.answer = finished.answer or None
        self.supported_by_quotes = finished.supported_by_quotes if self.answer else None
        self.meta.pop("no_answer", None)
        if self.answer is None:
            self.meta["no_answer"] = WROTE_NO_ANSWER if quotes else NO_QUOTES

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EpisodeRecord:
        """A record from its JSON form, every field checked against its type (and the stored
        environment settings against `EnvConfig`): RecordError names the field."""
        body = typed_fields(cls, data, required=("id", "question", "source"))
        body["steps"] = [
            Step(**typed_fields(Step, s, f"steps[{i}]", required=("observation", "action")))
            for i, s in enumerate(body.get("steps", []))
        ]
        body["quotes"] = [
            SavedQuote(
                **typed_fields(
                    SavedQuote, q, f"quotes[{i}]", required=("n", "title", "url", "extract")
                )
            )
            for i, q in enumerate(body.get("quotes", []))
        ]
        if "env" in body.get("meta", {}):
            if not isinstance(body["meta"]["env"], dict):
                raise RecordError(f"meta.env: expected an object, got {shown(body['meta']['env'])}")
            try:
                config_from_dict(body["meta"]["env"], strict=False)
            except ValueError as exc:
                raise RecordError(f"meta.env.{exc}") from None
        return cls(**body)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @property
    def answer_step(self) -> Step | None:
        """The step that gave the answer (the last of the answer phase); None when there is none."""
        return next((s for s in reversed(self.steps) if s.phase == "answer"), None)

    @property
    def page_ids(self) -> list[str]:
        """Every page the episode showed, in order, without repeats."""
        seen: dict[str, None] = {}
        for step in self.steps:
            if step.page_id:
                seen.setdefault(step.page_id)
        return list(seen)


def check_writable(path: str | Path) -> Path:
    """RecordError unless `append_jsonl` can write `path`: long jobs check their output file
    before they start, so a result is not lost at the end for want of a place to put it."""
    path = Path(path)
    if path.is_dir():
        raise RecordError(f"{path} is a directory: give a file to append records to")
    parent = path.parent
    while not parent.exists():  # append_jsonl creates the missing directories
        parent = parent.parent
    if not parent.is_dir():
        raise RecordError(f"{path}: {parent} is not a directory")
    if path.exists():
        try:
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise RecordError(f"{path}: cannot write to it ({exc.strerror})") from None
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise RecordError(f"{path}: cannot create files in {parent}")
    return path


def append_jsonl(path: str | Path, records: Iterable[EpisodeRecord | dict]) -> None:
    """Append records in one write, fsynced: a kill leaves them all, none, or (if the write
    itself is cut) a partial last line, never some whole records without the rest.

    A partial last line (from a crash) is terminated first so the next record starts on a line
    of its own; `read_jsonl(..., skip_partial_tail=True)` then ignores the broken one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(fd, b"\n")
        lines = [
            rec.to_json() if isinstance(rec, EpisodeRecord) else json.dumps(rec, ensure_ascii=False)
            for rec in records
        ]
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        while data:  # os.write may write less than asked (e.g. a signal mid-write)
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path, *, skip_partial_tail: bool = True) -> Iterator[dict]:
    """JSON objects of a .jsonl file; RecordError names the line of any corrupt entry."""
    for _, obj in numbered_lines(path, skip_partial_tail=skip_partial_tail):
        yield obj


def numbered_lines(
    path: str | Path, *, skip_partial_tail: bool = True
) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for each line of a .jsonl file.

    With `skip_partial_tail`, lines that are not valid JSON *and* do not end in a newline
    (a write cut by a crash) are skipped rather than fatal, as are lines a later append
    terminated early; any other corrupt line is an error.
    """
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file")
    with open(path, "rb") as f:
        raw_lines = f.read().split(b"\n")
    last = len(raw_lines) - 1
    for i, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            truncated = i - 1 == last or not raw.rstrip().endswith(b"}")
            if skip_partial_tail and truncated:
                continue
            raise RecordError(
                f"{path}:{i}: corrupt line ({exc.msg if hasattr(exc, 'msg') else exc})"
            ) from exc
        if not isinstance(obj, dict):
            raise RecordError(f"{path}:{i}: expected a JSON object")
        yield i, obj


def read_records(path: str | Path, *, skip_partial_tail: bool = True) -> Iterator[EpisodeRecord]:
    """Episode records of a .jsonl file (RecordError with the line number on bad ones)."""
    for i, obj in numbered_lines(path, skip_partial_tail=skip_partial_tail):
        try:
            yield EpisodeRecord.from_dict(obj)
        except RecordError as exc:
            raise RecordError(f"{path}:{i}: {exc}") from exc
