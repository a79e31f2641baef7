"""Comparisons from the policy: K episodes per question, drawn as best-of-n draws its
candidates, and pairs of their answers.

    webagent compare ../shared/data/triviaqa/train.jsonl --samples 5 --out runs/rm/policy.jsonl

Each question's episode 0 is the greedy one and the other K-1 are sampled at
`config.best_of_temperature` (--temperature, or 0.7 at the default 0): `rollout.best_of_tasks`,
with seeds fixed by the question's position, so the reward model learns on the candidates it
will judge, and a resumed run samples what an uninterrupted one would.

Every pair of distinct answers to a question becomes one `reward.comparisons.Comparison`.
With `--judge gold` (TriviaQA-style data with answer aliases) the pair is labeled at once:
correct and supported by its own quotes beats correct but unsupported beats wrong; equal
ranks tie (0.5). With `--judge none` the file waits for a person (`webagent label FILE`).
The episodes themselves are kept beside the file (`*.episodes.jsonl`), and a rerun skips
questions already done.

A small policy is mostly wrong, so most gold pairs tie and carry no signal. `--demos FILE`
(episodes from `webagent demos`, e.g. `--recall`) adds each question's demonstration as one
more candidate: a right answer to prefer over the policy's wrong ones (`--demos-when
none-right`: only for questions none of whose samples is right). `--repair` pairs the
episodes already recorded again (with the current `--demos` and judge) instead of sampling.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from env.record import EpisodeRecord, append_jsonl, read_jsonl
from reward.checkpoint import flag_names, settings_file
from reward.comparisons import Comparison
from reward.text import Answer
from webagent.config import EnvArgs, PolicyArgs, at_least, best_of_temperature
from webagent.datasets import Question
from webagent.metrics import exact_match, supported


def gold_rank(record: EpisodeRecord, aliases: Sequence[str]) -> int:
    """2: right and supported by a cited quote; 1: right but unsupported; 0: wrong or none."""
    if not record.answer or not exact_match(record.answer, aliases):
        return 0
    return 2 if supported(record.answer, aliases, [q.extract for q in record.quotes]) else 1


def gold_preference(rank_0: int, rank_1: int) -> float:
    return 1.0 if rank_0 > rank_1 else 0.0 if rank_0 < rank_1 else 0.5


def pairs(
    question: Question, records: Sequence[EpisodeRecord], *, judge: str = "gold"
) -> list[Comparison]:
    """All pairs of episodes whose answers (text and quotes) differ."""
    out = []
    for a, b in itertools.combinations(records, 2):
        ans_a, ans_b = Answer.from_record(a), Answer.from_record(b)
        if ans_a == ans_b:
            continue
        pref, labeler = None, None
        if judge == "gold" and question.aliases:
            pref, labeler = (
                gold_preference(gold_rank(a, question.aliases), gold_rank(b, question.aliases)),
                "gold",
            )
        out.append(
            Comparison(
                question.question,
                ans_a,
                ans_b,
                pref,
                labeler,
                meta={"question_id": question.id, "episodes": [a.id, b.id]},
            )
        )
    return out


def episodes_path(out: str | Path) -> Path:
    return Path(str(out).replace(".jsonl", "") + ".episodes.jsonl")


def settings_path(out: str | Path) -> Path:
    return Path(str(out).replace(".jsonl", "") + ".config.json")


def check_settings(args: CompareArgs) -> None:
    """Refuse to append samples drawn with other settings than the ones OUT holds (say fp32
    episodes, then int8 ones now that sampling is int8 by default; or all at one temperature,
    then greedy + sampled): a reward model trained on the mix would learn the two samplers
    apart. The first run writes them beside OUT."""
    settings = {
        "dataset": str(Path(args.dataset).resolve()),
        "policy": args.policy.recorded(),
        # how each question's K candidates are drawn: files sampled all at one temperature
        # (before 2026-11-28) lack these keys and are refused rather than mixed
        "greedy_candidate": True,
        "sample_temperature": best_of_temperature(args.policy),
        "env": asdict(args.env),
        "samples": args.samples,
        "judge": args.judge,
        "answers_from": args.answers_from,
    }
    path = settings_path(args.out)
    if not path.exists() and Path(args.out).exists() and Path(args.out).stat().st_size:
        raise ValueError(
            f"{args.out} holds comparisons but no {path.name} naming the settings that drew "
            "them (it predates the check; sampling is int8 by default since 2026-11-28): "
            "use another --out, or --repair to pair its episodes again"
        )
    settings_file(path, settings, flag_names(args))


def done_questions(out: str | Path) -> set[str]:
    """Questions whose K episodes were all recorded (the episodes file is written first)."""
    path = episodes_path(out)
    if not path.exists():
        return set()
    return {r.get("meta", {}).get("question_id") for r in read_jsonl(path)}


def demonstrations(path: str | Path | None) -> dict[str, EpisodeRecord]:
    """The demonstration for each question id in a `webagent demos` file (the first one kept)."""
    out: dict[str, EpisodeRecord] = {}
    for row in read_jsonl(path) if path else ():
        qid = row.get("meta", {}).get("question_id")
        if qid is not None and qid not in out:
            out[qid] = EpisodeRecord.from_dict(row)
    return out


def record_question(
    out: str | Path,
    question: Question,
    records: list[EpisodeRecord],
    judge: str,
    demo: EpisodeRecord | None = None,
    demos_when: str = "always",
) -> int:
    """Append one question's episodes, then its comparisons (the demonstration, if any, is one
    more candidate; it is not written to the episodes file); returns the number of comparisons.

    Each append is one write, so a kill leaves a question's episodes whole or absent; a kill
    between the two appends is mended on the next run by `pair_unpaired`."""
    append_jsonl(episodes_path(out), records)
    comps = question_pairs(question, records, judge, demo, demos_when)
    append_jsonl(out, [c.to_dict() for c in comps])
    return len(comps)


def pair_unpaired(
    out: str | Path,
    questions: Sequence[Question],
    judge: str,
    demos: dict[str, EpisodeRecord],
    demos_when: str = "always",
) -> int:
    """Append the comparisons of questions whose episodes were recorded but whose comparisons
    were not (a run killed between `record_question`'s two appends); returns how many.

    Pairing is a function of the episodes, so a resumed run writes what the killed run would
    have. Questions whose answers all agree have no comparisons and stay without."""
    if not episodes_path(out).exists():
        return 0
    paired = (
        {row.get("meta", {}).get("question_id") for row in read_jsonl(out)}
        if Path(out).exists()
        else set()
    )
    recorded = recorded_episodes(out, skip=paired)
    return _append_pairs(out, questions, recorded, judge, demos, demos_when)


def recorded_episodes(out: str | Path, skip=frozenset()) -> dict[str, list[EpisodeRecord]]:
    """Each question's recorded episodes, in sample order (questions in `skip` left out)."""
    by_question: dict[str, list[EpisodeRecord]] = {}
    for row in read_jsonl(episodes_path(out)):
        qid = row.get("meta", {}).get("question_id")
        if qid not in skip:
            by_question.setdefault(qid, []).append(EpisodeRecord.from_dict(row))
    for records in by_question.values():
        records.sort(key=lambda r: r.meta.get("sample", 0))
    return by_question


def _append_pairs(path, questions, recorded, judge, demos, demos_when) -> int:
    total = 0
    for q in questions:
        if records := recorded.get(q.id):
            comps = question_pairs(q, records, judge, demos.get(q.id), demos_when)
            append_jsonl(path, [c.to_dict() for c in comps])
            total += len(comps)
    return total


DEMOS_WHEN = ("always", "none-right")


def question_pairs(
    question: Question,
    records: list[EpisodeRecord],
    judge: str,
    demo: EpisodeRecord | None,
    demos_when: str = "always",
) -> list[Comparison]:
    """One question's comparisons: its sampled episodes, plus its demonstration if any.

    `demos_when="none-right"` adds the demonstration only when no sample is right: where the
    policy found the answer itself, the reward model learns from the policy's own right answer
    (what best-of-n must pick out), not from the expert's, which looks different."""
    if demos_when not in DEMOS_WHEN:
        raise ValueError(f"demos_when must be one of {DEMOS_WHEN}, got {demos_when!r}")
    if (
        demo
        and demos_when == "none-right"
        and any(gold_rank(r, question.aliases) > 0 for r in records)
    ):
        demo = None
    return pairs(question, [*records, demo] if demo else records, judge=judge)


def repair(
    out: str | Path,
    questions: Sequence[Question],
    judge: str,
    demos: dict[str, EpisodeRecord],
    demos_when: str = "always",
) -> int:
    """Pair the recorded episodes again into a fresh OUT (written beside, then swapped in)."""
    tmp = Path(str(out) + ".tmp")
    tmp.unlink(missing_ok=True)
    total = _append_pairs(tmp, questions, recorded_episodes(out), judge, demos, demos_when)
    tmp.touch()
    tmp.replace(out)
    return total


@dataclass
class CompareArgs:
    """Sample K episodes per question and pair their answers into comparisons (gold-judged or for `label`)."""

    dataset: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DATASET")]
    """Questions (any layout `eval` reads). Use training questions, never the evaluation set."""
    out: str = "runs/rm/comparisons.jsonl"
    """Comparisons are appended here; episodes go beside it (*.episodes.jsonl), and the sampling
    settings (*.config.json); reruns with the same settings resume."""
    policy: PolicyArgs = field(default_factory=PolicyArgs)
    """Candidates as best-of-n draws them, so the reward model learns on them: the first greedy,
    the rest at --temperature (0: `config.BEST_OF_TEMPERATURE`, 0.7)."""
    env: EnvArgs = field(default_factory=EnvArgs)
    samples: int = 4
    """Episodes per question (K: one greedy, K-1 sampled): up to K(K-1)/2 comparisons."""
    judge: str = "gold"
    """gold: label by the answer aliases now; none: leave for a person (`webagent label`)."""
    demos: str | None = None
    """Demonstrations (`webagent demos` output): each question's one joins its samples as a
    candidate, so wrong samples lose to a right answer instead of tying with each other."""
    demos_when: str = "always"
    """always | none-right: add the demonstration only to questions none of whose samples is
    right, so right answers the reward model sees are mostly the policy's own."""
    repair: bool = False
    """Pair the episodes already recorded beside OUT again (e.g. with new --demos); no sampling."""
    answers_from: str | None = None
    """Recorded episodes (`eval` results, `compare` or `demos` output): sample only answers, K per
    question (the first greedy, as whole episodes), each on one of the question's recorded
    browses in turn (WebGPT's answer-only episodes; ~16x cheaper per sample than whole
    episodes). Questions without one are skipped."""
    limit: int | None = None
    """Only the first N questions."""
    batch: int = 8
    """Episodes decoded together in one batch."""
    debug: bool = False
    """Show tracebacks."""

    def check(self) -> None:
        at_least(1, limit=self.limit, batch=self.batch)
        if self.judge not in ("gold", "none"):
            raise ValueError(f"--judge must be gold or none, got {self.judge!r}")
        if self.samples < 2:
            raise ValueError("--samples must be at least 2 to make pairs")
        if self.demos_when not in DEMOS_WHEN:
            raise ValueError(
                f"--demos-when must be one of {', '.join(DEMOS_WHEN)}, got {self.demos_when!r}"
            )


@dataclass
class CompareResult:
    """What a `compare` run wrote."""

    comparisons: int
    """New comparisons (with --repair: all of them, paired again)."""
    questions: int
    """Questions sampled this run."""
    mended: int = 0
    """Comparisons of episodes an interrupted run had recorded but not paired."""
    repaired: bool = False


def sample_comparisons(args: CompareArgs) -> CompareResult:
    """K episodes per question not yet done (whole, or answers on recorded browses; the first
    greedy, the rest sampled, as best-of-n), paired into comparisons appended to OUT question
    by question; reruns resume."""
    from tqdm import tqdm

    from webagent.config import load_policy, run_config
    from webagent.datasets import load_questions
    from webagent.rollout import best_of_tasks, grouped, reanswer, recorded_browses, run_episodes

    args.check()  # also run by the CLI before anything loads; here for library callers
    questions = load_questions(args.dataset, require_answers=args.judge == "gold")[: args.limit]
    demos = demonstrations(args.demos)
    if args.repair:
        total = repair(args.out, questions, args.judge, demos, args.demos_when)
        return CompareResult(total, 0, repaired=True)
    check_settings(args)
    browses: dict[str, list] = {}  # read before loading the model: a bad file fails at once
    for r in recorded_browses(args.answers_from) if args.answers_from else ():
        browses.setdefault(r.meta.get("question_id"), []).append(r)
    mended = pair_unpaired(args.out, questions, args.judge, demos, args.demos_when)
    done = done_questions(args.out)
    todo = [q for q in questions if q.id not in done]
    policy = load_policy(args.policy)
    k = args.samples
    position = {q.id: n for n, q in enumerate(questions)}
    temperature = best_of_temperature(args.policy)

    def candidates(q: Question):
        """Q's K tasks, seeded by its position in the whole question set (not in `todo`)."""
        tasks = best_of_tasks(
            q.question, k, temperature, meta={"question_id": q.id}, seed=position[q.id] * k
        )
        for t in tasks:
            t.meta["sample"] = t.meta["candidate"]  # the order `recorded_episodes` restores
        return tasks

    def sampled() -> Iterator[tuple[Question, list[EpisodeRecord] | None]]:
        """Each to-do question with its K episodes (None: it has no recorded browse)."""
        if args.answers_from:
            config = run_config(args.policy, args.batch)
            for q in todo:
                mine = browses.get(q.id)
                if not mine:
                    yield q, None
                    continue
                chosen = [mine[j % len(mine)] for j in range(k)]
                tasks = candidates(q)
                records = reanswer(
                    policy,
                    chosen,
                    [t.seed for t in tasks],
                    config,
                    temperatures=[t.temperature for t in tasks],
                )
                for r, t in zip(records, tasks, strict=True):
                    r.meta.update(t.meta)
                yield q, records
            return
        tasks = [t for q in todo for t in candidates(q)]
        make_env, config = args.env.env_factory(), run_config(args.policy, args.batch)
        for qi, records in grouped(run_episodes(policy, tasks, make_env, config), k):
            yield todo[qi], records

    total = 0
    initial = len(questions) - len(todo)
    with tqdm(total=len(questions), initial=initial, desc="compare", unit="q") as bar:
        for q, records in sampled():
            if records is not None:
                total += record_question(
                    args.out, q, records, args.judge, demos.get(q.id), args.demos_when
                )
            bar.update(1)
            bar.set_postfix(comparisons=total)
    return CompareResult(total, len(todo), mended=mended)
