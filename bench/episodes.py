"""Episodes per minute and seconds per step (prefill and decode apart), batch 1 against batch 8,
for three variants of the policy: `before` (fp32, every token decoded by a forward pass, every
observation prefilled whole), `fp32` (forced command tails appended without a forward pass,
an observation prefilled on the start it shares with the last step's) and `int8` (that plus
int8 weights, `--int8`, webagent.int8).

    .venv/bin/python bench/episodes.py                 # default policy, 16 dev questions
    .venv/bin/python bench/episodes.py --quick         # 4 questions, 4 actions
    .venv/bin/python bench/episodes.py --model smollm2-135m --batches 1 4 8 --variants before fp32

Every run plays the same questions with the same seeds in one process, the variants
interleaved at each batch size, so the ratios are fair on a shared machine. `same actions`
counts episodes whose actions equal the first variant's at that batch size.
Questions come from ../shared/data/triviaqa/dev.jsonl (a few built-in ones when it is absent).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from webagent.config import DEFAULT_POLICY, EnvArgs, PolicyArgs, load_policy, sampling_of
from webagent.policy import HFPolicy
from webagent.rollout import RunConfig, Task, run_episodes

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "triviaqa" / "dev.jsonl"
FALLBACK = [
    "Which river flows through Baghdad?",
    "Who painted the Mona Lisa?",
    "What is the capital of Peru?",
    "Who wrote Pride and Prejudice?",
]


class Timed(HFPolicy):
    """The policy, counting prefill and decode time per generate call."""

    def __init__(self, inner: HFPolicy):
        self.__dict__.update(inner.__dict__)
        self.calls: list[tuple[int, float, float, int]] = []

    def generate(self, prompts, **kw):
        out = super().generate(prompts, **kw)
        if out:
            tokens = sum(len(g.token_ids) for g in out)
            self.calls.append((len(prompts), out[0].prefill_seconds, out[0].decode_seconds, tokens))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default=DEFAULT_POLICY)
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--max-actions", type=int, default=8)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    variants = ["before", "fp32", "int8"]
    ap.add_argument("--variants", nargs="+", default=variants, choices=variants)
    ap.add_argument("--quick", action="store_true", help="4 questions, 4 actions")
    args = ap.parse_args()
    if args.quick:
        args.questions, args.max_actions = 4, 4

    if DEV.exists():
        questions = [json.loads(line)["question"] for line in DEV.open()][: args.questions]
    else:
        print(f"({DEV} not found: using {len(FALLBACK)} built-in questions)")
        questions = FALLBACK[: args.questions]
    policies, load_s = {}, {}
    for variant in args.variants:
        policy_args = PolicyArgs(model=args.model, int8=variant == "int8")
        t0 = time.perf_counter()
        policies[variant] = Timed(load_policy(policy_args))
        policies[variant].jump_forward = variant != "before"
        policies[variant].reuse_prompts = variant != "before"
        load_s[variant] = time.perf_counter() - t0
        # builds the prefix cache
        policies[variant].generate(
            [policies[variant].prompt("browse", "warm-up")], max_new_tokens=1
        )
    make_env = EnvArgs(max_actions=args.max_actions).env_factory()

    rows = []
    for batch in args.batches:
        reference = None
        for variant, policy in policies.items():
            policy.calls.clear()
            config = RunConfig(batch_size=batch, sampling=sampling_of(policy_args))
            t0 = time.perf_counter()
            done = run_episodes(policy, [Task(q) for q in questions], make_env, config)
            records = [r for _, r in sorted(done, key=lambda pair: pair[0])]
            wall = time.perf_counter() - t0
            actions = [[s.action for s in r.steps] for r in records]
            reference = actions if reference is None else reference
            rows.append(_row(variant, batch, policy, records, wall, actions, reference))

    loads = ", ".join(f"{v} {s:.1f} s" for v, s in load_s.items())
    import torch

    print(
        f"\nmodel {args.model} (load {loads}), {len(questions)} questions, "
        f"max {args.max_actions} actions, greedy, {torch.get_num_threads()} thread(s)\n"
    )
    cols = [
        "variant",
        "batch",
        "episodes",
        "steps",
        "wall_s",
        "eps_per_min",
        "s_per_step",
        "prefill_s_per_step",
        "decode_s_per_step",
        "ms_per_token",
        "same_actions",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print(
            "| "
            + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols)
            + " |"
        )
    base = rows[0]
    for r in rows[1:]:
        print(
            f"\n{r['variant']} batch {r['batch']} vs {base['variant']} batch {base['batch']}: "
            f"{r['eps_per_min'] / base['eps_per_min']:.2f}x episodes per minute"
        )


def _row(variant, batch, policy, records, wall, actions, reference) -> dict:
    steps = sum(len(r.steps) for r in records)
    model_steps = sum(1 for r in records for s in r.steps if s.token_ids is not None)
    prefill = sum(c[1] for c in policy.calls)
    decode = sum(c[2] for c in policy.calls)
    tokens = sum(c[3] for c in policy.calls)
    same = sum(a == b for a, b in zip(actions, reference, strict=True))
    return {
        "variant": variant,
        "batch": batch,
        "episodes": len(records),
        "steps": steps,
        "wall_s": wall,
        "eps_per_min": 60 * len(records) / wall,
        "s_per_step": wall / steps,
        "prefill_s_per_step": prefill / model_steps,
        "decode_s_per_step": decode / model_steps,
        "ms_per_token": 1000 * decode / max(tokens, 1),
        "same_actions": f"{same}/{len(records)}",
    }


if __name__ == "__main__":
    main()
