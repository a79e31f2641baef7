"""`webagent`: the command line. Each subcommand parses one dataclass and makes library calls.

    webagent ask "Which river flows through Baghdad?"        # browse, then answer with citations
    webagent ask "…" --json --model smollm2-135m --source zim:fixtures/zim/wikipedia_en_ray_charles_mini.zim
    webagent repl                                            # question after question; :drive, :why, :save
    webagent replay episodes.jsonl --html transcript.html    # offline, checks every observation
    webagent label runs/rm/comparisons.jsonl                 # judge answer pairs: 1, 2, t(ie), s(kip)

Errors print one line and exit non-zero; `--debug` shows the traceback instead. Flags, the
question and output paths are checked first (`check_flags`), before a source opens or a model
loads.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Annotated

import tyro

from webagent.compare import CompareArgs
from webagent.config import ASK_MAX_ACTIONS, EnvArgs, PolicyArgs, at_least
from webagent.dagger import DaggerArgs
from webagent.demos import DemosArgs
from webagent.eval import EvalArgs
from webagent.reader import ReaderPairsArgs


@dataclass
class AskArgs:
    """Answer one question: the browsing is shown as it happens, then the answer and references."""

    question: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="QUESTION")]
    """The question to answer."""
    policy: PolicyArgs = field(default_factory=PolicyArgs)
    env: EnvArgs = field(default_factory=lambda: EnvArgs(max_actions=ASK_MAX_ACTIONS))
    json: bool = False
    """Print one JSON object {question, answer, references, actions} and nothing else."""
    record: str | None = None
    """Append the full episode record to this JSON-lines file."""
    best_of: int = 1
    """N episodes (batched), the judge keeping one: the first greedy, the others sampled at
    --temperature (0: `config.BEST_OF_TEMPERATURE`), each scored by the reward model plus
    --vote-weight times its agreement with the others."""
    rm: str | None = None
    """Reward model for --best-of: a directory (`webagent train rm`) or a shipped name.
    Default: the shipped one (`webagent.config.DEFAULT_RM`)."""
    vote_weight: float | None = None
    """--best-of: weight of a candidate's agreement with the others (share giving the same
    answer) added to its reward; default: the reward model's own (reward.json
    best_of.vote_weight, else 0)."""
    debug: bool = False
    """Show tracebacks."""

    def check(self) -> None:
        from env.questions import check_question
        from env.record import check_writable

        check_question(self.question)
        at_least(1, best_of=self.best_of)
        if self.vote_weight is not None:
            from reward.best_of_n import check_vote_weight

            check_vote_weight(self.vote_weight)
        if self.record:
            check_writable(self.record)


@dataclass
class ReplArgs:
    """Ask question after question; `:drive` to browse yourself, `:why`, `:save FILE`."""

    policy: PolicyArgs = field(default_factory=PolicyArgs)
    env: EnvArgs = field(default_factory=lambda: EnvArgs(max_actions=ASK_MAX_ACTIONS))
    debug: bool = False
    """Show tracebacks."""


@dataclass
class ReplayArgs:
    """Re-execute recorded episodes from the page cache (no network) and check each observation."""

    file: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="FILE")]
    """JSON-lines file of episode records."""
    html: str | None = None
    """Also write a self-contained HTML transcript here."""
    page_cache: str | None = None
    """Page cache directory the episodes were recorded with (default: the user cache)."""
    quiet: bool = False
    """Print only the verdict per episode, not the transcript."""
    debug: bool = False
    """Show tracebacks."""

    def check(self) -> None:
        from env.record import check_writable

        if self.html:
            check_writable(self.html)


def check_flags(args: object) -> None:
    """Every `check()` of the parsed arguments and their nested blocks (--policy.*, --env.*):
    flags that make no sense fail here, before a source opens or a model loads."""
    for f in fields(args):  # type: ignore[arg-type]
        value = getattr(args, f.name)
        if is_dataclass(value) and hasattr(value, "check"):
            value.check()
    if hasattr(args, "check"):
        args.check()


def loading(policy: PolicyArgs) -> str:
    """What a run loads, as the user is told while waiting: the policy, and its reader."""
    reader = policy.reader_spec
    return policy.model + (f" and the reader {reader}" if reader else "")


def ask(args: AskArgs) -> int:
    from env.record import append_jsonl
    from webagent.answers import describe_step, format_answer, to_json
    from webagent.config import best_of_rm, load_policy, run_config

    args.rm = best_of_rm(args.best_of, args.rm)  # before the policy loads
    make_env = args.env.env_factory()
    if not args.json:
        print(f"Loading {loading(args.policy)} …", file=sys.stderr, flush=True)
    policy = load_policy(args.policy)
    if args.best_of > 1:
        return _ask_best_of(args, policy, make_env)
    from webagent.rollout import run_one

    show = (
        None
        if args.json
        else (lambda i, rec, phase: print(describe_step(rec, len(rec.steps) - 1), flush=True))
    )
    record = run_one(
        policy, args.question, make_env, run_config(args.policy, batch_size=1), on_step=show
    )
    if args.json:
        print(json.dumps(to_json(record), ensure_ascii=False), flush=True)
    else:
        print()
        print(format_answer(record), flush=True)
    if args.record:  # after the answer is out: a failing write must not swallow it
        append_jsonl(args.record, [record])
    return 0


def _ask_best_of(args: AskArgs, policy, make_env) -> int:
    """N episodes of the same question in one batch; the judge picks the answer."""
    from env.record import append_jsonl
    from reward.best_of_n import rank
    from reward.model import RewardScorer
    from webagent.answers import format_answer, to_json
    from webagent.config import best_of_temperature, run_config
    from webagent.rollout import best_of_tasks, grouped, run_episodes

    # candidate 0 is the greedy episode (best-of-1 is the plain policy); the others are
    # sampled, warm enough to differ, so the vote among them means something (config.py)
    temperature = best_of_temperature(args.policy)
    config = run_config(args.policy, batch_size=min(args.best_of, 8))
    scorer = RewardScorer(args.rm)
    if not args.json:
        print(
            f"Playing {args.best_of} episodes (1 greedy, {args.best_of - 1} at temperature "
            f"{temperature}) …",
            file=sys.stderr,
            flush=True,
        )
    tasks = best_of_tasks(args.question, args.best_of, temperature)
    ((_, records),) = grouped(run_episodes(policy, tasks, make_env, config), args.best_of)
    ranked = rank(args.question, records, scorer, vote_weight=args.vote_weight)
    best = records[ranked.best]
    candidates = [
        {
            "answer": r.answer,
            "temperature": r.meta.get("temperature"),
            **ranked.judged(i),
            "actions": len([x for x in r.steps if x.phase == "browse"]),
        }
        for i, r in enumerate(records)
    ]
    if args.json:
        print(
            json.dumps(
                {
                    **to_json(best),
                    "best": ranked.best,
                    "vote_weight": ranked.vote_weight,
                    "greedy_bonus": ranked.greedy_bonus,
                    "candidates": candidates,
                },
                ensure_ascii=False,
            )
        )
    else:
        print(f"  {'reward':>7} {'agree':>5} {'final':>7}  T    answer")
        for i, c in enumerate(candidates):
            mark = "*" if i == ranked.best else " "
            print(
                f"{mark} {c['score']:+7.3f} {c['agreement']:5.2f} {c['final']:+7.3f}  "
                f"{c['temperature']:<4} {c['answer'] or '(no answer)'}"
            )
        print(
            f"(final = reward + {ranked.vote_weight:g} × agreement, "
            f"+ {ranked.greedy_bonus:g} for the greedy candidate)"
        )
        print()
        print(format_answer(best), flush=True)
    if args.record:  # after the answer is out: a failing write must not swallow it
        append_jsonl(args.record, records)
    return 0


def repl(args: ReplArgs) -> int:
    from webagent.config import load_policy, run_config
    from webagent.repl import Repl
    from webagent.rollout import run_one

    make_env = args.env.env_factory()
    policies = []

    def ask_one(question, on_step):
        if not policies:
            print(f"(loading {loading(args.policy)} …)", flush=True)
            policies.append(load_policy(args.policy))
        config = run_config(args.policy, batch_size=1)
        return run_one(
            policies[0], question, make_env, config, on_step=lambda i, rec, phase: on_step(rec)
        )

    Repl(make_env, ask_one).run()
    return 0


def replay(args: ReplayArgs) -> int:
    from env.cache import PageCache
    from env.record import read_records
    from webagent.replay import check_cache, transcript, write_html
    from webagent.replay import replay as replay_one

    cache = PageCache(args.page_cache)
    records = list(read_records(args.file, skip_partial_tail=False))
    if not records:
        raise ValueError(f"{args.file} holds no episode records")
    failures = 0
    for record in records:
        problems = check_cache(record, cache)
        result = None if problems else replay_one(record, cache)
        if not args.quiet:
            print(transcript(record))
        if problems or (result and not result.ok):
            failures += 1
            for p in problems or result.mismatches:  # type: ignore[union-attr]
                print(f"REPLAY MISMATCH {record.id}: {p}")
        else:
            print(f"replayed {record.id}: {len(record.steps)} steps identical")
        if not args.quiet:
            print()
    if args.html:
        print(f"wrote {write_html(records, cache, args.html)}")
    if failures:
        print(f"{failures} of {len(records)} episodes did not replay identically", file=sys.stderr)
        return 1
    return 0


@dataclass
class EvalCliArgs(EvalArgs):
    """Evaluate on a question set: the browsing agent, --closed-book, --rag K; or --compare runs."""

    dataset: Annotated[str | None, tyro.conf.Positional, tyro.conf.arg(metavar="DATASET")] = None
    """Questions: our JSONL, the official TriviaQA JSON, or NQ-open JSONL (format detected)."""
    debug: bool = False
    """Show tracebacks."""

    def check(self) -> None:
        at_least(1, batch=self.batch, limit=self.limit, best_of=self.best_of)
        at_least(0, rag=self.rag)


def evaluate(args: EvalCliArgs) -> int:
    from webagent.eval import compare, run

    if args.compare:
        target = compare(args.compare, args.out)
        print((target / "compare.md").read_text())
        return 0
    out = run(args)
    print((out / "report.md").read_text().split("![")[0].rstrip())
    print(f"\nwrote {out}/results.jsonl, summary.json, report.md, plot.png")
    return 0


def demos(args: DemosArgs) -> int:
    from webagent.demos import demo_stats, export, record_demonstrations

    if args.stats:
        print("\n".join(demo_stats(args)))
        return 0

    def progress(done: int, todo: int, kept: int) -> None:
        if done % 50 == 0:
            print(f"{done}/{todo} questions, {kept} demonstrations", file=sys.stderr, flush=True)

    kept, todo = record_demonstrations(args, progress)
    print(f"{kept} demonstrations from {todo} questions -> {args.out}")
    if args.export:
        print(f"{export(args.out, args.export)} prompt/completion rows -> {args.export}")
    return 0


def dagger_cmd(args: DaggerArgs) -> int:
    from webagent.dagger import run

    print("\n".join(run(args)))
    return 0


def reader_pairs_cmd(args: ReaderPairsArgs) -> int:
    from webagent.reader import main_pairs

    print("\n".join(main_pairs(args)))
    return 0


def compare_cmd(args: CompareArgs) -> int:
    from webagent.compare import sample_comparisons

    result = sample_comparisons(args)
    if result.repaired:
        print(f"{result.comparisons} comparisons from the recorded episodes -> {args.out}")
        return 0
    if result.mended:
        print(f"{result.mended} comparisons of episodes an interrupted run recorded -> {args.out}")
    print(f"{result.comparisons} comparisons from {result.questions} questions -> {args.out}")
    return 0


@dataclass
class LabelArgs:
    """Label comparisons in the terminal: two answers side by side, one key each; reruns resume."""

    file: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="FILE")]
    """Comparisons (JSON lines, e.g. from `webagent compare --judge none`); labels go beside it."""
    labeler: str = "human"
    """Name recorded with each label."""
    debug: bool = False
    """Show tracebacks."""


def label_cmd(args: LabelArgs) -> int:
    from reward.label import label, labels_path

    label(args.file, labeler=args.labeler)
    print(f"labels are saved in {labels_path(args.file)}")
    return 0


COMMANDS = {
    "ask": (AskArgs, ask),
    "repl": (ReplArgs, repl),
    "replay": (ReplayArgs, replay),
    "eval": (EvalCliArgs, evaluate),
    "demos": (DemosArgs, demos),
    "dagger": (DaggerArgs, dagger_cmd),
    "reader-pairs": (ReaderPairsArgs, reader_pairs_cmd),
    "compare": (CompareArgs, compare_cmd),
    "label": (LabelArgs, label_cmd),
}


TRAINERS = {"bc": "webagent.train_bc", "rm": "reward.train_rm", "ppo": "webagent.train_ppo"}
"""`webagent train NAME …` runs the trainer module's own CLI (one file per algorithm)."""


