"""TriviaQA-style evaluation of the browsing agent and its baselines, resumable.

    webagent eval ../shared/data/triviaqa/dev.jsonl --out runs/dev-browse
    webagent eval ../shared/data/triviaqa/dev.jsonl --closed-book --out runs/dev-closed
    webagent eval ../shared/data/triviaqa/dev.jsonl --rag 3 --out runs/dev-rag3
    webagent eval --compare runs/dev-closed runs/dev-rag3 runs/dev-browse --out runs/compare

A run directory holds `config.json`, `results.jsonl` (one line per question, with the full
episode), `summary.json`, `report.md`, `plot.png` and `funnel.png` (the evidence funnel and
behaviour metrics: `webagent.funnel`). An interrupted run continues where it stopped: finished
questions are read back and skipped, so nothing is duplicated or lost.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from env.cache import PageCache
from env.errors import CacheError
from env.observation import strip_markup
from env.record import EpisodeRecord, append_jsonl, read_jsonl
from env.sources import PageSource
from env.sources.local import url_key
from reward.checkpoint import flag_names, settings_file
from webagent import funnel
from webagent.config import (
    EnvArgs,
    PolicyArgs,
    best_of_rm,
    best_of_temperature,
    load_policy,
    run_config,
    sampling_of,
)
from webagent.datasets import Question, load_questions
from webagent.metrics import (
    any_alias_in,
    citation_valid,
    contains,
    exact_match,
    f1,
    normalize_answer,
    supported,
)
from webagent.prompts import completion_to_action
from webagent.rollout import Task, best_of_tasks, grouped, run_episodes

SUMMARY_KEYS = [
    "n",
    "em",
    "f1",
    "contains",
    "supported",
    "citation_valid",
    "mean_actions",
    "invalid_rate",
    "no_answer_rate",
    "seconds_per_question",
]


@dataclass
class EvalArgs:
    """Evaluate on a question set: browsing agent (default), --closed-book, --rag K, --best-of N."""

    dataset: str | None = None
    """Questions: our JSONL, the official TriviaQA JSON, or NQ-open JSONL (format detected)."""
    out: str = "runs/eval"
    """Run directory (created; an existing one with the same settings is resumed)."""
    policy: PolicyArgs = field(default_factory=PolicyArgs)
    env: EnvArgs = field(default_factory=EnvArgs)
    """Browser settings (10 actions by default: `webagent.config.MAX_ACTIONS`)."""
    closed_book: bool = False
    """Baseline: the model answers from the question alone."""
    rag: int = 0
    """Baseline: paste the top-K search results' pages into the prompt, then answer (K > 0)."""
    best_of: int = 1
    """N episodes per question, the judge keeping one: the first greedy, the others sampled at
    --temperature (0: `config.BEST_OF_TEMPERATURE`); the reward model (--rm) scores each,
    plus --vote-weight times its agreement with the others (`reward.best_of_n`)."""
    rm: str | None = None
    """Reward model for --best-of: a directory (`webagent train rm`) or a shipped name.
    Default: the shipped one (`webagent.config.DEFAULT_RM`)."""
    vote_weight: float | None = None
    """--best-of: weight of a candidate's agreement with the others (share giving the same
    answer) added to its reward; default: the reward model's own (reward.json
    best_of.vote_weight, else 0)."""
    limit: int | None = None
    """Evaluate only the first N questions."""
    batch: int = 8
    """Episodes (or prompts) decoded together."""
    compare: list[str] = field(default_factory=list)
    """Instead of running: compare these run directories in one report (written to --out)."""

    @property
    def mode(self) -> str:
        if self.closed_book:
            return "closed-book"
        if self.rag:
            return f"rag-{self.rag}"
        return "browse" if self.best_of == 1 else f"browse-best-of-{self.best_of}"


# ----------------------------------------------------------------------------- scoring


