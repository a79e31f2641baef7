"""Best-of-n on a question set: EM of best-of-1, 2, 4, … n, with seconds per question, for one or
more reward models ranking the same sampled candidates.

    .venv/bin/python bench/best_of_n.py --rms runs/rm/all-minilm-l6-v2 runs/rm/gemma3-270m --limit 60
    .venv/bin/python bench/best_of_n.py --rms runs/rm/all-minilm-l6-v2 --limit 5 --n 2   # smoke run
    .venv/bin/python bench/best_of_n.py --policies bc-gemma3-270m runs/ppo --rms runs/rm/gemma \
        --n 4 --greedy --limit 40 --out runs/bench-ppo   # BC against BC+PPO (issue 7's table)
    .venv/bin/python bench/best_of_n.py --rms webagent/policies/rm-gemma3-270m \
        --runs runs/dev-greedy runs/dev-t07-s1 … runs/dev-t07-s7   # plain eval runs as candidates

The candidates are sampled once, by an ordinary resumable `webagent eval --best-of N` run (its
--rm picks there: `--sample-rm`, else the first of `--rms`); every other reward model rescores
the same episodes, so the rows differ only in the judge. Best-of-k reads the first k candidates of each question; its
s/question is those k episodes' share of the batched compute plus scoring (WebGPT's question:
where does the compute-efficient n land for this model size?). Candidate 1 is the greedy
episode and the others are sampled at --temperature, so best-of-1 is greedy decoding; the judge
adds --vote-weight (default: each reward model's own) times a candidate's agreement with the
other k-1 to its reward, and the reward model's greedy bonus to the greedy candidate. `--runs
DIR…` skips sampling: each reward model reranks the candidates earlier runs kept. `oracle`
counts a question right when any of the k candidates is. With several `--policies` each samples
into OUT/<name>, and `EM / first` compares every row with the first policy's best-of-1 under the first reward
model; `--greedy` adds each policy's greedy (temperature 0) run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from env.record import read_jsonl
from webagent.config import BEST_OF_TEMPERATURE, MAX_ACTIONS, EnvArgs, PolicyArgs
from webagent.eval import EvalArgs, best_of_curve, rescore, run

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "triviaqa" / "dev.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default=str(DEV))
    ap.add_argument("--policies", nargs="+", default=["bc-gemma3-270m"])
    ap.add_argument("--rms", nargs="+", required=True, help="reward model dirs to compare")
    ap.add_argument(
        "--sample-rm",
        default=None,
        help="reward model of the sampling run (default: the first of --rms)",
    )
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument(
        "--temperature",
        type=float,
        default=BEST_OF_TEMPERATURE,
        help="the sampled candidates' temperature (the first candidate is greedy)",
    )
    ap.add_argument(
        "--vote-weight",
        type=float,
        default=None,
        help="weight of a candidate's agreement with the others, added to its reward "
        "(default: each reward model's own, reward.json best_of.vote_weight, else 0)",
    )
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-actions", type=int, default=MAX_ACTIONS)
    ap.add_argument("--greedy", action="store_true", help="also run each policy greedily")
    ap.add_argument("--out", default="runs/bench-best-of")
    ap.add_argument(
        "--no-int8",
        action="store_true",
        help="sample with fp32 weights; the figures in bench/README before 2026-11-28 are fp32",
    )
    ap.add_argument(
        "--runs",
        nargs="+",
        default=None,
        metavar="DIR",
        help="no sampling: every reward model reranks the candidates these earlier "
        "runs kept (their questions joined, a question's candidates from several runs "
        "one after another; best-of-k up to the fewest candidates). A plain eval run is one "
        "candidate per question: give the greedy run first, then sampled runs",
    )
    ap.add_argument(
        "--min-candidates",
        type=int,
        default=None,
        metavar="K",
        help="with --runs: only the questions with at least K candidates (e.g. those "
        "a second run sampled again, for best-of-8)",
    )
    args = ap.parse_args()
    if args.runs:  # the runs hold their questions: no dataset needed
        return rerank(args.runs, args.rms, Path(args.out), args.min_candidates, args.vote_weight)
    if not Path(args.dataset).exists():
        print(f"skipped: {args.dataset} not found (../shared/data is not beside the repo)")
        return
    from reward.model import RewardScorer

    sample_rm = args.sample_rm or args.rms[0]

    scorers = {rm: RewardScorer(rm) for rm in args.rms if rm != sample_rm}
    table, curves = [], {}
    for policy in args.policies:
        out = Path(args.out) if len(args.policies) == 1 else Path(args.out) / _name(policy)
        env = EnvArgs(max_actions=args.max_actions)
        if args.greedy:
            greedy = out.with_name(out.name + "-greedy")
            run(
                EvalArgs(
                    dataset=args.dataset,
                    out=str(greedy),
                    limit=args.limit,
                    policy=PolicyArgs(model=policy, temperature=0.0, int8=not args.no_int8),
                    env=env,
                )
            )
            rows = list(read_jsonl(greedy / "results.jsonl"))
            em = sum(r["em"] for r in rows) / len(rows)
            secs = sum(r["seconds"] for r in rows) / len(rows)
            table.append((policy, "greedy", "—", em, None, secs))
        run(
            EvalArgs(
                dataset=args.dataset,
                out=str(out),
                limit=args.limit,
                best_of=args.n,
                rm=sample_rm,
                vote_weight=args.vote_weight,
                policy=PolicyArgs(
                    model=policy, temperature=args.temperature, int8=not args.no_int8
                ),
                env=env,
            )
        )
        rows = list(read_jsonl(out / "results.jsonl"))
        for rm in args.rms:
            scored = rows if rm == sample_rm else rescore(rows, scorers[rm], args.vote_weight)
            curve = curves.setdefault(f"{policy} | {rm}", best_of_curve(scored))
            table += [
                (
                    policy,
                    f"best-of-{c['k']}",
                    _rm_name(rm),
                    c["em"],
                    c["oracle_em"],
                    c["seconds_per_question"],
                )
                for c in curve
            ]
    n = len(rows)
    print(f"\n1 greedy + T={args.temperature}, {n} questions, {args.max_actions} actions\n")
    first = next((r[3] for r in table if r[1] == "best-of-1"), 0)
    print(
        "| policy | decoding | reward model | EM | EM / first best-of-1 | oracle EM | s/question |"
    )
    print("|---|---|---|---|---|---|---|")
    for policy, decoding, rm, em, oracle, secs in table:
        ratio = f"{em / first:.2f}x" if first else "n/a"
        oracle = "—" if oracle is None else f"{oracle:.3f}"
        print(
            f"| {_name(policy)} | {decoding} | {rm} | {em:.3f} | {ratio} | {oracle} | {secs:.1f} |"
        )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "curves.json").write_text(json.dumps(curves, indent=2))


def rerank(
    runs: list[str],
    rms: list[str],
    out: Path,
    min_candidates: int | None = None,
    vote_weight: float | None = None,
) -> None:
    """Best-of-k of recorded candidates under each reward model (no sampling); `vote_weight`
    None: each reward model's own."""
    from reward.model import RewardScorer

    rows = join_runs(runs)
    if min_candidates:
        rows = [r for r in rows if len(r["candidates"]) >= min_candidates]
    curves = {}
    print(f"\n{len(rows)} questions from {', '.join(runs)}\n")
    print(
        "| reward model | best-of-k | EM | EM / best-of-1 | won / lost vs best-of-1 | oracle EM "
        "| s/question |"
    )
    print("|---|---|---|---|---|---|---|")
    for rm in rms:
        curve = curves[rm] = best_of_curve(rescore(rows, RewardScorer(rm), vote_weight))
        for c in curve:
            print(
                f"| {_rm_name(rm)} | {c['k']} | {c['em']:.3f} | "
                f"{c['em'] / curve[0]['em'] if curve[0]['em'] else 0:.2f}x | {c['won']} / {c['lost']} | "
                f"{c['oracle_em']:.3f} | {c['seconds_per_question']:.1f} |"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.json").write_text(json.dumps(curves, indent=2))


def join_runs(runs: list[str]) -> list[dict]:
    """The runs' rows, one per question: a question sampled by several runs (e.g. the same
    questions at another --seed) has their candidates one after another, in --runs order, so
    best-of-8 can be read off two best-of-4 runs. A plain `webagent eval` run (no best-of) is
    one candidate per question, its episode: a greedy run first, then runs at --temperature T
    with different --seed, are best-of-n's candidates (the judge treats the first as greedy)."""
    by_question: dict[str, dict] = {}
    for run_dir in runs:
        for r in read_jsonl(Path(run_dir) / "results.jsonl"):
            cands = r["candidates"] if "candidates" in r else [_candidate(r)]
            if (seen := by_question.get(r["question_id"])) is None:
                by_question[r["question_id"]] = {**r, "candidates": list(cands)}
            else:
                seen["candidates"] += cands
    return list(by_question.values())


def _candidate(row: dict) -> dict:
    """A plain eval row as one best-of candidate (`webagent.eval.best_of_row`'s keys; its
    scores come from `rescore`)."""
    keys = ("answer", "em", "supported", "actions", "seconds", "episode")
    return {**{k: row[k] for k in keys}, "score": 0.0}


def _rm_name(rm: str) -> str:
    """runs/rm2/gemma3-270m -> rm2/gemma3-270m: reward models often differ only in the run."""
    return "/".join(Path(rm).parts[-2:])


def _name(policy: str) -> str:
    return Path(policy).name or policy


if __name__ == "__main__":
    main()
