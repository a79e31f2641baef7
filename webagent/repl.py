"""`webagent repl`: ask question after question; or drive the browser yourself.

Lines are edited and remembered with readline (history in the cache dir). Typing a question
runs the agent; `:drive` lets a person type the browser commands, and the recorded episode is
a human demonstration; `:why` shows the last episode step by step; `:save FILE` appends it to
a JSON-lines file. The model is loaded on the first question, so driving needs none.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from env.browser import BrowserEnv
from env.paths import cache_root
from env.questions import QuestionError, check_question
from env.record import EpisodeRecord, RecordError, append_jsonl, check_writable
from webagent.answers import describe_step, format_answer

HELP = """Type a question to let the agent browse and answer it. Commands:
  :drive        browse yourself (type commands like `Search …`, `Quote: …`, `End: Answer`)
  :why          show the last episode step by step, with what each step saw
  :save FILE    append the last episode to FILE (JSON lines)
  :help         this text
  :quit         leave (or Ctrl-D)"""


def _enable_line_editing(history: Path) -> None:
    try:
        import readline
    except ImportError:  # pragma: no cover - readline is missing on some platforms
        return
    try:
        history.parent.mkdir(parents=True, exist_ok=True)
        if history.exists():
            readline.read_history_file(history)
        readline.set_history_length(1000)
        import atexit

        atexit.register(readline.write_history_file, history)
    except OSError:
        pass


class Repl:
    def __init__(
        self,
        make_env: Callable[[], BrowserEnv],
        ask: Callable[[str, Callable[[EpisodeRecord], None]], EpisodeRecord],
        *,
        input_fn: Callable[[str], str] = input,
        out: TextIO = sys.stdout,
    ):
        """`ask(question, on_step)` runs the agent on one question and returns its record."""
        self.make_env = make_env
        self.ask = ask
        self.input = input_fn
        self.out = out
        self.last: EpisodeRecord | None = None

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def run(self) -> None:
        _enable_line_editing(cache_root() / "repl_history")
        self.say("webagent repl — type a question, or :help")
        while True:
            try:
                line = self.input("? ").strip()
            except EOFError:
                self.say()
                return
            except KeyboardInterrupt:
                self.say()
                continue
            except UnicodeDecodeError:
                self.say("that line is not valid UTF-8 text: check your terminal's encoding")
                continue
            if not line:
                continue
            if line in {":quit", ":q", ":exit"}:
                return
            try:
                self.dispatch(line)
            except KeyboardInterrupt:
                self.say("(interrupted)")

    def dispatch(self, line: str) -> None:
        if line == ":help":
            self.say(HELP)
        elif line == ":drive":
            self.drive()
        elif line == ":why":
            self.why()
        elif line.startswith(":save"):
            self.save(line[len(":save") :].strip())
        elif line.startswith(":"):
            self.say(f"unknown command {line.split()[0]!r}; :help lists them")
        elif self.askable(line):
            record = self.ask(line, lambda rec: self.say(describe_step(rec, len(rec.steps) - 1)))
            self.last = record
            self.say()
            self.say(format_answer(record))

    def askable(self, question: str) -> bool:
        """Whether the question can be asked; if not, say why (before any model loads)."""
        try:
            check_question(question)
        except QuestionError as exc:
            self.say(f"{exc}: back to the prompt")
            return False
        return True

    def drive(self) -> None:
        question = self.input("question> ").strip()
        if not self.askable(question):
            return
        env = self.make_env()
        obs, _ = env.reset(question, options={"meta": {"demonstration": "human"}})
        while True:
            self.say(obs)
            prompt = "answer> " if env.phase == "answer" else "command> "
            try:
                action = self.input(prompt)
            except EOFError:
                self.say("\n(driving abandoned)")
                return
            if action.strip() == ":abort":
                self.say("(driving abandoned)")
                return
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                record = info["record"]
                record.model = "human"
                if record.answer == "":
                    record.answer = None
                self.last = record
                self.say(format_answer(record))
                return

    def why(self) -> None:
        if self.last is None:
            self.say("no episode yet")
            return
        for i, step in enumerate(self.last.steps):
            self.say(f"--- step {i + 1}: what the model saw")
            self.say(step.observation)
            self.say(describe_step(self.last, i))

    def save(self, path: str) -> None:
        if not path:
            self.say("usage: :save FILE")
        elif self.last is None:
            self.say("no episode to save yet")
        else:
            try:
                append_jsonl(check_writable(path), [self.last])
            except (RecordError, OSError) as exc:
                self.say(f"not saved: {exc}")
                return
            self.say(f"saved episode {self.last.id} to {path}")