def score(question: Question, answer: str | None, quotes: Sequence[str] = ()) -> dict:
    """Every per-question metric of one answer."""
    return {
        "em": exact_match(answer, question.aliases),
        "f1": f1(answer, question.aliases),
        "contains": contains(answer, question.aliases),
        "supported": supported(answer, question.aliases, quotes),
        "citation_valid": citation_valid(answer, len(quotes)),
        "no_answer": float(answer is None or not answer.strip()),
    }


def episode_row(
    question: Question,
    record: EpisodeRecord,
    cache: PageCache | None,
    corpus: CorpusIndex | None = None,
) -> dict:
    """A browsing episode's metrics, funnel stages and behaviour (`webagent.funnel.evidence`)."""
    browse = [s for s in record.steps if s.phase == "browse"]
    pages = {}
    if cache is not None:
        for pid in record.page_ids:
            with contextlib.suppress(CacheError):
                pages[pid] = cache.get(pid)
    holds = corpus.holder(question.aliases) if corpus is not None else None
    return {
        **score(question, record.answer, [q.extract for q in record.quotes]),
        "answer": record.answer,
        "supported_by_quotes": record.supported_by_quotes,
        "actions": len(browse),
        "invalid_actions": sum(1 for s in browse if s.command is None),
        **funnel.evidence(record, question.aliases, pages, holds),
        "seconds": sum(s.seconds or 0.0 for s in record.steps),
        "episode": record.to_dict(),
    }


class CorpusIndex:
    """Normalised text of a whole local corpus, and of each document by URL: is an answer
    anywhere in it (coverage bound), and in the document a search result points to?"""

    def __init__(self, source: PageSource):
        docs = getattr(source, "docs", None)
        if docs is None and hasattr(source, "_ensure_index"):
            source._ensure_index()  # a ZIM archive lists its articles on first search
            docs = source.docs
        texts = [f" {normalize_answer(f'{d.title}. {d.text}')} " for d in docs or []]
        self.by_url = {url_key(d.url): t for d, t in zip(docs or [], texts, strict=True)}
        self.text = "\n".join(texts) if docs else None

    def contains(self, aliases: Sequence[str]) -> float | None:
        if self.text is None:
            return None
        return float(any(f" {a} " in self.text for a in map(normalize_answer, aliases) if a))

    def holder(self, aliases: Sequence[str]) -> funnel.Holds:
        """Whether the document at a URL holds an alias (False for a URL not in the corpus);
        each URL is judged once (searches list the same pages again and again)."""
        wanted = [f" {a} " for a in map(normalize_answer, aliases) if a]

        @functools.cache
        def holds(url: str) -> bool:
            text = self.by_url.get(url_key(url), "")
            return any(a in text for a in wanted)

        return holds


def corpus_of(source: PageSource) -> CorpusIndex | None:
    """The corpus index of a local source, None where there is none to search (the live web):
    then the funnel's corpus stages are "—", not 0."""
    corpus = CorpusIndex(source)
    return corpus if corpus.text is not None else None


# ----------------------------------------------------------------------------- runs


def _rows_browse(
    args: EvalArgs,
    questions: list[Question],
    positions: dict[str, int] | None = None,
    corpus: CorpusIndex | None = None,
) -> Iterator[tuple[Question, dict]]:
    """Episodes for the questions; `positions` (index in the whole question set) fixes each
    episode's seed, so a resumed run samples exactly what an uninterrupted one would."""
    positions = positions or {q.id: i for i, q in enumerate(questions)}
    policy = load_policy(args.policy)
    make_env = args.env.env_factory()
    cache = PageCache(args.env.page_cache)
    n = max(1, args.best_of)
    config = run_config(args.policy, batch_size=args.batch)
    if n == 1:
        tasks = [
            Task(q.question, {"question_id": q.id, "candidate": 0}, seed=positions[q.id])
            for q in questions
        ]
        for i, record in run_episodes(policy, tasks, make_env, config):
            yield questions[i], episode_row(questions[i], record, cache, corpus)
        return
    from reward.model import RewardScorer

    scorer = RewardScorer(args.rm)
    temperature = best_of_temperature(args.policy)
    tasks = [
        task
        for q in questions
        for task in best_of_tasks(
            q.question, n, temperature, meta={"question_id": q.id}, seed=positions[q.id] * n
        )
    ]
    for qi, records in grouped(run_episodes(policy, tasks, make_env, config), n):
        row = best_of_row(questions[qi], records, scorer, cache, corpus, args.vote_weight)
        yield questions[qi], row


