"""Answer phase alone: re-answer the quotes recorded in an eval run with each policy.

    .venv/bin/python bench/reanswer.py runs/bench-eval/bc/results.jsonl \
        --policies bc-gemma3-270m runs/bc/policy --limit 150

Every policy sees the same questions and quotes (greedy), so the table isolates how well each
answers from given quotes (the stage-2 variants in bench/README were chosen this way). `copied`:
share of answers found in the quotes; ratios are EM over the first policy's, in one run.
"""

from __future__ import annotations

import argparse
import json
import time

from webagent.answers import strip_citations
from webagent.config import PolicyArgs, load_policy
from webagent.metrics import exact_match, normalize


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("results", help="results.jsonl of a `webagent eval` browse run")
    ap.add_argument("--policies", nargs="+", default=["bc-gemma3-270m"])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    with open(args.results) as f:
        rows = [json.loads(line) for line in f][: args.limit]
    items = []
    for r in rows:
        answer = [s for s in r.get("episode", {}).get("steps", []) if s["phase"] == "answer"]
        if answer:
            items.append((r["aliases"], answer[0]["observation"]))
    print(f"{len(rows)} questions, {len(items)} with quotes to answer from\n")
    print("| policy | EM | vs first | copied | s/question |\n|---|---|---|---|---|")
    first = None
    for spec in args.policies:
        policy = load_policy(PolicyArgs(model=spec))
        prompts = [policy.prompt("answer", obs) for _, obs in items]
        t0, outs = time.perf_counter(), []
        for i in range(0, len(prompts), args.batch):
            outs += policy.generate(prompts[i : i + args.batch], max_new_tokens=32)
        seconds = (time.perf_counter() - t0) / max(1, len(rows))
        em = copied = 0.0
        for (aliases, obs), gen in zip(items, outs, strict=True):
            answer = normalize(strip_citations(gen.text))
            em += exact_match(gen.text and strip_citations(gen.text), aliases)
            copied += bool(answer) and answer in normalize(obs.split("Quotes", 1)[-1])
        em /= max(1, len(rows))
        first = em if first is None else first
        ratio = f"{em / first:.2f}" if first else "—"
        print(
            f"| {spec} | {em:.3f} | {ratio} | {copied / max(1, len(items)):.2f} | {seconds:.2f} |"
        )


if __name__ == "__main__":
    main()
