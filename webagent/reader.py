"""The reader: a small model that judges one sentence of evidence, and what it is trained on.

Why (issue 20): the policy does not read. On the same article states, its choice to quote or
to leave follows its rank in the episode, not what the page says (bench/reading.py: AUC
0.44-0.57, 0.5 being no reading), and its quote holds the answer in 20% of the views that hold
it. A reward model trained on *evidence* comparisons does read: the sentence holding the
answer preferred over another sentence of the same view, and over a sentence of a page of the
same question that does not hold it. Its best sentence holds the answer in ~69% of such views
(bench/README.md, "The reading decision").

A reader is an ordinary reward model (`webagent train rm` trains it, `reward.model` loads it)
that scores `reward_text(question, Answer("", (Quote(title, sentence),)))`: one quote and no
answer. The decoding aid uses it (`Reader.narrow`): on an article, of the `Quote:` commands in
view it lists only the reader's best k, so the policy's quote is the sentence the reader
judges most likely to answer. It never adds a command and never removes any other.

    webagent reader-pairs ../shared/data/triviaqa/train.jsonl --out runs/reader/pairs.jsonl
    webagent train rm runs/reader/pairs.jsonl --model gemma3-270m --lora --epochs 1 \\
        --learning-rate 2e-4 --no-ties --max-length 256 --out runs/reader/model

The pairs come from `scan` states of train questions only: search a query variant, open
results 0..k-1 in turn with Back between, as a policy that scans results would
(bench/reading.py measures readers and policies on the same states of held-out questions).
"""

from __future__ import annotations

import random
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from env.admissible import Admissible
from env.browser import BrowserEnv
from env.queries import query_variants
from reward.comparisons import Comparison, write_comparisons
from reward.text import Answer, Quote
from webagent.config import EnvArgs, at_least
from webagent.datasets import Question, load_questions
from webagent.demos import alias_quotes, on_topic_quote

QUOTE = "Quote: "


@dataclass
class State:
    """One article state of a scan: what the policy sees and which of its quotes hold the answer."""

    question: Question
    variant: int
    """Which query variant was searched (`env.queries.query_variants`)."""
    rank: int
    """Which result was opened (0 = the first)."""
    url: str
    title: str
    observation: str
    admissible: Admissible
    good: tuple[str, ...]
    """The listed `Quote:` commands whose sentence holds an alias (`demos.alias_quotes`)."""

    @property
    def holds(self) -> bool:
        return bool(self.good)

    @property
    def quotes(self) -> list[str]:
        """The listed `Quote:` commands, in view order."""
        return [c for c in self.admissible.commands if c.startswith(QUOTE)]


def scan(
    question: Question, make_env: Callable[[], BrowserEnv], results: int, variant: int = 0
) -> list[State]:
    """Search one query variant, then open its first `results` results in turn (Back between):
    one `State` per article opened. No state when the variant does not exist or finds nothing."""
    variants = query_variants(question.question)
    if variant >= len(variants):
        return []
    env = make_env()
    env.reset(question.question, seed=0)
    env.step(f"Search {variants[variant]}")
    states: list[State] = []
    if env.page is None or env.page.kind != "search":
        return states
    for rank in range(min(results, len(env.page.links))):
        obs, *_ = env.step(f"Clicked on link {rank}")
        if env.page is None or env.page.kind == "search":
            break
        adm = env.admissible()
        good = tuple(alias_quotes(adm.commands, question.aliases))
        page = env.page
        states.append(State(question, variant, rank, page.url, page.title or "", obs, adm, good))
        env.step("Back")
    return states


def evidence(title: str, sentence: str) -> Answer:
    """A sentence as a reader judges it: the lone quote of an answer that says nothing yet."""
    return Answer("", (Quote(title, sentence),))


def pairs_of(states: Sequence[State], rng: random.Random, per_view: int = 2) -> list[Comparison]:
    """Evidence comparisons of one question's states. In each view holding the answer (each
    page once), each of its first `per_view` holding sentences is preferred over (a) a sentence
    of the same view that does not hold it (which sentence to quote: the most on-topic one
    first, then a random one) and (b) the most on-topic sentence of a page of the same question
    that does not hold it (whether to stay). On-topic rivals share the question's words, so
    word overlap alone cannot tell them apart. Which side is answer 0 is random (`rng`), so
    position carries nothing."""
    # each page once, as first seen (a page both query variants find is one view), in the
    # order of its last visit: the order the shipped reader's pairs were drawn in
    first: dict[str, State] = {}
    for s in states:
        first.setdefault(s.url, s)
    last = {s.url: i for i, s in enumerate(states)}
    views = sorted(first.values(), key=lambda s: last[s.url])
    missing = [s for s in views if not s.holds and s.quotes]
    out: list[Comparison] = []
    for s in views:
        q = s.question
        others = [c for c in s.quotes if c not in s.good]
        for i, good in enumerate(s.good[:per_view]):
            rivals: list[tuple[str, State, str]] = []
            if others:
                other = on_topic_quote(others, q.question) if i == 0 else rng.choice(others)
                rivals.append(("same view", s, other or ""))
            if missing:
                m = rng.choice(missing)
                rivals.append(("page that misses", m, on_topic_quote(m.quotes, q.question) or ""))
            chosen = evidence(s.title, good[len(QUOTE) :])
            for kind, view, command in rivals:
                rejected = evidence(view.title, command[len(QUOTE) :])
                first = rng.random() < 0.5
                out.append(
                    Comparison(
                        q.question,
                        chosen if first else rejected,
                        rejected if first else chosen,
                        preference=1.0 if first else 0.0,
                        labeler="gold",
                        meta={"question_id": q.id, "rival": kind, "rank": s.rank},
                    )
                )
    return out