def best_of_row(
    question: Question,
    records: list[EpisodeRecord],
    scorer,
    cache,
    corpus=None,
    vote_weight: float | None = None,
) -> dict:
    """The chosen candidate's row, with every candidate's answer, temperature, reward-model
    `score`, `agreement` with the others, `final` score and metrics (so best-of-k for any
    k <= n can be read off the same run: `best_of_curve`). `vote_weight` None: the reward
    model's own; the row records the one used."""
    from reward.best_of_n import rank

    t0 = time.perf_counter()
    ranked = rank(question.question, records, scorer, vote_weight=vote_weight)
    scoring = time.perf_counter() - t0
    rows = [episode_row(question, r, cache, corpus) for r in records]
    best = dict(rows[ranked.best])
    best["candidates"] = [
        {
            "answer": row["answer"],
            "temperature": record.meta.get("temperature"),
            **ranked.judged(i),
            "em": row["em"],
            "supported": row["supported"],
            "actions": row["actions"],
            "seconds": row["seconds"] + scoring / len(records),
            "episode": row["episode"],
        }  # kept so another reward model can rescore: `rescore`
        for i, (row, record) in enumerate(zip(rows, records, strict=True))
    ]
    best["best"] = ranked.best
    best["vote_weight"] = ranked.vote_weight
    best["greedy_bonus"] = ranked.greedy_bonus
    best["seconds"] = sum(c["seconds"] for c in best["candidates"])
    return best


def rescore(rows: list[dict], scorer, vote_weight: float | None = None) -> list[dict]:
    """The same best-of-n rows with every candidate scored by another reward model (no new
    sampling): how two reward models rank the same candidates. `vote_weight` None: that
    reward model's own. Candidates of rows written before episodes were kept beside them
    cannot be rescored."""
    from reward.best_of_n import rank

    out = []
    for row in rows:
        cands = row.get("candidates") or []
        if not all("episode" in c for c in cands):
            raise ValueError("these best-of-n rows do not keep their candidates' episodes")
        eps = [EpisodeRecord.from_dict(c["episode"]) for c in cands]
        ranked = rank(row["question"], eps, scorer, vote_weight=vote_weight)
        out.append(
            {
                **row,
                "vote_weight": ranked.vote_weight,
                "greedy_bonus": ranked.greedy_bonus,
                "candidates": [{**c, **ranked.judged(i)} for i, c in enumerate(cands)],
            }
        )
    return out


def best_of_curve(rows: list[dict], vote_weight: float | None = None) -> list[dict]:
    """EM and seconds per question of best-of-k for k = 1, 2, 4, … n, from runs that kept all
    candidates: the judge (`reward.best_of_n.judge`) picks among each question's first k,
    their agreement counted among those k only, with `vote_weight` (None: each row's own, 0
    for rows from before the vote) and each row's greedy bonus.

    `won` / `lost`: questions best-of-k gets right and best-of-1 wrong, and the reverse. Their
    difference is the EM gain in questions; a gain of 3 from 5 won and 2 lost is a coin's toss
    (sign test), which a bare EM difference hides."""
    from reward.best_of_n import judge

    n = min((len(r["candidates"]) for r in rows if r.get("candidates")), default=0)
    out: list[dict] = []
    first: list[float] = []
    k = 1
    while k <= n:
        ems, secs, oracle = [], [], []
        for r in rows:
            cands = r["candidates"][:k]
            weight = r.get("vote_weight", 0.0) if vote_weight is None else vote_weight
            scores, answers = [c["score"] for c in cands], [c.get("answer") for c in cands]
            chosen = judge(scores, answers, weight, r.get("greedy_bonus", 0.0))
            ems.append(cands[chosen.best]["em"])
            oracle.append(max(c["em"] for c in cands))
            secs.append(sum(c["seconds"] for c in cands))
        first = first or ems
        out.append(
            {
                "k": k,
                "em": sum(ems) / len(ems),
                "oracle_em": sum(oracle) / len(oracle),
                "seconds_per_question": sum(secs) / len(secs),
                "won": sum(a > b for a, b in zip(ems, first, strict=True)),
                "lost": sum(a < b for a, b in zip(ems, first, strict=True)),
            }
        )
        k *= 2
    return out


