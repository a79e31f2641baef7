"""Demonstrations: a gold-guided expert that browses like a careful person who knows the answer.

    webagent demos ../shared/data/triviaqa/train.jsonl --out runs/demos.jsonl --export runs/demos.pc.jsonl

The expert sees the question's answer aliases and uses them only the way a person uses what
they know: to judge which result and which sentence are worth it. Its choices follow from what
it sees (`grounded_order`), so a policy can imitate them: it searches with words from the
question, opens the results whose title or snippet names an answer (at any rank), else those
whose title names the question's entities, goes Back from a page that does not say the answer,
searches again with other words when no result looks right, scrolls or uses `Find in page:` to
reach the sentence, quotes it (sometimes from a second source too), ends, and answers with the
alias copied from its quote, then `[n]`. Trajectories vary with the seed (`--trajectories`). Only episodes whose quotes contain an alias are kept. Every
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
from env.observation import SavedQuote, render_answer, strip_markup
from env.pages import Page
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


def written_answer(q: Question) -> str:
    """The canonical answer in ordinary case (TriviaQA shouts some: "HOLOGRAPHY")."""
    if not q.answer.isupper():
        return q.answer
    same = [
        a
        for a in q.aliases
        if not a.isupper() and normalize_answer(a) == normalize_answer(q.answer)
    ]
    return same[0] if same else q.answer.title()


EXPERT_MAX_RESULTS = 2
"""Results per search the expert opens at most (`demos --max-results`)."""


class Expert:
    """Drives one `BrowserEnv` episode for a question whose answer it knows."""

    def __init__(
        self,
        env: BrowserEnv,
        question: Question,
        rng: random.Random,
        *,
        max_results: int = EXPERT_MAX_RESULTS,
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
        for query in query_variants(q.question):
            if self.over or len(env.quotes) >= wanted or env.actions_left < 5:
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
        answer = expert_answer(env.quotes, q.aliases)
        if answer is None:
            return None
        info = self.act(answer)
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
        quote = on_topic_quote(env.admissible().commands, q.question)
        if quote is None:
            return None
        self.act(quote)
        self.act("End: Answer")
        if self.over or env.phase != "answer":
            return None
        quote = env.quotes[0]
        spelled = _alias_in(quote.extract, q.aliases)
        info = self.act(f"{spelled} [{quote.n}]" if spelled else written_answer(q))
        record = info["record"]
        record.model = "expert"
        return record

    def _try_results(self, tried: set[str], wanted: int) -> None:
        """Open the first `max_results` results that look right from the results page alone
        (`grounded_order`), going Back from a page that does not say the answer; none looks
        right: search again."""
        env = self.env
        results = env.page
        for link_id in grounded_order(results, self.q.question, self.q.aliases)[: self.max_results]:
            link = results.links[link_id]
            if self.over or len(env.quotes) >= wanted or env.actions_left < 4:
                return
            if link.url in tried:
                continue
            tried.add(link.url)
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
            good = alias_quotes(env.admissible().commands, self.q.aliases)
            if good:
                self.act(self.rng.choice(good[:2]))
                return
            if self.rng.random() < 0.5 and self._find_answer_line():
                continue
            if "Scrolled down 1" in env.admissible().commands:
                self.act(
                    f"Scrolled down {self.rng.choice([1, 1, 2])}"
                    if self.rng.random() < 0.3
                    else "Scrolled down 1"
                )
            else:
                return

    def _find_answer_line(self) -> bool:
        """`Find in page:` a question word that first occurs (below the view) on the line holding
        the answer: a jump the policy can make from the question alone. False: no such word."""
        env = self.env
        word = answer_line_word(env.page, env.cursor, self.q.question, self.q.aliases)
        # the aid lists `Find in page:` as a prefix, never as a whole command, so this branch
        # never acts; kept as it is so demonstrations stay what they were (`dagger` finds)
        if word is not None and f"Find in page: {word}" in env.admissible().commands:
            self.act(f"Find in page: {word}")
            return not self.info["action_error"]
        return False


def answer_line_word(page: Page, cursor: int, question: str, aliases: Sequence[str]) -> str | None:
    """A question word whose first occurrence below the view's top line is on the first line
    there holding the answer: `Find in page:` it jumps to the answer, a jump the policy can make
    from the question alone. None: no answer below, or no such word."""
    lines = [strip_markup(line) for line in page.lines]
    below = range(cursor + 1, len(lines))
    target = next((i for i in below if holds_alias(lines[i], aliases)), None)
    if target is None:
        return None
    for word in _content_words(question):
        pattern = re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)", re.I)
        if next((i for i in below if pattern.search(lines[i])), None) == target:
            return word
    return None


def expert_answer(quotes: Sequence[SavedQuote], aliases: Sequence[str]) -> str | None:
    """The expert's answer: the alias as the first quote holding one spells it, citing every
    quote that holds one ("Leonardo da Vinci [1][2]"). None: no quote holds an alias."""
    cited = []
    answer_text = None
    for quote in quotes:
        spelled = _alias_in(quote.extract, aliases)
        if spelled:
            answer_text = answer_text or spelled
            cited.append(quote.n)
    if answer_text is None:
        return None
    return f"{answer_text} {''.join(f'[{n}]' for n in cited)}"


def alias_quotes(commands: Sequence[str], aliases: Sequence[str]) -> list[str]:
    """Of the listed `Quote:` commands, those whose sentence holds an answer alias, in order: the
    quotes the expert takes (and a reader should find)."""
    return [
        c for c in commands if c.startswith("Quote: ") and holds_alias(c[len("Quote: ") :], aliases)
    ]


def on_topic_quote(commands: Sequence[str], question: str) -> str | None:
    """Of the listed `Quote:` commands, the one sharing most words with the question (the first
    of equals): what a reader quotes when no sentence says the answer. None: nothing to quote."""
    asked = set(tokenize(question))
    quotes = [c for c in commands if c.startswith("Quote: ")]
    if not quotes:
        return None
    return max(quotes, key=lambda c: len(asked & set(tokenize(c[len("Quote: ") :]))))


def _content_words(question: str) -> list[str]:
    """The question's words worth looking for: no stop words, longest first."""
    words = dict.fromkeys(w for w in re.findall(r"[\w'’\-]+", question) if tokenize(w))
    return sorted(words, key=len, reverse=True)


