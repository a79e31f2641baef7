"""Replay recorded episodes from the page cache, offline, and check they are byte-identical.

Replay re-runs the recorded actions in a browser whose every page comes from the cache by the
id the record holds (no source is ever called). Each observation must equal the recorded one;
a missing cache entry or a tampered page is reported with the step where it shows. Then what
the record claims as its result (answer, quotes, why browsing ended) must equal what the re-run
produced, and each action must be what its recorded completion says: a record edited by hand
does not replay as identical.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from env.browser import BrowserEnv, config_from_dict, replay_map
from env.cache import PageCache
from env.errors import CacheError
from env.observation import normalize
from env.record import EpisodeRecord, Step
from env.sources.cache import CacheSource
from webagent.answers import confident, describe_step, format_answer, gate_of
from webagent.prompts import completion_to_action


class ReplayError(Exception):
    """The episode cannot be replayed (a page it needs is not in the cache)."""


@dataclass
class ReplayResult:
    record: EpisodeRecord
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def replay(record: EpisodeRecord, cache: PageCache) -> ReplayResult:
    """Re-execute one record against the cache; the result lists every difference found."""
    missing = [pid for pid in record.page_ids if pid not in cache]
    if missing:
        raise ReplayError(
            f"episode {record.id}: {len(missing)} page(s) missing from the page cache at "
            f"{cache.root} (first: {missing[0]}); was it recorded with another --page-cache?"
        )
    config = config_from_dict(record.meta["env"]) if "env" in record.meta else None
    env = BrowserEnv(
        CacheSource(cache, record.source), config, cache=cache, replay_pages=replay_map(record)
    )
    env.reset(record.question, seed=record.seed)
    result = ReplayResult(record)
    for i, step in enumerate(record.steps):
        if env.phase == "done":
            result.mismatches.append(f"step {i + 1}: the re-run had ended; the record goes on")
            break
        observation = env.observation()
        if observation != step.observation:
            result.mismatches.append(f"step {i + 1}: observation differs from the recording")
            break
        if step.completion is not None and written(record, step) != step.action:
            result.mismatches.append(
                f"step {i + 1}: action {step.action!r} is not what its recorded completion "
                f"says ({written(record, step)!r})"
            )
            break
        _, _, _, _, info = env.step(step.action)
        error = info.get("action_error")
        if error != step.error and step.phase == "browse":
            detail = error if isinstance(error, str) else "no error"
            result.mismatches.append(f"step {i + 1} ({step.action!r}): {detail}")
            break
    if not result.mismatches:
        result.mismatches += result_mismatches(record, env.record if env.phase == "done" else None)
    return result


def written(record: EpisodeRecord, step: Step) -> str:
    """The action a step's recorded completion gives: the answer step through the citation gate
    the run applied (`webagent.answers.confident`), decided again from the recorded
    log-probabilities."""
    action = completion_to_action(step.completion or "")
    gate = gate_of(record)  # None for a malformed one too: then a gated action will not match
    if step.phase != "answer" or gate is None:
        return action
    return confident(action, step.logprobs, gate["min_logprob"])[0]


def result_mismatches(record: EpisodeRecord, rerun: EpisodeRecord | None) -> list[str]:
    """How the result a record claims (quotes, answer, end) differs from its re-run's."""
    if rerun is None:
        return ["the record ends before its episode does (no answer step)"]
    out = []
    claimed, got = record.quotes, rerun.quotes
    if len(claimed) != len(got):
        out.append(f"quotes: the record has {len(claimed)}, the re-run quoted {len(got)}")
    for mine, theirs in zip(claimed, got, strict=False):  # a length difference is told above
        for name in ("n", "title", "url", "extract"):
            a, b = getattr(mine, name), getattr(theirs, name)
            if a != b:
                out.append(f"quote [{theirs.n}] {name}: the record says {a!r}, the re-run {b!r}")
    if (record.answer or None) != rerun.answer:  # older records kept an empty answer as ""
        out.append(f"answer: the record says {record.answer!r}, the re-run {rerun.answer!r}")
    if record.end != rerun.end:
        out.append(f"end: the record says {record.end!r}, the re-run {rerun.end!r}")
    return out


def check_cache(record: EpisodeRecord, cache: PageCache) -> list[str]:
    """Hash-check every page the record points at; the problems found."""
    problems = []
    for pid in record.page_ids:
        try:
            cache.get(pid)
        except CacheError as exc:
            problems.append(str(exc))
    return problems


def transcript(record: EpisodeRecord) -> str:
    """A readable account of one episode: question, each action, the answer and references."""
    lines = [f"Question: {record.question}", f"Source: {record.source}   Model: {record.model}"]
    lines += [describe_step(record, i) for i in range(len(record.steps))]
    lines += ["", format_answer(record)]
    return "\n".join(lines)


def write_html(records: Iterable[EpisodeRecord], cache: PageCache, out: str | Path) -> Path:
    """A self-contained HTML transcript: every step, the pages' text, quotes highlighted."""
    out = Path(out)
    parts = [
        "<!doctype html><meta charset='utf-8'><title>webagent transcript</title>",
        "<style>body{font:15px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em;border-radius:4px}"
        "mark{background:#ffe27a}.err{color:#a00}.act{font-family:monospace;font-weight:bold}"
        "details{margin:.3em 0}</style>",
    ]
    for record in records:
        extracts = [q.extract for q in record.quotes]
        parts.append(f"<h1>{html.escape(record.question)}</h1>")
        parts.append(
            f"<p>Source {html.escape(record.source)} · model {html.escape(str(record.model))}"
            f" · ended by {html.escape(str(record.end))}</p>"
        )
        parts.append("<ol>")
        for step in record.steps:
            err = f" <span class='err'>✗ {html.escape(step.error)}</span>" if step.error else ""
            label = "Answer: " if step.phase == "answer" else ""
            parts.append(
                f"<li><span class='act'>{label}{html.escape(step.action)}</span>{err}"
                f"<details><summary>observation</summary><pre>{html.escape(step.observation)}</pre>"
                "</details></li>"
            )
        parts.append("</ol><h2>Answer</h2>")
        parts.append(f"<pre>{html.escape(format_answer(record))}</pre><h2>Pages</h2>")
        for pid in record.page_ids:
            try:
                page = cache.get(pid)
            except CacheError as exc:
                parts.append(f"<p class='err'>{html.escape(str(exc))}</p>")
                continue
            parts.append(
                f"<details><summary>{html.escape(page.title)} — {html.escape(page.url)}</summary>"
            )
            parts.append(f"<pre>{_highlight(page.text, extracts)}</pre></details>")
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def _highlight(text: str, extracts: list[str]) -> str:
    """HTML-escape page text and <mark> every line that holds part of a quote."""
    quotes = [normalize(e) for e in extracts if e.strip()]
    marked = []
    for line in text.split("\n"):
        esc = html.escape(line)
        plain = normalize(line)
        if plain and any(
            (len(plain) >= 12 and (plain[:30] in q or plain[-30:] in q)) or q[:30] in plain
            for q in quotes
        ):
            esc = f"<mark>{esc}</mark>"
        marked.append(esc)
    return "\n".join(marked)