def _rows_prompted(
    args: EvalArgs, questions: list[Question], corpus: CorpusIndex | None = None
) -> Iterator[tuple[Question, dict]]:
    """Closed-book and retrieve-then-read: one short completion per question, in batches."""
    policy = load_policy(args.policy)
    source = args.env.open()[0] if args.rag else None
    for start in range(0, len(questions), args.batch):
        chunk = questions[start : start + args.batch]
        prompts, passages, urls = [], [], []
        for q in chunk:
            if source is None:
                prompts.append(policy.format.closed_book(q.question, policy.tokenizer))
                passages.append([])
                urls.append([])
                continue
            pages = []
            hits = source.search(q.question, args.rag)
            for hit in hits:
                page = source.get(hit.url)
                pages.append((page.title, strip_markup(" ".join(page.lines))[:1500]))
            prompts.append(policy.format.rag(q.question, pages, policy.tokenizer))
            passages.append(pages)
            urls.append([hit.url for hit in hits])
        t0 = time.perf_counter()
        gens = policy.generate(
            prompts,
            max_new_tokens=24,
            sampling=sampling_of(args.policy),
            seeds=[args.policy.seed + start + i for i in range(len(chunk))],
        )
        seconds = (time.perf_counter() - t0) / len(chunk)
        for q, prompt, gen, pages, found in zip(chunk, prompts, gens, passages, urls, strict=True):
            answer = completion_to_action(gen.text)
            texts = [t for _, t in pages]
            holds = corpus.holder(q.aliases) if corpus is not None else None
            # no quotes to cite: the citation stages do not apply (shown as "—")
            row = {
                **score(q, answer),
                "supported": None,
                "citation_valid": None,
                "answer": answer,
                "actions": 0,
                "invalid_actions": 0,
                **funnel.passages_evidence(found, holds, args.rag),
                "seen_answer": float(any_alias_in(texts, q.aliases)) if pages else None,
                "seconds": seconds,
                "prompt": prompt,
                "completion": gen.text,
                "passages": [title for title, _ in pages],
            }
            yield q, row


def run_settings(args: EvalArgs) -> dict:
    """What a run directory's config.json records: a rerun must match it to resume."""
    return {
        "dataset": str(Path(args.dataset).resolve()),
        "mode": args.mode,
        "model": args.policy.model,
        "policy": args.policy.recorded(),
        "env": asdict(args.env),
        "best_of": args.best_of,
        "rm": args.rm,
        # best-of-n: candidate 0 greedy, the others at this temperature; a run dir from
        # before (every candidate sampled) lacks these and is refused, not mixed
        "best_of_temperature": best_of_temperature(args.policy) if args.best_of > 1 else None,
        "greedy_candidate": True if args.best_of > 1 else None,
        "vote_weight": args.vote_weight,
    }


