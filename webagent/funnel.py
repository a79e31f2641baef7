"""Where the evidence is lost, and what the agent does: the evidence funnel and behaviour metrics.

Every eval report shows, per run, the share of questions whose answer is
anywhere in the corpus -> in the top-k results of the agent's own searches (k = 1, 3, 10) ->
on a page it opened -> in a quote -> answer right -> right *and* its cited quote holds it
(`supported`), plus `cites` (answers with a `[n]`), citation precision (supported / cites) and
`doubted` (answers whose `[n]` the citation gate removed: `webagent.answers.confident`).
Beside it, how the agent browses: its action patterns, which results it opens, how often it
searches, P(open the result that holds the answer | it is listed), P(quote holds the answer |
an opened page holds it), P(search again | the results miss).

Everything is read from the episode record and the page cache it points to: a search step's
`page_id` is its results page, whose links are the listed hits in rank order, so the record
needs no copy of the result URLs (the content-addressed page is what the model saw). Whether a
listed result holds an answer is judged on the corpus document behind its URL
(`CorpusIndex.holds`), whether the agent opened it or not; with no local corpus (the live web)
those stages are None and show as "—", as are the stages a closed-book or rag run has no part in.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from env.observation import strip_markup
from env.pages import Page
from env.record import EpisodeRecord
from webagent.answers import cited, gate_of
from webagent.metrics import any_alias_in

TOP_K = (1, 3, 10)
"""Result ranks the funnel looks at: an alias in the top k results of any of the agent's searches."""

FUNNEL: list[tuple[str, str]] = [
    ("in_corpus", "answer anywhere in the corpus"),
    *[(f"in_top{k}", f"in the top {k} of its searches") for k in TOP_K],
    ("seen_answer", "on a page it opened"),
    ("quoted_answer", "in a quote"),
    ("em", "answer right (EM)"),
    ("supported", "right and its cited quote holds it"),
]
"""Funnel stages: summary key and what it means, widest first."""

TOP_PATTERNS = 5
"""Action patterns listed in the report (the rest are counted in `top_pattern_share`'s complement)."""

Holds = Callable[[str], bool]
"""Whether the corpus document at a URL holds an alias of the question's answer."""


def evidence(
    record: EpisodeRecord, aliases: Sequence[str], pages: dict[str, Page], holds: Holds | None
) -> dict:
    """A browsing episode's funnel stages and behaviour (per-question row fields).

    `pages`: the cached pages of `record.page_ids` (missing ones are skipped); `holds`: None when
    there is no local corpus to judge unopened results by."""
    pattern: list[str] = []
    listed: list[list[str]] = []  # each search's result URLs, in rank order
    ranks: list[int] = []  # link index of each result opened from a results page
    opened_holding = False
    current: Page | None = None
    for step in (s for s in record.steps if s.phase == "browse"):
        name = step.command["name"] if step.command else "invalid"
        pattern.append(name)
        after = pages.get(step.page_id) if step.page_id else None
        if name == "search" and not step.error:
            listed.append(
                [link.url for link in after.links] if after and after.kind == "search" else []
            )
        elif (
            name == "click" and not step.error and current is not None and current.kind == "search"
        ):
            ranks.append(int(step.command["link_id"]))
            opened_holding |= bool(holds and step.request and holds(step.request))
        current = after
    hits = [[holds(u) for u in urls] for urls in listed] if holds else None
    opened = [
        strip_markup(p.text)
        for pid in record.page_ids
        if (p := pages.get(pid)) and p.kind == "page"
    ]
    judged = hits is not None
    missed = [i for i, h in enumerate(hits or []) if not any(h)]
    listed_answer = judged and any(any(h) for h in hits)
    row: dict = {
        f"in_top{k}": float(any(any(h[:k]) for h in hits)) if judged else None for k in TOP_K
    }
    row.update(
        seen_answer=float(any_alias_in(opened, aliases)),
        quoted_answer=float(any_alias_in([q.extract for q in record.quotes], aliases)),
        cites=float(bool(cited(record.answer))),
        doubted=float((gate_of(record) or {}).get("kept") is False),
        pattern=" ".join(pattern),
        searches=len(listed),
        opened_ranks=ranks,
        opened_listed_answer=float(opened_holding) if listed_answer else None,
        missed_searches=len(missed) if judged else None,
        searched_again=sum(1 for i in missed if i < len(listed) - 1) if judged else None,
    )
    return row


def passages_evidence(urls: Sequence[str], holds: Holds | None, k: int) -> dict:
    """The funnel stages of a retrieve-then-read row: its K passages are its search's top K
    (a stage deeper than K does not apply); closed-book has `urls == ()` and no stage at all."""
    hits = [holds(u) for u in urls] if holds and urls else None
    return {
        f"in_top{j}": (float(any(hits[:j])) if hits is not None and j <= k else None) for j in TOP_K
    }


# ----------------------------------------------------------------------------- summaries