@dataclass
class ReaderPairsArgs:
    """Evidence comparisons for training a reader (`webagent train rm` on the output): train
    questions only, the last --holdout left out for bench/reading.py."""

    dataset: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DATASET")]
    """Questions with answer aliases (train.jsonl; never dev.jsonl)."""
    out: str = "runs/reader/pairs.jsonl"
    """Comparisons (JSON lines), the layout `webagent train rm` reads; must not exist yet."""
    env: EnvArgs = field(default_factory=EnvArgs)
    holdout: int = 150
    """Leave out the last N questions of the file (the held-out set bench/reading.py measures
    readers on)."""
    limit: int | None = None
    """At most this many questions (from the start of the file)."""
    results: int = 3
    """Results opened per search (ranks 0 .. N-1)."""
    variants: int = 2
    """Query variants searched per question (`env.queries.query_variants`)."""
    seed: int = 0
    """Which rival page and which answer slot each pair gets."""
    debug: bool = False
    """Show tracebacks."""

    def check(self) -> None:
        from env.record import check_writable

        at_least(0, holdout=self.holdout)
        at_least(1, limit=self.limit, results=self.results, variants=self.variants)
        if Path(self.out).exists():
            raise ValueError(f"{self.out} exists: pairs are written to a new file")
        check_writable(self.out)


def reader_pairs(args: ReaderPairsArgs, progress: Callable[[int, int, int], None] | None = None):
    """Scan every question of `args` and write its evidence comparisons to `args.out` (each
    question's as soon as it is scanned). Returns (comparisons, questions scanned)."""
    questions = load_questions(args.dataset)
    if args.holdout:
        questions = questions[: -args.holdout]
    questions = [q for q in questions[: args.limit] if q.aliases]
    if not questions:
        raise ValueError(f"{args.dataset}: no questions with answers left to scan")
    make_env = args.env.env_factory()
    rng = random.Random(args.seed)
    total = 0
    for n, q in enumerate(questions, 1):
        states = [s for v in range(args.variants) for s in scan(q, make_env, args.results, v)]
        pairs = pairs_of(states, rng)
        write_comparisons(args.out, pairs)
        total += len(pairs)
        if progress is not None:
            progress(n, len(questions), total)
    return total, len(questions)


class Reader:
    """A loaded reader: scores sentences for a question and narrows the aid's quotes to its best.

    Scores are cached per (question, title, sentence): a policy that stays on a page, scrolls
    back or opens it again pays once."""

    def __init__(
        self, directory: str | Path, *, top_k: int = 1, int8: bool = False, batch_size: int = 16
    ):
        from reward.model import RewardScorer

        if top_k < 1:
            raise ValueError(f"a reader keeps at least 1 quote, got top_k={top_k}")
        self.scorer = RewardScorer(directory, batch_size=batch_size)
        if int8:  # as the policy samples (`webagent.int8`): the adapter merged, linears int8
            from webagent.int8 import quantize_body, unavailable

            if unavailable() is None:
                self.scorer.model.body = quantize_body(self.scorer.model.body)
        self.name = Path(directory).name
        self.top_k = top_k
        self._cache: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def scores(self, question: str, title: str, sentences: Sequence[str]) -> list[float]:
        keys = [(question, title, s) for s in sentences]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            scores = self.scorer.score(question, [evidence(title, s) for _, _, s in todo])
            self._cache.update(zip(todo, scores, strict=True))
        while len(self._cache) > 50_000:  # a long eval: forget the oldest questions' pages
            self._cache.popitem(last=False)
        return [self._cache[k] for k in keys]

    def narrow(self, admissible: Admissible, question: str, title: str) -> Admissible:
        """The aid with only the reader's best `top_k` `Quote:` commands (in view order); the
        other commands and the free-text prefixes unchanged."""
        quotes = [c for c in admissible.commands if c.startswith(QUOTE)]
        if len(quotes) <= self.top_k:
            return admissible
        scores = self.scores(question, title, [c[len(QUOTE) :] for c in quotes])
        order = sorted(range(len(quotes)), key=lambda i: -scores[i])
        keep = {quotes[i] for i in order[: self.top_k]}
        commands = tuple(c for c in admissible.commands if not c.startswith(QUOTE) or c in keep)
        return Admissible(commands, admissible.prefixes)

    def aid(self, env: BrowserEnv) -> Admissible:
        """The environment's admissible set, narrowed on an article (what the runner decodes)."""
        admissible = env.admissible()
        if env.phase != "browse" or env.page is None or env.page.kind != "page":
            return admissible
        return self.narrow(admissible, env.question, env.page.title or "")


def main_pairs(args: ReaderPairsArgs) -> Iterator[str]:
    """`webagent reader-pairs`: progress on stderr, the summary line yielded."""

    def progress(done: int, todo: int, kept: int) -> None:
        if done % 100 == 0 or done == todo:
            print(f"{done}/{todo} questions, {kept} comparisons", file=sys.stderr, flush=True)

    total, scanned = reader_pairs(args, progress)
    yield f"{total} evidence comparisons from {scanned} questions -> {args.out}"
