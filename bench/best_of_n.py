"""Best-of-n on a question set: EM of best-of-1, 2, 4, … n, with seconds per question, for one or
more reward models ranking the same sampled candidates.

    .venv/bin/python bench/best_of_n.py --rms runs/rm/all-minilm-l6-v2 runs/rm/gemma3-270m --limit 60
    .venv/bin/python bench/best_of_n.py --rms runs/rm/all-minilm-l6-v2 --limit 5 --n 2   # smoke run

The candidates are sampled once, by an ordinary resumable `webagent eval --best-of N` run (its
--rm picks there: `--sample-rm`, else the first of `--rms`); every other reward model rescores the same episodes, so the
rows differ only in the judge. Best-of-k reads the first k candidates of each question; its
s/question is those k episodes' share of the batched compute plus scoring (WebGPT's question:
where does the compute-efficient n land for this model size?). `oracle` counts a question right
when any of the k candidates is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from env.record import read_jsonl
from webagent.config import EnvArgs, PolicyArgs
from webagent.eval import EvalArgs, best_of_curve, rescore, run

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "triviaqa" / "dev.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default=str(DEV))
    ap.add_argument("--policy", default="bc-gemma3-270m")
    ap.add_argument("--rms", nargs="+", required=True, help="reward model dirs to compare")
    ap.add_argument("--sample-rm", default=None,
                    help="reward model of the sampling run (default: the first of --rms)")  # fmt: skip
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.3)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-actions", type=int, default=10)
    ap.add_argument("--out", default="runs/bench-best-of")
    args = ap.parse_args()
    if not Path(args.dataset).exists():
        print(f"skipped: {args.dataset} not found (../shared/data is not beside the repo)")
        return
    out = Path(args.out)
    sample_rm = args.sample_rm or args.rms[0]
    run(EvalArgs(dataset=args.dataset, out=str(out), limit=args.limit, best_of=args.n, rm=sample_rm,
                 policy=PolicyArgs(model=args.policy, temperature=args.temperature),
                 env=EnvArgs(max_actions=args.max_actions)))  # fmt: skip
    rows = list(read_jsonl(out / "results.jsonl"))
    from reward.model import RewardScorer

    curves = {}
    for rm in args.rms:
        scored = rows if rm == sample_rm else rescore(rows, RewardScorer(rm))
        curves[rm] = best_of_curve(scored)
    print(
        f"\n{args.policy}, T={args.temperature}, {len(rows)} questions, {args.max_actions} actions\n"
    )
    print("| reward model | k | EM | EM / best-of-1 | oracle EM | s/question |")
    print("|---|---|---|---|---|---|")
    for rm, curve in curves.items():
        base = curve[0]["em"] if curve else 0
        for c in curve:
            ratio = f"{c['em'] / base:.2f}x" if base else "n/a"
            print(f"| {Path(rm).name} | {c['k']} | {c['em']:.3f} | {ratio} | {c['oracle_em']:.3f} | "
                  f"{c['seconds_per_question']:.1f} |")  # fmt: skip
    (out / "curves.json").write_text(json.dumps(curves, indent=2))


if __name__ == "__main__":
    main()
