"""EM on a question set for each mode in one table: closed-book, retrieve-then-read, few-shot
browsing by the base model, browsing by the behaviour-cloned policy (each browse mode also
without the admissible-action decoding aid: `-free`, where invalid commands show).

    .venv/bin/python bench/eval_modes.py                      # all 300 dev questions (~1 h here)
    .venv/bin/python bench/eval_modes.py --limit 30 --quick   # a smoke run
    .venv/bin/python bench/eval_modes.py --model smollm2-135m --out runs/bench-eval-smol
    .venv/bin/python bench/eval_modes.py --modes bc bc-free browse-free --limit 100

Each mode is an ordinary resumable `webagent eval` run under --out/<mode>; rerunning continues
where a previous run stopped. The table is `webagent eval --compare` over the runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from webagent.config import MAX_ACTIONS, EnvArgs, PolicyArgs
from webagent.eval import EvalArgs, compare, run

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "triviaqa" / "dev.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default=str(DEV))
    ap.add_argument("--model", default="gemma3-270m", help="base model (few-shot modes)")
    ap.add_argument("--policy", default="bc-gemma3-270m", help="trained policy (bc modes)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default="runs/bench-eval")
    ap.add_argument("--max-actions", type=int, default=MAX_ACTIONS)
    ap.add_argument(
        "--modes",
        nargs="+",
        default=["closed-book", "rag-3", "browse", "bc"],
        help="closed-book rag-K browse browse-free bc bc-free",
    )
    ap.add_argument("--quick", action="store_true", help="10 questions, 6 actions")
    ap.add_argument(
        "--no-int8",
        action="store_true",
        help="sample with fp32 weights; the figures in bench/README before 2026-11-28 are fp32",
    )
    args = ap.parse_args()
    if args.quick:
        args.limit, args.max_actions = args.limit or 10, 6
    if not Path(args.dataset).exists():
        print(f"skipped: {args.dataset} not found (../shared/data is not beside the repo)")
        return
    dirs = []
    for mode in args.modes:
        out = Path(args.out) / mode
        free = mode.endswith("-free")
        model = args.policy if mode.startswith("bc") else args.model
        common = dict(
            dataset=args.dataset,
            out=str(out),
            limit=args.limit,
            policy=PolicyArgs(model=model, admissible_only=not free, int8=not args.no_int8),
            env=EnvArgs(max_actions=args.max_actions),
        )
        if mode == "closed-book":
            run(EvalArgs(**common, closed_book=True))
        elif mode.startswith("rag-"):
            run(EvalArgs(**common, rag=int(mode.split("-")[1])))
        elif mode in ("browse", "browse-free", "bc", "bc-free"):
            run(EvalArgs(**common))
        else:
            raise SystemExit(f"unknown mode {mode}")
        dirs.append(str(out))
    target = compare(dirs, str(Path(args.out) / "compare"))
    print((target / "compare.md").read_text().split("![")[0])
    summaries = {Path(d).name: json.loads((Path(d) / "summary.json").read_text()) for d in dirs}
    if "closed-book" in summaries:
        base = summaries["closed-book"]["em"]
        for name, s in summaries.items():
            ratio = f"{s['em'] / base:.2f}x" if base else "n/a"
            print(
                f"{name}: EM {s['em']:.3f} ({ratio} closed-book), {s['seconds_per_question']:.2f} s/question"
            )


if __name__ == "__main__":
    main()