def run(args: EvalArgs) -> Path:
    """Evaluate (resuming if the run directory has results) and write the reports."""
    if args.dataset is None:
        raise ValueError("give a dataset to evaluate, or --compare DIR DIR ...")
    args.rm = best_of_rm(args.best_of, args.rm)  # before the policy loads
    if args.vote_weight is not None:
        from reward.best_of_n import check_vote_weight

        check_vote_weight(args.vote_weight)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    questions = load_questions(args.dataset)[: args.limit]
    settings = run_settings(args)
    settings_file(out / "config.json", settings, flag_names(args))

    results_path = out / "results.jsonl"
    finished = list(read_jsonl(results_path)) if results_path.exists() else []
    done = {row["question_id"] for row in finished}
    todo = [q for q in questions if q.id not in done]
    corpus = corpus_of(args.env.open()[0]) if args.env.source != "web" else None

    from tqdm import tqdm

    bar = tqdm(
        total=len(questions), initial=len(questions) - len(todo), desc=f"eval {args.mode}", unit="q"
    )
    ems = [row["em"] for row in finished]
    rows = (
        _rows_prompted(args, todo, corpus)
        if (args.closed_book or args.rag)
        else _rows_browse(args, todo, {q.id: i for i, q in enumerate(questions)}, corpus)
    )
    if todo:
        for q, row in rows:
            row = {
                "question_id": q.id,
                "question": q.question,
                "aliases": list(q.aliases),
                "mode": args.mode,
                "in_corpus": corpus.contains(q.aliases) if corpus else None,
                **row,
            }
            append_jsonl(results_path, [row])  # one fsynced line per question: a kill loses nothing
            ems.append(row["em"])
            bar.update(1)
            bar.set_postfix(em=f"{sum(ems) / len(ems):.3f}")
    bar.close()
    write_reports(out, settings)
    return out


# ----------------------------------------------------------------------------- reports


def summarize(rows: list[dict], settings: dict) -> dict:
    n = len(rows)
    mean = partial(funnel.mean_of, rows)  # None when no row has the key (it does not apply)
    actions = sum(r["actions"] for r in rows)
    summary = {
        "n": n,
        "em": mean("em"),
        "f1": mean("f1"),
        "contains": mean("contains"),
        "supported": mean("supported"),
        "citation_valid": mean("citation_valid"),
        "mean_actions": actions / max(n, 1),
        "invalid_rate": sum(r["invalid_actions"] for r in rows) / max(actions, 1),
        "no_answer_rate": mean("no_answer"),
        "seconds_per_question": mean("seconds"),
        **funnel.summarize(rows),
    }
    curve = best_of_curve(rows) if any(r.get("candidates") for r in rows) else None
    if curve:
        summary["best_of_curve"] = curve
    return {
        **summary,
        "mode": settings["mode"],
        "model": settings["model"],
        "data": settings["dataset"],
        "settings": settings,
    }