def result_snippets(results: Page) -> list[str]:
    """Each listed result's title and snippet as the results page shows them (links[i] is hit i:
    its marker line, its URL line, then snippet lines up to the next marker)."""
    starts = [
        next((j for j, line in enumerate(results.lines) if f"【{i}†" in line), None)
        for i in range(len(results.links))
    ]
    out = []
    for i, start in enumerate(starts):
        if start is None:  # cut off by the page's line limit
            out.append(results.links[i].text)
            continue
        end = next((j for j in starts[i + 1 :] if j is not None), len(results.lines))
        body = " ".join(results.lines[start + 2 : end])
        out.append(strip_markup(results.links[i].text + " " + body))
    return out


def grounded_order(results: Page, question: str, aliases: Sequence[str]) -> list[int]:
    """The results worth opening, best first, judged only from what the results page shows:
    those whose title or snippet names an answer (in rank order), then those whose title names
    the question's entities (most shared words first). Empty: nothing looks right, search again.

    The expert knows the answer only to recognise it in a snippet, as a reader recognises a
    plausible answer; it never opens a result for a reason the page does not show (issue 20:
    a gold-only choice imitates as "open result 0")."""
    entities = {
        w.lower() for w in re.findall(r"(?<!^)(?<![.?!] )\b[A-Z][\w'’\-]+", question) if tokenize(w)
    }
    asked = entities or set(tokenize(question))
    texts = result_snippets(results)
    named = [i for i, t in enumerate(texts) if holds_alias(t, aliases)]
    shared = {i: len(asked & set(tokenize(link.text))) for i, link in enumerate(results.links)}
    titled = sorted(
        (i for i in shared if shared[i] and i not in named), key=lambda i: (-shared[i], i)
    )
    return named + titled