def train(argv: list[str]) -> int:
    import importlib

    if not argv or argv[0] not in TRAINERS:
        print(f"usage: webagent train {{{','.join(TRAINERS)}}} [-h] …", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    module = importlib.import_module(TRAINERS[argv[0]])
    sys.argv[0] = f"webagent train {argv[0]}"
    args = tyro.cli(module.Args, args=argv[1:], config=(tyro.conf.OmitArgPrefixes,))
    try:
        if argv[0] == "rm":  # reward/ knows HF directories only; webagent resolves model names
            from pathlib import Path

            from webagent.models import body_dir

            name, args.model = args.model, str(body_dir(args.model))
            # a reward model records its base by name (a directory by its absolute path)
            module.main(args, base_name=args.model if Path(name).exists() else name)
        else:
            module.main(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"webagent train {argv[0]}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        return train(argv[1:])
    args = tyro.extras.subcommand_cli_from_dict(
        {name: cls for name, (cls, _) in COMMANDS.items()},
        args=argv,
        prog="webagent",
        config=(tyro.conf.OmitArgPrefixes,),  # --model, not --policy.model
    )
    run = next(fn for cls, fn in COMMANDS.values() if isinstance(args, cls))
    try:
        check_flags(args)
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI's one catch-all: a clear line, traceback on --debug
        if getattr(args, "debug", False):
            raise
        print(f"webagent: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
