"""Reward models on the same comparisons, in one table: held-out accuracy next to the
length-bias baselines ("prefer the longer answer", "prefer more quotes"), the correlation
between reward and answer length, and training time.

    .venv/bin/python bench/reward_models.py runs/rm/comparisons.jsonl            # MiniLM and Gemma bodies
    .venv/bin/python bench/reward_models.py runs/rm/comparisons.jsonl --bodies all-minilm-l6-v2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from reward.train_rm import Args, main
from webagent.models import body_dir


def run() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("comparisons", nargs="?", default="runs/rm/comparisons.jsonl")
    ap.add_argument("--bodies", nargs="+", default=["all-minilm-l6-v2", "gemma3-270m"])
    ap.add_argument("--out", default="runs/rm")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--val-fraction", type=float, default=0.15, help="share of questions held out")
    ap.add_argument("--quick", action="store_true", help="MiniLM only, 1 epoch")
    args = ap.parse_args()
    if not Path(args.comparisons).exists():
        print(f"skipped: {args.comparisons} not found (make it with `webagent compare`)")
        return
    if args.quick:
        args.bodies, args.epochs = ["all-minilm-l6-v2"], 1
    rows = []
    for body in args.bodies:
        big = body != "all-minilm-l6-v2"
        t0 = time.time()
        meta = main(
            Args(
                comparisons=args.comparisons,
                out=f"{args.out}/{body}",
                model=str(body_dir(body)),
                epochs=args.epochs,
                lora=big,
                val_fraction=args.val_fraction,
                learning_rate=1e-4 if big else 5e-5,
                batch_size=8,
            )
        )
        rows.append((body, meta["validation"], meta["comparisons"], time.time() - t0))
    print(
        "\n| body | train / val comparisons | val accuracy | longer-answer | more-quotes | corr(reward, length) | seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    for body, v, n, secs in rows:
        corr = v.get("reward_length_correlation")  # None: undefined (train_rm.pearson)
        print(
            f"| {body} | {n['train']} / {v.get('n', 0)} non-tied | {v.get('accuracy', float('nan')):.3f} | "
            f"{v.get('longer_answer_accuracy', float('nan')):.3f} | {v.get('more_quotes_accuracy', float('nan')):.3f} | "
            f"{'—' if corr is None else f'{corr:+.3f}'} | {secs:.0f} |"
        )
    print(json.dumps({b: v for b, v, _, _ in rows}, indent=1))


if __name__ == "__main__":
    run()