def generate(
    questions: Sequence[Question],
    make_env: Callable[[], BrowserEnv],
    *,
    seed: int = 0,
    max_results: int = EXPERT_MAX_RESULTS,
    recall: bool = False,
    trajectories: int = 1,
) -> Iterator[tuple[Question, EpisodeRecord | None]]:
    """Expert attempts per question: up to `trajectories` distinct ones (by their actions; one
    yield each), or one None when it found no quotable answer and, with `recall`, could not even
    show a recall answer."""
    rng = random.Random(seed)
    for q in questions:
        kept: dict[tuple[str, ...], EpisodeRecord] = {}
        expert = None
        for _ in range(trajectories):
            expert = Expert(
                make_env(), q, random.Random(rng.randrange(2**31)), max_results=max_results
            )
            record = expert.run()
            if record is not None and any(holds_alias(x.extract, q.aliases) for x in record.quotes):
                kept.setdefault(tuple(s.action for s in record.steps), record)
        if not kept and recall and expert is not None:
            record = expert.recall()
            if record is not None:
                kept[()] = record
        if not kept:
            yield q, None
        for record in kept.values():
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
                "question_id": record.meta.get("question_id"),
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
    max_results: int = EXPERT_MAX_RESULTS
    """Results per search the expert opens, at most, before reformulating: the first of those
    that look right from the results page (`grounded_order`)."""
    trajectories: int = 1
    """Expert attempts per question (seeded differently); the distinct ones are all kept."""
    recall: bool = False
    """Where the corpus gives no quotable answer, keep a recall demonstration: an off-target
    quote and the answer from memory, uncited (only its answer step is imitated)."""
    stats: bool = False
    """Make none: print the evidence funnel and behaviour metrics (`webagent.funnel`) of the
    demonstrations already in OUT, as an eval report shows them."""
    debug: bool = False
    """Show tracebacks."""

    def check(self) -> None:
        at_least(1, limit=self.limit, max_results=self.max_results, trajectories=self.trajectories)


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
        trajectories=args.trajectories,
    )
    seen: set[str] = set()
    for q, record in attempts:
        if progress is not None and seen and q.id not in seen:  # the previous question is done
            progress(len(seen), len(todo), kept)
        seen.add(q.id)
        if record is not None:
            append_jsonl(args.out, [record])
            kept += 1
        else:  # remember the attempt so a resumed run does not repeat it
            append_jsonl(skipped_path(args.out), [{"meta": {"question_id": q.id}}])
    if progress is not None and seen:
        progress(len(seen), len(todo), kept)
    return kept, len(todo)


def demo_stats(args: DemosArgs) -> list[str]:
    """The funnel and behaviour tables of OUT's demonstrations (they are ordinary episode
    records; the eval's per-episode row reads them), plus the yield."""
    from webagent import funnel
    from webagent.datasets import load_questions
    from webagent.eval import corpus_of, episode_row

    questions = {q.id: q for q in load_questions(args.dataset)}
    source, cache = args.env.open()
    corpus = corpus_of(source)
    rows = [
        episode_row(questions[r.meta["question_id"]], r, cache, corpus)
        for r in read_records(args.out)
        if r.meta.get("question_id") in questions
    ]
    covered = {row["episode"]["meta"]["question_id"] for row in rows}
    tried = (
        covered | {r.get("meta", {}).get("question_id") for r in read_jsonl(skipped_path(args.out))}
        if skipped_path(args.out).exists()
        else covered
    )
    head = (
        f"{len(rows)} demonstrations of {len(covered)} questions "
        f"(yield {len(covered) / max(1, len(tried)):.3f} of {len(tried)} attempted)"
    )
    return [head, "", *funnel.tables([(Path(args.out).stem, funnel.summarize(rows))])]
