"""Demonstrations: a gold-guided expert that browses like a careful person who knows the answer.

    webagent demos ../shared/data/triviaqa/train.jsonl --out runs/demos.jsonl --export runs/demos.pc.jsonl

The expert sees the question's answer aliases and uses them only the way a person uses what
they know: to judge which result and which sentence are worth it. It searches with words from
the question (reformulating when the results do not help), opens results (going Back from the
ones that do not say the answer), scrolls or finds its way to the sentence, quotes it (sometimes
from a second source too), ends, and answers with the alias copied from its quote, then `[n]`.
Trajectories vary with the seed. Only episodes whose quotes contain an alias are kept. Every
command it issues is one the environment lists as admissible, so the policy could have written it.

Recall demonstrations (`--recall`): for a question whose answer the corpus does not give, the
expert still shows the *answer phase*: it opens a top result, quotes its most on-topic sentence,
and answers from memory without citing (the quote does not support it). Only that answer step is
for imitation (`meta["imitate"] == "answer"`): a small policy quotes off-target sentences often,
and should then still answer what it knows rather than copy a wrong name from the quote.

Demonstrations are ordinary episode records; `to_prompt_completion` writes TRL's
{"prompt","completion"} lines (one per browse step and one per answer) for any trainer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from env.browser import BrowserEnv
from env.observation import render_answer, strip_markup
from env.queries import query_variants
from env.record import EpisodeRecord, append_jsonl, read_jsonl, read_records
from env.search import tokenize
from webagent.config import DEMO_MAX_ACTIONS, EnvArgs, at_least
from webagent.datasets import Question
from webagent.metrics import holds_alias, normalize_answer
from webagent.prompts import PromptFormat


def _alias_in(text: str, aliases: Sequence[str]) -> str | None:
    """The alias as the text spells it (longest first), for an answer copied from the quote."""
    for alias in sorted(aliases, key=len, reverse=True):
        m = re.search(r"(?<!\w)" + re.escape(alias) + r"(?!\w)", text, re.I)
        if m:
            return m.group(0)
    return None


def _as_written(q: Question) -> str:
    """The canonical answer in ordinary case (TriviaQA shouts some: "HOLOGRAPHY")."""
    if not q.answer.isupper():
        return q.answer
    same = [
        a
        for a in q.aliases
        if not a.isupper() and normalize_answer(a) == normalize_answer(q.answer)
    ]
    return same[0] if same else q.answer.title()


class Expert:
    """Drives one `BrowserEnv` episode for a question whose answer it knows."""

    def __init__(
        self, env: BrowserEnv, question: Question, rng: random.Random, *, max_results: int = 6
    ):
        self.env, self.q, self.rng, self.max_results = env, question, rng, max_results

    def act(self, command: str) -> dict:
        _, _, terminated, truncated, info = self.env.step(command)
        self.info, self.over = info, terminated or truncated
        return info

    def run(self) -> EpisodeRecord | None:
        env, q = self.env, self.q
        env.reset(
            q.question,
            seed=self.rng.randrange(2**31),
            options={"meta": {"question_id": q.id, "demonstration": "gold-expert"}},
        )
        self.over = False
        wanted = 1 if self.rng.random() < 0.75 else 2  # sometimes two sources
        tried: set[str] = set()
        for query in query_variants(q.question)[: 2 + self.rng.randint(0, 1)]:
            if self.over or len(env.quotes) >= wanted:
                break
            self.act(f"Search {query}")
            if self.info["action_error"]:
                continue
            self._try_results(tried, wanted)
        if self.over or not env.quotes:
            return None
        self.act("End: Answer")
        if self.over or env.phase != "answer":
            return None
        cited = []
        answer_text = None
        for quote in env.quotes:
            spelled = _alias_in(quote.extract, q.aliases)
            if spelled:
                answer_text = answer_text or spelled
                cited.append(quote.n)
        if answer_text is None:
            return None
        info = self.act(f"{answer_text} {''.join(f'[{n}]' for n in cited)}")
        record = info["record"]
        record.model = "expert"
        return record

    def recall(self) -> EpisodeRecord | None:
        """Search, open a top result, quote its most on-topic sentence, answer from memory."""
        env, q = self.env, self.q
        env.reset(
            q.question,
            seed=self.rng.randrange(2**31),
            options={
                "meta": {"question_id": q.id, "demonstration": "recall-expert", "imitate": "answer"}
            },
        )
        self.over = False
        self.act(f"Search {query_variants(q.question)[0]}")
        if self.info["action_error"] or not env.page.links:
            return None
        link_id = self.rng.randrange(min(3, len(env.page.links)))
        self._reveal(link_id)
        self.act(f"Clicked on link {link_id}")
        if self.over or self.info["action_error"]:
            return None
        asked = set(tokenize(q.question))
        quotes = [c for c in env.admissible().commands if c.startswith("Quote: ")]
        if not quotes:
            return None
        self.act(max(quotes, key=lambda c: len(asked & set(tokenize(c[len("Quote: ") :])))))
        self.act("End: Answer")
        if self.over or env.phase != "answer":
            return None
        quote = env.quotes[0]
        spelled = _alias_in(quote.extract, q.aliases)
        info = self.act(f"{spelled} [{quote.n}]" if spelled else _as_written(q))
        record = info["record"]
        record.model = "expert"
        return record

    def _try_results(self, tried: set[str], wanted: int) -> None:
        env = self.env
        results = env.page
        for link_id, link in enumerate(results.links[: self.max_results]):
            if self.over or len(env.quotes) >= wanted or env.actions_left < 4:
                return
            if link.url in tried:
                continue
            tried.add(link.url)
            # a person reads the snippet first: skip results whose snippet is off-topic half the time
            self._reveal(link_id)
            self.act(f"Clicked on link {link_id}")
            if self.info["action_error"]:
                continue
            if holds_alias(strip_markup(env.page.text), self.q.aliases):
                self._quote_answer()
            if not self.over and len(env.quotes) < wanted:
                self.act("Back")

    def _reveal(self, link_id: int) -> None:
        """Scroll the results page until the link is in view (a person scrolls, not guesses)."""
        env = self.env
        marker = f"【{link_id}†"
        for _ in range(10):
            view = env.page.lines[env.cursor : env.cursor + env.config.limits.window_lines]
            if (
                any(marker in line for line in view)
                or "Scrolled down 1" not in env.admissible().commands
            ):
                return
            self.act("Scrolled down 1")

    def _quote_answer(self) -> None:
        """Bring the sentence with the answer into view, then quote it."""
        env = self.env
        for _ in range(12):
            if self.over:
                return
            candidates = [c for c in env.admissible().commands if c.startswith("Quote: ")]
            good = [c for c in candidates if holds_alias(c[len("Quote: ") :], self.q.aliases)]
            if good:
                self.act(self.rng.choice(good[:2]))
                return
            if "Scrolled down 1" in env.admissible().commands:
                self.act(
                    f"Scrolled down {self.rng.choice([1, 1, 2])}"
                    if self.rng.random() < 0.3
                    else "Scrolled down 1"
                )
            else:
                return


def generate(
    questions: Sequence[Question],
    make_env: Callable[[], BrowserEnv],
    *,
    seed: int = 0,
    max_results: int = 6,
    recall: bool = False,
) -> Iterator[tuple[Question, EpisodeRecord | None]]:
    """One expert attempt per question (None when it found no quotable answer and, with
    `recall`, could not even show a recall answer)."""
    rng = random.Random(seed)
    for q in questions:
        expert = Expert(make_env(), q, random.Random(rng.randrange(2**31)), max_results=max_results)
        record = expert.run()
        if record is not None and not any(holds_alias(x.extract, q.aliases) for x in record.quotes):
            record = None
        if record is None and recall:
            record = expert.recall()
        yield q, record


def to_prompt_completion(record: EpisodeRecord, fmt: PromptFormat, tokenizer=None) -> list[dict]:
    """TRL prompt/completion rows: one per browse step, one for the answer. Invalid steps are
    skipped (the expert makes none); a recall demonstration gives its answer row only."""
    rows = []
    answer_only = record.meta.get("imitate") == "answer"
    for step in record.steps:
        if step.phase == "browse" and (step.command is None or answer_only):
            continue
        if step.phase == "answer" and not step.action.strip():
            continue
        # answers are rendered afresh from the quotes: records made before a layout change
        # still train the current one (browse steps keep their recorded observation)
        observation = (
            render_answer(question=record.question, quotes=record.quotes)
            if step.phase == "answer"
            else step.observation
        )
        prompt = fmt.prompt(step.phase, observation, tokenizer)  # type: ignore[arg-type]
        completion = fmt.lead(step.phase) + step.action.strip() + "\n"
        rows.append(
            {
                "prompt": prompt,
                "completion": completion,
                "phase": step.phase,
                "episode_id": record.id,
            }
        )
    return rows


def export(demos_path: str | Path, out_path: str | Path, fmt: PromptFormat | None = None) -> int:
    """Write prompt/completion lines for every demonstration in a records file; returns the count."""
    fmt = fmt or PromptFormat("base", examples=0)
    out = Path(out_path)
    out.unlink(missing_ok=True)
    n = 0
    for record in read_records(demos_path):
        rows = to_prompt_completion(record, fmt)
        append_jsonl(out, rows)
        n += len(rows)
    return n


def skipped_path(path: str | Path) -> Path:
    """Where questions that gave no demonstration are remembered, beside the output file."""
    return Path(str(path).replace(".jsonl", ".skipped.jsonl"))


def done_ids(path: str | Path) -> set[str]:
    """Question ids already demonstrated (or attempted: `skipped_path`), for resuming."""
    ids: set[str] = set()
    for p in (Path(path), skipped_path(path)):
        if p.exists():
            ids |= {r.get("meta", {}).get("question_id") for r in read_jsonl(p)}
    return ids


@dataclass
class DemosArgs:
    """Gold-guided expert demonstrations (episode records), optionally exported as prompt/completion."""

    dataset: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DATASET")]
    """Questions with answers (any layout `eval` reads). Never the evaluation set."""
    out: str = "runs/demos.jsonl"
    """Episode records are appended here; a rerun skips questions already attempted."""
    export: str | None = None
    """Also write TRL {"prompt","completion"} lines (zero-shot prompts) to this file."""
    env: EnvArgs = field(default_factory=lambda: EnvArgs(max_actions=DEMO_MAX_ACTIONS))
    limit: int | None = None
    """Only the first N questions."""
    seed: int = 0
    """Varies the expert's trajectories."""
    max_results: int = 6
    """Results per search the expert opens before reformulating."""
    recall: bool = False
    """Where the corpus gives no quotable answer, keep a recall demonstration: an off-target
    quote and the answer from memory, uncited (only its answer step is imitated)."""
    debug: bool = False
    """Show tracebacks."""

    def check(self) -> None:
        at_least(1, limit=self.limit, max_results=self.max_results)


def record_demonstrations(
    args: DemosArgs, progress: Callable[[int, int, int], None] | None = None
) -> tuple[int, int]:
    """Demonstrations of DATASET's questions not yet attempted, appended to OUT one by one (a
    question that gave none is remembered beside it, so a rerun resumes). `progress(done, todo,
    kept)` after each question. Returns (demonstrations kept, questions attempted)."""
    from webagent.datasets import load_questions

    questions = load_questions(args.dataset)[: args.limit]
    done = done_ids(args.out)
    todo = [q for q in questions if q.id not in done]
    kept = 0
    attempts = generate(
        todo,
        args.env.env_factory(),
        seed=args.seed,
        max_results=args.max_results,
        recall=args.recall,
    )
    for i, (q, record) in enumerate(attempts, start=1):
        if record is not None:
            append_jsonl(args.out, [record])
            kept += 1
        else:  # remember the attempt so a resumed run does not repeat it
            append_jsonl(skipped_path(args.out), [{"meta": {"question_id": q.id}}])
        if progress is not None:
            progress(i, len(todo), kept)
    return kept, len(todo)
