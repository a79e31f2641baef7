"""A person labels comparisons in the terminal: two answers side by side, one key per pair.

    webagent label runs/rm/comparisons.jsonl    # 1 / 2 / t / s / q

Each answer is appended at once to a labels file beside the input (`X.jsonl` ->
`X.labels.jsonl`) and the input is never rewritten, so a quit, a Ctrl-C or a crash loses at
most the pair on screen, and rerunning resumes after the last line. `merged` joins the two
files for training.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from env.record import append_jsonl, read_jsonl
from reward.comparisons import Comparison, read_comparisons
from reward.text import Answer, clip

KEYS = "1 = left better, 2 = right better, t = tie, s = skip, q = quit, ? = help"
HELP = """\
Which answer is better? Judge as WebGPT's labelers did, in this order:
  - is it true and supported by its quotes (claims the quotes do not back count against it)?
  - does it answer the question that was asked, clearly and without padding?
  1  the left answer is better        2  the right answer is better
  t  a tie: equally good, or equally bad
  s  skip: you cannot judge this pair (it is not asked again)
  q  quit (also Ctrl-D or Ctrl-C); every answer is already saved and rerunning resumes"""
CHOICES = {"1": 1.0, "2": 0.0, "t": 0.5}


def labels_path(path: str | Path) -> Path:
    """Where the labels of `path` go: beside it, so the two files travel together."""
    path = Path(path)
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(f"{stem}.labels.jsonl")


def read_labels(path: str | Path) -> dict[str, dict]:
    """Label lines of the comparisons file `path` by comparison id (the last line wins)."""
    target = labels_path(path)
    if not target.exists():
        return {}
    return {str(obj["id"]): obj for obj in read_jsonl(target) if obj.get("id")}


def merged(path: str | Path) -> list[Comparison]:
    """The comparisons of `path` with the person's preferences and name applied, for training.

    Skipped and unlabeled comparisons keep the preference they had (None unless judged before).
    """
    labels = read_labels(path)
    out = []
    for c in read_comparisons(path):
        lab = labels.get(c.id)
        if lab is not None and lab.get("preference") is not None and not lab.get("skipped"):
            c = replace(c, preference=float(lab["preference"]), labeler=lab.get("labeler"))
        out.append(c)
    return out


def _column(title: str, answer: Answer, width: int) -> list[str]:
    lines = [title, "-" * min(width, len(title))]
    lines += textwrap.wrap(answer.text.strip() or "(no answer)", width) or [""]
    lines += ["", "Quotes:"]
    if not answer.quotes:
        lines.append("(none)")
    for n, q in enumerate(answer.quotes, start=1):
        lines += textwrap.wrap(
            f"[{n}] {q.title.strip()}: {clip(q.extract)}", width, subsequent_indent="    "
        )
    return lines


def render(c: Comparison, position: int, total: int) -> str:
    """The screen for one comparison: progress, the question, the two answers in two columns."""
    columns = shutil.get_terminal_size((100, 24)).columns
    width = max(24, (columns - 3) // 2)  # two columns and a " | " between them
    left = _column("1 (left)", c.answer_0, width)
    right = _column("2 (right)", c.answer_1, width)
    left += [""] * (len(right) - len(left))
    right += [""] * (len(left) - len(right))
    rule = "=" * min(columns, 2 * width + 3)
    lines = [rule, f"comparison {position}/{total}", ""]
    lines += textwrap.wrap(f"Question: {c.question.strip()}", 2 * width + 3) or ["Question:"]
    lines.append("")
    lines += [f"{a.ljust(width)} | {b}".rstrip() for a, b in zip(left, right, strict=True)]
    lines.append("")
    return "\n".join(lines)


def _ask(input: Callable[[str], str], output: Callable[[str], None]) -> str:
    """One valid key (1, 2, t, s or q) in lower case; help and re-prompts in between."""
    while True:
        key = input("choice> ").strip().lower()
        if key in ("1", "2", "t", "s", "q"):
            return key
        if key in ("?", "h", "help"):
            output(HELP)
        else:
            output(f"{key!r} is not a choice: type 1, 2, t, s or q (? for help)")


def label(
    path: str | Path,
    *,
    input: Callable[[str], str] = input,
    output: Callable[[str], None] = print,
    labeler: str = "human",
) -> dict:
    """Ask a person about each comparison of `path` that has no label line yet.

    `input`/`output` are the terminal (swap them to drive the loop from a test). Every answer
    is appended at once; q, EOF and Ctrl-C stop without losing any. Returns the counts of this
    session: labeled (1, 2 or t; ties included), tied, skipped, and remaining unanswered.
    """
    unique: dict[str, Comparison] = {}  # a pair listed twice is asked once
    for c in read_comparisons(path):
        unique.setdefault(c.id, c)
    done = set(read_labels(path))
    todo = [c for c in unique.values() if c.id not in done]
    target = labels_path(path)
    counts = {"labeled": 0, "tied": 0, "skipped": 0, "remaining": len(todo)}
    if not todo:
        output(f"nothing left to label: all {len(unique)} comparisons in {path} have a label")
        return counts
    first = len(unique) - len(todo) + 1
    stopped = False
    try:
        for i, c in enumerate(todo):
            output(render(c, first + i, len(unique)))
            output(KEYS)
            start = time.monotonic()
            key = _ask(input, output)
            if key == "q":
                stopped = True
                break
            if key == "s":
                append_jsonl(target, [{"id": c.id, "preference": None, "skipped": True}])
                counts["skipped"] += 1
            else:
                seconds = round(time.monotonic() - start, 1)
                append_jsonl(
                    target,
                    [
                        {
                            "id": c.id,
                            "preference": CHOICES[key],
                            "labeler": labeler,
                            "seconds": seconds,
                        }
                    ],
                )
                counts["labeled"] += 1
                counts["tied"] += int(key == "t")
            counts["remaining"] -= 1
    except (EOFError, KeyboardInterrupt):
        stopped = True
    summary = f"{counts['labeled']} labeled ({counts['tied']} ties), {counts['skipped']} skipped"
    if stopped and counts["remaining"]:
        output(f"\nstopped: {summary}, {counts['remaining']} remaining; run again to resume")
    else:
        output(f"\ndone: {summary}; every comparison in {path} has a label")
    return counts
