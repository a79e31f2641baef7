"""The reading decision alone: on an article, does a policy stay and quote when the page in view
holds the answer, and leave when it does not? (issue 20)

    .venv/bin/python bench/reading.py                                  # last 150 train questions
    .venv/bin/python bench/reading.py --policies bc-gemma3-270m runs/dagger/policy
    .venv/bin/python bench/reading.py --readers runs/reader/model --policies   # a reader alone
    .venv/bin/python bench/reading.py --quick                          # 12 questions

For each question the script searches its first query variant (`env.queries.query_variants`,
what the demonstrator searches) and opens results 0 .. `--results`-1 in turn, going Back between
them, as a policy that scans the results would. At each article state it records whether a
sentence the aid lets it quote holds an answer alias ("holds"), then asks each policy for its
greedy, aided command there (one step, no rollout: the states are the same for every policy).

Rows, all on the same states:
- **ceiling**: share of questions whose answer is quotable in view on one of those pages, for
  the first one and two query variants: what a perfect reader could quote with this search.
- **encoder**: the search's own encoder (fine-tuned MiniLM) as a reader: AUC of its best
  sentence's score for "this view holds the answer", and whether its best sentence holds it.
- **each reader** (`--readers DIR ...`, default the shipped reader-gemma3-270m): a reward model
  trained on (question, sentence) comparisons (`webagent.reader`), scored the same way.
- **each policy**: P(quote | holds), P(quote | not), P(its quote holds | holds), by rank too.
  A policy that reads has P(quote | holds) well above P(quote | not); equal shares mean it
  decides by where it is in the episode, not by what the page says. Its AUC is that of its
  stay-or-leave decision as a classifier of "holds": 0.5 + (P(quote | holds) - P(quote | not)) / 2,
  0.5 being no reading at all. With `--aid-reader` (default the shipped reader) each policy
  is probed a second time with its aid narrowed as ask and eval narrow it: only the reader's
  best sentence listed as a Quote command.

Measure on held-out train questions (the default: the last 150, outside every training set
built from the first ones); never choose a policy on dev.jsonl.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from retrieval import table  # noqa: E402  (the bench tables' one printer)

from env import commands as cmds  # noqa: E402
from webagent.config import DEFAULT_READER, EnvArgs, at_least  # noqa: E402
from webagent.datasets import load_questions  # noqa: E402
from webagent.reader import State, scan  # noqa: E402


@dataclass
class Args:
    """Reading-decision benchmark."""

    quick: bool = False
    """Small run: the last 12 train questions."""
    shared_dir: Path = ROOT.parent / "shared"
    """Folder holding data/triviaqa/train.jsonl."""
    last: int = 150
    """Questions: the last N of train.jsonl."""
    results: int = 3
    """Results opened per search (ranks 0 .. N-1)."""
    policies: list[str] = field(default_factory=lambda: ["bc-gemma3-270m"])
    """Policy specs, as `--model` takes them."""
    readers: list[str] = field(default_factory=lambda: [DEFAULT_READER])
    """Reward-model directories (`webagent train rm` output) scored as readers: each sentence in
    view is judged as the lone quote of an empty answer, like the encoder row."""
    aid_reader: str | None = DEFAULT_READER
    """Also probe each policy with its aid narrowed by this reader (`--reader` of ask and eval:
    only the reader's best sentence listed as a Quote command), one more row per policy."""
    batch: int = 8
    """States decoded together."""
    int8: bool = True
    """Sample and read with int8 weights (the default policy setting); --no-int8 for fp32."""


def kind(command: str) -> str:
    """The command's name in the grammar (search, click, quote, back, ...), or "invalid"."""
    try:
        return cmds.to_dict(cmds.parse(command))["name"]
    except cmds.CommandError:
        return "invalid"


def auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """P(a holding state scores above a missing one), ties half."""
    y = np.asarray(labels, bool)
    s = np.asarray(scores, float)
    pos, neg = s[y][:, None], s[~y][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / max(1, pos.size * neg.size))


def encoder_scores(question: str, title: str, sentences: list[str]) -> np.ndarray:
    """The search encoder as a reader: each sentence (with its page title) against the question."""
    from env.dense import PassageConfig, encoder_text, shared_encoder

    encoder = shared_encoder()
    q = encoder.encode_queries([question])[0]
    return encoder.encode([encoder_text(title, x, PassageConfig()) for x in sentences]) @ q


def load_reader(directory: str, int8: bool):
    """A trained reader as ask and eval load it (`webagent.config.load_reader`: once per
    process), in int8 when the policies sample in int8."""
    from webagent.config import PolicyArgs
    from webagent.config import load_reader as loaded

    return loaded(PolicyArgs(reader=directory, int8=int8))


def reader_scores(reader):
    """A reader's scores of each sentence as the lone quote of an empty answer."""
    return lambda question, title, sentences: np.asarray(reader.scores(question, title, sentences))


def reader_row(name: str, states: Sequence[State], score) -> list[str]:
    """A sentence scorer as a reader: AUC of its best sentence's score for "the view holds the
    answer", and how often that best sentence is one that holds it."""
    best, right = [], 0
    for s in states:
        sentences = [c[len("Quote: ") :] for c in s.quotes]
        if not sentences:
            best.append(-math.inf)
            continue
        scores = score(s.question.question, s.title, sentences)
        best.append(float(scores.max()))
        right += s.holds and s.quotes[int(scores.argmax())] in s.good
    holding = sum(s.holds for s in states)
    return [
        name,
        f"{auc([s.holds for s in states], best):.3f}",
        "—",
        "—",
        f"{right / max(1, holding):.3f}",
        "—",
        "—",
    ]


def probe(
    spec: str, policy, states: Sequence[State], args: Args, reader=None
) -> tuple[list[str], float]:
    """The greedy aided command of `policy` (loaded from `spec`) at every state, the aid
    narrowed by `reader` if given; its table row and seconds per state."""
    from webagent.policy import Sampling
    from webagent.rollout import led

    actions: list[str] = []
    t0 = time.perf_counter()
    for b in range(0, len(states), args.batch):
        batch = states[b : b + args.batch]
        aids = [
            s.admissible
            if reader is None
            else reader.narrow(s.admissible, s.question.question, s.title)
            for s in batch
        ]
        generations = policy.generate(
            [policy.prompt("browse", s.observation) for s in batch],
            max_new_tokens=64,
            sampling=Sampling(),
            constrained=[led(a, policy, "browse") for a in aids],
        )
        actions += [g.text.strip() for g in generations]
    seconds = (time.perf_counter() - t0) / max(1, len(states))
    kinds = [kind(a) for a in actions]
    hold = [i for i, s in enumerate(states) if s.holds]
    miss = [i for i, s in enumerate(states) if not s.holds]

    def share(ix: list[int], test=lambda i: kinds[i] == "quote") -> float:
        """Share of states ix passing test (default: the policy quoted there)."""
        return sum(bool(test(i)) for i in ix) / max(1, len(ix))

    by_rank = []
    for rank in sorted({s.rank for s in states}):
        h = [i for i in hold if states[i].rank == rank]
        m = [i for i in miss if states[i].rank == rank]
        by_rank.append(f"{rank}: {share(h):.2f} / {share(m):.2f}")
    leave = Counter(kinds[i] for i in miss)
    stay, stray = share(hold), share(miss)
    row = [
        spec,
        f"{0.5 + (stay - stray) / 2:.3f}",
        f"{stay:.3f}",
        f"{stray:.3f}",
        f"{share(hold, lambda i: actions[i] in states[i].good):.3f}",
        "; ".join(by_rank),
        ", ".join(f"{k} {v}" for k, v in leave.most_common(3)),
    ]
    if reader is not None:
        row[0] = f"{spec}, aid narrowed by {reader.name}"
    return row, seconds


def check(args: Args) -> None:
    """Bad flags and unknown models fail here, before the states are built or a model loads."""
    from webagent.endpoint import is_endpoint_spec
    from webagent.models import resolve, reward_model_dir

    at_least(1, last=args.last, results=args.results, batch=args.batch)
    for spec in args.policies:
        if not is_endpoint_spec(spec):
            resolve(spec)
    for directory in [*args.readers, *([args.aid_reader] if args.aid_reader else [])]:
        reward_model_dir(directory)


def run(args: Args) -> int:
    check(args)
    last = 12 if args.quick else args.last
    questions = load_questions(args.shared_dir / "data/triviaqa/train.jsonl")
    questions = [q for q in questions[-last:] if q.aliases]
    make_env = EnvArgs().env_factory()
    t0 = time.perf_counter()
    states: list[State] = []
    reachable = {0: 0, 1: 0}
    for n, q in enumerate(questions, 1):
        first = scan(q, make_env, args.results)
        states += first
        found = any(s.holds for s in first)
        reachable[0] += found
        reachable[1] += found or any(s.holds for s in scan(q, make_env, args.results, variant=1))
        if n % 50 == 0:
            print(f"  states: {n}/{len(questions)} questions", file=sys.stderr, flush=True)
    holding = sum(s.holds for s in states)
    print(
        f"{len(questions)} questions (the last of train.jsonl), {len(states)} article states "
        f"(results 0-{args.results - 1} of the first query), {holding} hold the answer in view; "
        f"built in {time.perf_counter() - t0:.1f} s\n"
    )
    n = max(1, len(questions))
    print(
        f"ceiling: the answer is quotable on one of these pages for {reachable[0] / n:.3f} of "
        f"questions with the first query, {reachable[1] / n:.3f} with the first two\n"
    )
    rows = [reader_row("encoder (best sentence)", states, encoder_scores)]
    for directory in args.readers:
        reader = load_reader(directory, args.int8)
        rows.append(reader_row(f"{directory} (best sentence)", states, reader_scores(reader)))
    aid_reader = load_reader(args.aid_reader, args.int8) if args.aid_reader else None
    from webagent.config import PolicyArgs, load_policy

    for spec in args.policies:
        policy = load_policy(PolicyArgs(model=spec, int8=args.int8))
        for reader in [None, aid_reader] if aid_reader else [None]:
            row, seconds = probe(spec, policy, states, args, reader)
            rows.append(row)
            print(f"  {row[0]}: {seconds:.2f} s/state", file=sys.stderr, flush=True)
    table(
        [
            "reader",
            "AUC",
            "quotes when the view holds it",
            "quotes when not",
            "its quote holds it (when held)",
            "by rank: quotes when held / when not",
            "when not: commonest commands",
        ],
        rows,
    )
    return 0


def main() -> int:
    import tyro

    return run(tyro.cli(Args))


if __name__ == "__main__":
    raise SystemExit(main())
