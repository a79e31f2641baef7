"""What a finished episode means to a reader: the answer, its citations, its references.

Pure functions of an `EpisodeRecord`, shared by `ask`, the REPL, replay and eval.
"""

from __future__ import annotations

import re

from env.citations import CITATION
from env.record import EpisodeRecord


def cited(answer: str | None) -> list[int]:
    """Quote numbers an answer cites, in order of first citation."""
    seen: dict[int, None] = {}
    for m in CITATION.finditer(answer or ""):
        seen.setdefault(int(m.group(1)))
    return list(seen)


def strip_citations(answer: str | None) -> str:
    """The answer without `[n]` markers (what short-answer metrics score)."""
    return re.sub(r"\s+", " ", CITATION.sub("", answer or "")).strip()


def confident(
    action: str, logprobs: list[float] | None, min_logprob: float | None
) -> tuple[str, dict | None]:
    """The citation gate on an answer the policy wrote (`action`, from its completion whose
    tokens have `logprobs`): the answer keeps its `[n]` when the policy's log-probability of
    what it wrote, citation included, is at least `min_logprob`; below, it loses them, so an
    answer the policy doubts is given as from memory rather than as what a quote says. A wrong
    span copied from a quote passes the word check of `env.citations`, and the policy's doubt is
    the best sign of it found (bench/README.md, "The citation gate"). The log-probabilities are
    the sampling distribution's (`webagent.policy.Generation.logprobs`: temperature 1 when
    greedy). Returns the answer and the decision the record keeps in `meta["citation_gate"]`
    (None when there was none: no gate, or nothing cited); replay checks it again."""
    if min_logprob is None or not cited(action):
        return action, None
    if logprobs is None:  # a served model that reports none: nothing to judge by
        return action, {"logprob": None, "min_logprob": min_logprob, "kept": True}
    score = sum(logprobs)
    kept = score >= min_logprob
    decision = {"logprob": round(score, 4), "min_logprob": min_logprob, "kept": kept}
    return (action if kept else strip_citations(action)), decision


def gate_of(record: EpisodeRecord) -> dict | None:
    """The citation gate's decision a record holds (`confident`), None when there was none or
    what is there is not one (records on disk are untrusted)."""
    gate = record.meta.get("citation_gate")
    number = (int, float)
    if (
        isinstance(gate, dict)
        and isinstance(gate.get("kept"), bool)
        and isinstance(gate.get("min_logprob"), number)
        and not isinstance(gate.get("min_logprob"), bool)
        and (gate.get("logprob") is None or isinstance(gate.get("logprob"), number))
    ):
        return gate
    return None


def references(record: EpisodeRecord) -> list[dict]:
    """Every quote as {"n","title","url","extract"}, numbered as the answer cites them."""
    return [{"n": q.n, "title": q.title, "url": q.url, "extract": q.extract} for q in record.quotes]


def actions(record: EpisodeRecord) -> list[str]:
    """The browse commands as the model wrote them."""
    return [s.action for s in record.steps if s.phase == "browse"]


def to_json(record: EpisodeRecord) -> dict:
    """The `ask --json` object."""
    return {
        "question": record.question,
        "answer": record.answer,
        "supported_by_quotes": record.supported_by_quotes,
        "raw_answer": record.raw_answer,
        "citation_gate": gate_of(record),
        "references": references(record),
        "actions": actions(record),
    }


def describe_step(record: EpisodeRecord, index: int) -> str:
    """One line for a step as it happens: the action and, if it failed, why."""
    step = record.steps[index]
    if step.phase == "answer":
        return (
            f"{index + 1:>3}. Answer: {step.action.strip() or '(none: no quotes were collected)'}"
        )
    line = f"{index + 1:>3}. {step.action.strip()[:160] or '(empty)'}"
    if step.error:
        line += f"   ✗ {step.error[:120]}"
    return line


def unsupported_note(record: EpisodeRecord) -> str:
    """How ask, the REPL and transcripts mark an answer no quote supports."""
    dropped = [n for n in cited(record.raw_answer) if n not in cited(record.answer)]
    note = "not supported by the quoted sources: answered from memory"
    if dropped:
        note += f"; removed {', '.join(f'[{n}]' for n in dropped)}, which did not support it"
    gate = gate_of(record)
    if gate is not None and gate["kept"] is False and gate["logprob"] is not None:
        step = record.answer_step
        doubted = cited(step.completion) if step is not None and step.completion else []
        marks = ", ".join(f"[{n}]" for n in doubted) or "its citation"
        note += (
            f"; the agent was unsure of it (log-probability {gate['logprob']:.2f}, below "
            f"{gate['min_logprob']:.2f}), so it does not cite {marks}"
        )
    return note


def format_answer(record: EpisodeRecord) -> str:
    """The answer followed by its numbered references, for people."""
    if record.answer is None:
        why = record.meta.get("no_answer") or f"browsing ended with {record.end!r}"
        lines = [f"No answer: {why}."]
    else:
        lines = [record.answer]
        if record.supported_by_quotes is False:
            lines.append(f"({unsupported_note(record)})")
        missing = [n for n in cited(record.answer) if not 1 <= n <= len(record.quotes)]
        if missing:
            lines.append(f"(cites {', '.join(f'[{n}]' for n in missing)} that no quote has)")
    if record.quotes:
        lines += ["", "References:"]
        citing = set(cited(record.answer))
        for q in record.quotes:
            mark = "" if q.n in citing else " (not cited)"
            lines.append(f"[{q.n}] {q.title} — {q.url}{mark}")
            lines.append(f'    "{q.extract}"')
    return "\n".join(lines)