def _table(summaries: list[tuple[str, dict]]) -> str:
    keys = SUMMARY_KEYS
    lines = ["| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, s in summaries:
        cells = []
        for k in keys:
            v = s.get(k)
            cells.append("—" if v is None else (str(v) if k == "n" else f"{v:.3f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_reports(out: Path, settings: dict) -> dict:
    rows = list(read_jsonl(out / "results.jsonl")) if (out / "results.jsonl").exists() else []
    summary = summarize(rows, settings)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    reader = (settings.get("policy") or {}).get("reader")
    if not settings["mode"].startswith("browse"):
        reader = None  # closed-book and rag-K runs browse nothing: no aid to narrow
    report = [
        f"# Evaluation: {settings['mode']} — {settings['model']}"
        + (f", reader {reader}" if reader else ""),
        "",
        f"Data: `{settings['dataset']}` ({summary['n']} questions)",
        "",
        _table([(settings["mode"], summary)]),
        "",
        *funnel.tables([(settings["mode"], summary)]),
        "`seen_answer`: an alias occurs in a page the agent opened (or the pasted passages); "
        "`in_corpus`: it occurs anywhere in the corpus — the coverage bounds; `supported`: "
        "an alias the answer names is in a quote it cites.",
        "",
        "![evidence funnel](funnel.png)",
        "",
        *_curve_table(summary.get("best_of_curve")),
        "![accuracy by number of actions](plot.png)",
        "",
        "Settings:",
        "```json",
        json.dumps(settings, indent=2),
        "```",
    ]
    (out / "report.md").write_text("\n".join(report) + "\n")
    _plot_by_actions(rows, out / "plot.png", settings["mode"])
    funnel.plot([(settings["mode"], summary)], out / "funnel.png")
    return summary


def _curve_table(curve: list[dict] | None) -> list[str]:
    if not curve:
        return []
    lines = [
        "Best-of-k from the same candidates (candidate 1 greedy; the judge picks: reward + "
        "vote weight × agreement among the k, + the greedy bonus for candidate 1; `oracle`: "
        "any candidate right):",
        "",
        "| k | EM | won / lost vs k=1 | oracle EM | s/question |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {c['k']} | {c['em']:.3f} | {c.get('won', '—')} / {c.get('lost', '—')} | "
        f"{c['oracle_em']:.3f} | {c['seconds_per_question']:.1f} |"
        for c in curve
    ]
    return [*lines, ""]


def _plot_by_actions(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets: dict[str, list[dict]] = {}
    edges = [(0, 0), (1, 5), (6, 10), (11, 20), (21, 50), (51, 10**6)]
    for lo, hi in edges:
        label = str(lo) if lo == hi else (f"{lo}-{hi}" if hi < 10**6 else f"{lo}+")
        buckets[label] = [r for r in rows if lo <= r["actions"] <= hi]
    labels = [k for k, v in buckets.items() if v]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    x = range(len(labels))
    for offset, key in [(-0.2, "em"), (0.0, "contains"), (0.2, "supported")]:
        ax.bar(
            [i + offset for i in x],
            [sum(r[key] or 0 for r in buckets[k]) / len(buckets[k]) for k in labels],
            width=0.2,
            label=key,
        )
    ax.set_xticks(list(x), [f"{k}\n(n={len(buckets[k])})" for k in labels])
    ax.set_xlabel("actions taken")
    ax.set_ylabel("share of questions")
    ax.set_title(f"Accuracy by number of actions — {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_labels(dirs: Sequence[str]) -> list[str]:
    """Each run's name in a comparison: its directory's, plus its arithmetic (int8 / fp32) and
    search engine when the runs differ in them (from each config.json), so an int8 run and an
    fp32 run of the same model are told apart."""
    settings = []
    for d in dirs:
        path = Path(d) / "config.json"
        settings.append(json.loads(path.read_text()) if path.exists() else {})
    arithmetic = [
        {True: "int8", False: "fp32"}.get(s.get("policy", {}).get("int8"), "int8 ?")
        for s in settings
    ]
    search = [f"search {s.get('env', {}).get('search', '?')}" for s in settings]
    tags = [[] for _ in dirs]
    for column in (arithmetic, search):
        if len(set(column)) > 1:
            for row, tag in zip(tags, column, strict=True):
                row.append(tag)
    return [
        Path(d).name + (f" ({', '.join(row)})" if row else "")
        for d, row in zip(dirs, tags, strict=True)
    ]


def compare(dirs: Sequence[str], out: str) -> Path:
    """One report (table + bar chart) over several run directories."""
    summaries = []
    for d, label in zip(dirs, run_labels(dirs), strict=True):
        path = Path(d) / "summary.json"
        if not path.exists():
            raise ValueError(f"{d} has no summary.json: run `webagent eval` there first")
        summaries.append((label, json.loads(path.read_text())))
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    (target / "compare.md").write_text(
        "# Comparison\n\n"
        + _table(summaries)
        + "\n\n![EM across runs](compare.png)\n\n"
        + "\n".join(funnel.tables(summaries))
        + "\n![evidence funnel](funnel.png)\n"
    )
    funnel.plot(summaries, target / "funnel.png")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(summaries)), 3.6))
    keys = ["em", "f1", "contains", "supported"]
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        ax.bar(
            [i + (j - 1.5) * width for i in range(len(summaries))],
            [s.get(key) or 0 for _, s in summaries],
            width=width,
            label=key,
        )
    ax.set_xticks(range(len(summaries)), [name for name, _ in summaries])
    ax.set_ylabel("score")
    ax.set_title("EM across runs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(target / "compare.png", dpi=110)
    plt.close(fig)
    return target
