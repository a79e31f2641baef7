"""Answer phase alone: re-answer the quotes recorded in an eval run with each policy.

    .venv/bin/python bench/reanswer.py runs/bench-eval/bc/results.jsonl \
        --policies bc-gemma3-270m runs/bc/policy --limit 150
    .venv/bin/python bench/reanswer.py runs/bench-eval/bc/results.jsonl --layouts passages browse
    .venv/bin/python bench/reanswer.py runs/exp/heldout-gold-expert.jsonl \
        --dataset ../shared/data/triviaqa/train.jsonl --policies bc-gemma3-270m runs/bc/policy-cited

Episode records (e.g. `webagent demos` output on questions a policy never trained on) work
too, with `--dataset` for their answers: on an expert's on-target quotes the table shows
whether a policy copies and cites when it can.

Every policy sees the same questions and quotes (greedy), so the table isolates how well each
answers from given quotes (the stage-2 variants in bench/README were chosen this way). The
answer prompt is rendered afresh from the recorded quotes: `passages` is the current layout
(`env.observation.render_answer`, continued inline after `Answer:`); `browse` is the layout
the answer phase used before (the browse observation's sections, with its own instruction,
answer on the next line), kept here only to measure the difference. `copied`: share of
answers found in the quotes; `cites`: share that cite a quote as [n]; `supported`: right and
supported by a cited quote (over all questions, like EM); ratios are EM over the first row's,
in one run.
"""

from __future__ import annotations

import argparse
import json
import time

from env.observation import SECTION, SavedQuote, render_answer, title_line
from webagent.answers import cited, strip_citations
from webagent.config import PolicyArgs, load_policy
from webagent.datasets import load_questions
from webagent.metrics import exact_match, normalize_answer, supported
from webagent.prompts import completion_to_action

OLD_INSTRUCTION = (
    "Answer the question from the quotes. Write the short answer first, copied from a quote, "
    "then cite the quotes that support it as [n]. One line."
)


def browse_layout(question: str, quotes: list[SavedQuote]) -> str:
    """The answer observation before the passage layout (for comparison only)."""
    block = [x for q in quotes for x in (f"[{q.n}] {title_line(q.title, q.url)}", q.extract)]
    return "\n".join(
        [
            f"{SECTION}Question",
            question,
            f"{SECTION}Quotes",
            *(block or ["None"]),
            f"{SECTION}Answer",
        ]
    )


def prompt_for(policy, layout: str, question: str, quotes: list[SavedQuote]) -> str:
    if layout == "passages":
        return policy.prompt("answer", render_answer(question=question, quotes=quotes))
    return policy.format._render(
        OLD_INSTRUCTION, [], browse_layout(question, quotes), policy.tokenizer
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("results", help="results.jsonl of a `webagent eval` browse run, or records")
    ap.add_argument("--dataset", default=None, help="the records' questions, for their answers")
    ap.add_argument("--policies", nargs="+", default=["bc-gemma3-270m"])
    ap.add_argument("--layouts", nargs="+", default=["passages"], choices=["passages", "browse"])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument(
        "--no-int8",
        action="store_true",
        help="sample with fp32 weights; the figures in bench/README before 2026-11-28 are fp32",
    )
    args = ap.parse_args()
    with open(args.results) as f:
        rows = [json.loads(line) for line in f][: args.limit]
    if rows and "steps" in rows[0]:  # episode records: answers come from the dataset
        if args.dataset is None:
            ap.error("episode records need --dataset for their answers")
        aliases = {q.id: q.aliases for q in load_questions(args.dataset)}
        missing = {r["meta"].get("question_id") for r in rows} - aliases.keys()
        if missing:
            ap.error(
                f"{len(missing)} records' questions are not in {args.dataset}, e.g. "
                f"{sorted(map(str, missing))[0]}"
            )
        rows = [
            {"aliases": aliases[r["meta"]["question_id"]], "question": r["question"], "episode": r}
            for r in rows
        ]
    items = []
    for r in rows:
        quotes = [SavedQuote(**q) for q in r.get("episode", {}).get("quotes", [])]
        if quotes:
            items.append((r["aliases"], r["question"], quotes))
    print(f"{len(rows)} questions, {len(items)} with quotes to answer from\n")
    print("| policy | layout | EM | vs first | copied | cites | supported | s/question |")
    print("|---|---|---|---|---|---|---|---|")
    first = None
    for spec in args.policies:
        policy = load_policy(PolicyArgs(model=spec, int8=not args.no_int8))
        for layout in args.layouts:
            prompts = [prompt_for(policy, layout, q, quotes) for _, q, quotes in items]
            t0, outs = time.perf_counter(), []
            for i in range(0, len(prompts), args.batch):
                outs += policy.generate(prompts[i : i + args.batch], max_new_tokens=32)
            seconds = (time.perf_counter() - t0) / max(1, len(rows))
            em = copied = cites = support = 0.0
            for (aliases, _, quotes), gen in zip(items, outs, strict=True):
                full = completion_to_action(gen.text)
                text = strip_citations(full)
                em += exact_match(text, aliases) if text else 0.0
                cites += bool(cited(full))
                support += bool(text) and supported(full, aliases, [q.extract for q in quotes])
                answer = normalize_answer(text)
                copied += bool(answer) and any(
                    answer in normalize_answer(q.extract) for q in quotes
                )
            em /= max(1, len(rows))
            first = em if first is None else first
            ratio = f"{em / first:.2f}" if first else "—"
            n = max(1, len(items))
            print(
                f"| {spec} | {layout} | {em:.3f} | {ratio} | {copied / n:.2f} | {cites / n:.2f} | "
                f"{support / max(1, len(rows)):.3f} | {seconds:.2f} |"
            )


if __name__ == "__main__":
    main()
