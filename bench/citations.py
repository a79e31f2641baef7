"""The citation gate: which citations a threshold on the policy's answer log-probability keeps.

    .venv/bin/python bench/citations.py runs/train-eval          # sweep, and the threshold to ship
    .venv/bin/python bench/citations.py runs/dev --at -0.75      # one threshold on another run

An eval run (`webagent eval DATA --out DIR`) records each answer step's completion and the
log-probability of every token the policy wrote. This script replays the gate offline on those
records: for each answer as the policy wrote it, the word check of `env.citations` (what the
run applies anyway), then the gate (`webagent.rollout.confident`) at each threshold. It
prints, per threshold, the answers that keep a citation, how many of them are supported (right,
and a cited quote holds an alias: `webagent.metrics.supported`), citation precision (supported /
citing) and supported over all questions. Gated or not when it ran, a run gives the same table:
it is recomputed from the completion.

`--rescore` scores each citing answer's recorded completion again under the policy loaded here
(`--model`, `--no-int8`), teacher-forced, one forward pass each: the table for another
arithmetic (the default agent samples in int8; `--no-int8` is fp32, whose log-probabilities
run ~0.4 nats higher on the same answer) without replaying the episodes.

The threshold to ship maximises `net`, supported minus unsupported citations among the answers
that keep one (ties: the lower threshold): an unsupported citation costs as much as a supported
one gains (a citation that does not support the answer is worse than none), so a citation stays
where it is more likely supported than not. `--precision P` picks instead the threshold keeping the most
supported answers at citation precision >= P. Pick it on train questions (the policy's own
answers there); read dev only to report (`--at`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from env.citations import check
from env.record import EpisodeRecord
from webagent.answers import cited
from webagent.metrics import supported
from webagent.prompts import completion_to_action

GRID = (0.0, -0.25, -0.5, -0.75, -1.0, -1.25, -1.5, -2.0, -3.0, -5.0)


def answers(run: Path, score=None) -> list[tuple[float | None, bool]]:
    """(log-probability of what the policy wrote, supported) for each answer that cites after
    the word check; the score None when the step recorded no log-probabilities. `score(step)`
    replaces the recorded log-probability."""
    out = []
    with open(run / "results.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if "episode" not in row:  # closed-book and rag-K rows: no answer step to gate
                continue
            record = EpisodeRecord.from_dict(row["episode"])
            step = record.answer_step
            if step is None or not step.completion:
                continue
            written = completion_to_action(step.completion)
            checked = check(written, record.quotes, record.question).answer
            if not cited(checked):
                continue
            extracts = [q.extract for q in record.quotes]
            ok = bool(supported(checked, row["aliases"], extracts))
            if score is not None:
                out.append((score(step), ok))
            else:
                out.append((sum(step.logprobs) if step.logprobs else None, ok))
    return out


def teacher_forced(model: str, int8: bool):
    """step -> the log-probability the policy loaded here gives the step's recorded completion
    tokens after its recorded prompt (temperature 1, as greedy episodes record them)."""
    import torch

    from webagent.config import PolicyArgs, load_policy

    policy = load_policy(PolicyArgs(model=model, int8=int8))

    @torch.no_grad()
    def score(step) -> float:
        prompt = policy.encode(step.prompt)
        ids = torch.tensor([prompt + list(step.token_ids)])
        logits = policy.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        return float(logp.gather(1, ids[0, len(prompt) :, None]).sum())

    return score


def auc(items: list[tuple[float, bool]]) -> float:
    """P(a supported answer scores above an unsupported one), ties half."""
    pos = [s for s, ok in items if ok]
    neg = [s for s, ok in items if not ok]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def row(items: list[tuple[float, bool]], questions: int, threshold: float | None) -> list[str]:
    kept = [ok for s, ok in items if threshold is None or s >= threshold]
    sup = sum(kept)
    return [
        "none" if threshold is None else f"{threshold:.2f}",
        str(len(kept)),
        str(sup),
        f"{sup / len(kept):.3f}" if kept else "-",
        str(2 * sup - len(kept)),
        f"{sup / questions:.3f}",
        f"{len(kept) / questions:.3f}",
    ]


def best(items: list[tuple[float, bool]], precision: float | None) -> float | None:
    """Among the recorded scores, the threshold with the highest net (supported minus
    unsupported kept; ties: the lower threshold, which keeps more supported answers), or with
    `precision` the one keeping the most supported answers at precision >= `precision` (ties:
    the higher). None when none qualifies."""
    choice, most = None, None
    for t in sorted({s for s, _ in items}, reverse=True):
        kept = [ok for s, ok in items if s >= t]
        if precision is None:
            value = 2 * sum(kept) - len(kept)
        elif sum(kept) / len(kept) >= precision:
            value = sum(kept)
        else:
            continue
        if most is None or value > most or (value == most and precision is None):
            choice, most = t, value
    return choice


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="an eval run directory (results.jsonl)")
    parser.add_argument("--precision", type=float, help="choose by this citation precision")
    parser.add_argument("--at", type=float, nargs="*", default=[], help="thresholds to show too")
    parser.add_argument("--rescore", action="store_true", help="score again under --model")
    parser.add_argument("--model", default="bc-gemma3-270m", help="the policy --rescore loads")
    parser.add_argument("--no-int8", action="store_true", help="--rescore in fp32")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for --rescore")
    args = parser.parse_args()
    if not (args.run / "results.jsonl").is_file():
        parser.error(f"{args.run} is not an eval run directory (no results.jsonl)")
    score = None
    if args.rescore:
        import torch

        torch.set_num_threads(args.threads)
        score = teacher_forced(args.model, not args.no_int8)
    with open(args.run / "results.jsonl", encoding="utf-8") as f:
        questions = sum(1 for _ in f)
    scored = answers(args.run, score)
    if not scored:
        print(f"{args.run}: no answer cites a quote, so there is nothing to gate", file=sys.stderr)
        return 1
    items = [(s, ok) for s, ok in scored if s is not None]
    print(
        f"{args.run}: {questions} questions, {len(scored)} answers cite after the word check, "
        f"{sum(ok for _, ok in scored)} of them supported; "
        f"AUC of the log-probability {auc(items):.3f} ({len(scored) - len(items)} unscored)"
        + (f"; rescored by {args.model} in {'fp32' if args.no_int8 else 'int8'}" if score else "")
    )
    chosen = best(items, args.precision)
    thresholds = sorted({*GRID, *args.at, *([chosen] if chosen is not None else [])}, reverse=True)
    header = ["min log-prob", "citing", "supported", "precision", "net", "supported/q", "cites/q"]
    rows = [row(scored, questions, None)] + [row(items, questions, t) for t in thresholds]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for j, r in enumerate([header, *rows]):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    rule = "highest net" if args.precision is None else f"precision >= {args.precision}"
    if chosen is None:
        print(f"no threshold reaches {rule}")
    else:
        print(f"{rule}: min log-prob {chosen:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
