"""PPO runs side by side: their logs averaged over blocks of iterations, and each run's plot.

    .venv/bin/python bench/ppo_log.py runs/ppo2 runs/ppo3 --block 5

A run's per-iteration reward is noisy (32 sampled answers), so the table averages blocks of
`--block` iterations; `reward gain` is the last block's mean reward minus the first block's, in
the reward model's raw units. KL is nats per episode against the frozen BC policy. The runs
themselves come from `webagent train ppo` (see bench/README.md, PPO, for the commands).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ("reward", "kl", "entropy", "clipfrac", "explained_variance", "em", "seconds")


def blocks(log: list[dict], size: int) -> list[dict]:
    out = []
    for start in range(0, len(log), size):
        part = log[start : start + size]
        row = {"iterations": f"{part[0]['iteration']}-{part[-1]['iteration']}"}
        for key in COLUMNS:
            values = [r[key] for r in part if r.get(key) is not None]
            row[key] = sum(values) / len(values) if values else float("nan")
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("runs", nargs="+", help="PPO output directories (each with log.jsonl)")
    ap.add_argument("--block", type=int, default=5)
    args = ap.parse_args()
    print(
        "| run | kl_coef | iterations | reward | KL | entropy | clip frac | expl. var | EM | s/iteration |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    gains = []
    for run in args.runs:
        path = Path(run) / "log.jsonl"
        if not path.exists():
            print(f"| {run} | — | no log.jsonl yet | | | | | | | |")
            continue
        log = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        kl_coef = log[0].get("kl_coef")
        rows = blocks(log, args.block)
        for r in rows:
            print(
                f"| {Path(run).name} | {kl_coef} | {r['iterations']} | {r['reward']:.3f} | {r['kl']:.2f} | "
                f"{r['entropy']:.3f} | {r['clipfrac']:.3f} | {r['explained_variance']:.2f} | "
                f"{r['em']:.3f} | {r['seconds']:.0f} |"
            )
        gains.append((Path(run).name, rows[-1]["reward"] - rows[0]["reward"], rows[-1]["kl"]))
    print()
    for name, gain, kl in gains:
        print(
            f"{name}: reward gain {gain:+.3f} (last block - first), KL of the last block {kl:.2f} nats"
        )


if __name__ == "__main__":
    main()