def mean_of(rows: list[dict], key: str) -> float | None:
    """Mean of `key` over the rows that have it; None when none has (the metric does not apply)."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def _ratio(
    rows: list[dict], num: Callable[[dict], float], den: Callable[[dict], float]
) -> float | None:
    total = sum(den(r) for r in rows)
    return sum(num(r) for r in rows) / total if total else None


def summarize(rows: list[dict]) -> dict:
    """Run-level funnel (flat keys, as the rest of summary.json) and `behaviour` (None for runs
    that do not browse).

    Shares are over all questions (`cites`: the answer, if any, cites a quote). The conditional
    behaviour figures are ratios of counts: P(open | listed) over episodes where some search
    listed a result holding the answer (opened from a results page); P(quote | seen) over
    episodes that opened a page holding it; P(search again | miss) over searches whose listed
    results all miss (a later search in the same episode counts)."""
    out: dict = {key: mean_of(rows, key) for key, _ in FUNNEL}
    out["cites"] = mean_of(rows, "cites")
    out["doubted"] = mean_of(rows, "doubted")
    citing = [r for r in rows if r.get("cites") is not None and r.get("supported") is not None]
    out["citation_precision"] = _ratio(
        citing, lambda r: r["supported"] * r["cites"], lambda r: r["cites"]
    )
    browsed = [r for r in rows if r.get("pattern") is not None]
    if not browsed:
        out["behaviour"] = None
        return out
    n = len(browsed)
    patterns = Counter(r["pattern"] for r in browsed)
    ranks = Counter(k for r in browsed for k in r["opened_ranks"])
    searched = [r for r in browsed if r.get("missed_searches") is not None]
    out["behaviour"] = {
        "episodes": n,
        "top_patterns": [[p, c / n] for p, c in patterns.most_common(TOP_PATTERNS)],
        "top_pattern_share": patterns.most_common(1)[0][1] / n,
        "distinct_patterns": len(patterns),
        "searches_per_episode": sum(r["searches"] for r in browsed) / n,
        "searched_more_than_once": sum(r["searches"] > 1 for r in browsed) / n,
        "opened_ranks": {str(k): ranks[k] for k in sorted(ranks)},
        "opened_other_than_first": sum(any(k > 0 for k in r["opened_ranks"]) for r in browsed) / n,
        "p_open_answer_given_listed": mean_of(browsed, "opened_listed_answer"),
        "p_quote_given_seen": _ratio(
            browsed, lambda r: r["quoted_answer"] * r["seen_answer"], lambda r: r["seen_answer"]
        ),
        "p_search_again_given_miss": _ratio(
            searched, lambda r: r["searched_again"], lambda r: r["missed_searches"]
        ),
    }
    return out


# ----------------------------------------------------------------------------- report


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


BEHAVIOUR_ROWS: list[tuple[str, str]] = [
    ("top_pattern_share", "share of the commonest action pattern"),
    ("distinct_patterns", "distinct action patterns"),
    ("searches_per_episode", "searches per episode"),
    ("searched_more_than_once", "searched more than once"),
    ("opened_other_than_first", "opened a result other than the first"),
    ("p_open_answer_given_listed", "P(open the result holding the answer | listed)"),
    ("p_quote_given_seen", "P(quote holds answer | opened page holds it)"),
    ("p_search_again_given_miss", "P(search again | results miss)"),
]


def tables(summaries: Sequence[tuple[str, dict]]) -> list[str]:
    """Markdown: the funnel and the behaviour metrics, one column per run, then each run's
    commonest action patterns and opened result ranks."""
    head = [
        "| stage | " + " | ".join(name for name, _ in summaries) + " |",
        "|---|" + "---|" * len(summaries),
    ]
    lines = ["Evidence funnel (share of questions; `—`: the stage does not apply):", "", *head]
    stages = [
        *FUNNEL,
        ("cites", "answer cites a quote [n]"),
        ("citation_precision", "citation precision (supported / cites)"),
        ("doubted", "answer doubted: the citation gate took its [n] away"),
    ]
    for key, label in stages:
        lines.append(
            f"| {label} (`{key}`) | " + " | ".join(_cell(s.get(key)) for _, s in summaries) + " |"
        )
    behaving = [(name, s["behaviour"]) for name, s in summaries if s.get("behaviour")]
    if not behaving:
        return [*lines, ""]
    lines += [
        "",
        "Behaviour (browsing runs):",
        "",
        "| metric | " + " | ".join(n for n, _ in behaving) + " |",
        "|---|" + "---|" * len(behaving),
    ]
    for key, label in BEHAVIOUR_ROWS:
        cells = [
            str(b[key]) if key == "distinct_patterns" else _cell(b.get(key)) for _, b in behaving
        ]
        escaped = label.replace("|", "\\|")  # a bare | would split the table cell
        lines.append(f"| {escaped} | " + " | ".join(cells) + " |")
    for name, b in behaving:
        lines += [
            "",
            f"`{name}`: commonest action patterns (share of episodes) and opened result ranks:",
            "",
        ]
        lines += [
            f"- {share:.3f} `{pattern or '(no action)'}`" for pattern, share in b["top_patterns"]
        ]
        ranks = ", ".join(f"{k}: {c}" for k, c in b["opened_ranks"].items()) or "none"
        lines.append(f"- opened result ranks (link index: count): {ranks}")
    return [*lines, ""]


def plot(summaries: Sequence[tuple[str, dict]], path: Path) -> None:
    """The funnel per run: one bar group per stage, one bar per run (stages that do not apply
    are left out of that run's bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / max(1, len(summaries))
    for j, (name, s) in enumerate(summaries):
        values = [math.nan if s.get(key) is None else s[key] for key, _ in FUNNEL]
        xs = [i + (j - (len(summaries) - 1) / 2) * width for i in range(len(FUNNEL))]
        bars = ax.bar(xs, values, width=width, label=name)
        ax.bar_label(bars, ["" if math.isnan(v) else f"{v:.2f}" for v in values], fontsize=7)
    ax.set_xticks(range(len(FUNNEL)), [key.replace("_", "\n") for key, _ in FUNNEL], fontsize=8)
    ax.set_ylabel("share of questions")
    ax.set_title("Evidence funnel")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
