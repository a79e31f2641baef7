"""Retrieval quality and speed: BM25, dense (MiniLM) and hybrid search over the local corpus.

Dense variants: the stock encoder, the fine-tuned one when its delta ships
(env/data/encoders; its passage vectors are embedded into the cache if not shipped), and the
default one with int8 queries. `--synthetic-docs 0` skips the 1M-passage timing.

    .venv/bin/python bench/retrieval.py            # dev + 1,000 held-out train questions, 1M synthetic
    .venv/bin/python bench/retrieval.py --quick    # 300 tuning questions, 50,000 synthetic passages

Recall@k: the share of questions for which an answer alias (TriviaQA normalisation, whole
words: `webagent.metrics.any_alias_in`) is in the title or text of one of the top k pages, the
question's words as the query. Fusion settings are chosen on the last `--tune` questions of
train.jsonl (never used for anything else) and only reported on dev.jsonl. "in corpus" is the
bound: an alias anywhere in the corpus.

Speed (one thread): index build (BM25; the passage embeddings, read from the cache's record
when cached), memory of each index, and single-query latency p50/p95 with the query embedded
for real (no query-vector cache). On 1M synthetic passages (bench/search.py's Zipf passages) the
dense part is timed on random unit vectors: its cost is a (passages x 384) product, whatever the
vectors hold.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from env import dense  # noqa: E402
from env.dense import (  # noqa: E402
    SHIPPED_DIR,
    DenseIndex,
    HybridConfig,
    HybridRetriever,
    PassageConfig,
    Passages,
    dense_index,
)
from env.dense import fuse as fuse_rankings  # noqa: E402
from env.search import Bm25Index, Document  # noqa: E402
from env.sources.local import index_cache_dir  # noqa: E402
from env.sources.wiki import corpus_key, load_summaries  # noqa: E402
from webagent.datasets import Question, load_questions  # noqa: E402
from webagent.metrics import any_alias_in  # noqa: E402

KS = (1, 3, 5, 10, 20)


@dataclass
class Args:
    """Retrieval benchmark."""

    quick: bool = False
    """Small run: 300 tuning questions, 50,000 synthetic passages, 100 timed queries."""
    shared_dir: Path = ROOT.parent / "shared"
    """Folder holding data/triviaqa/{train,dev}.jsonl."""
    tune: int = 1_000
    """Held-out train.jsonl questions (its last ones) the fusion settings are chosen on."""
    timed_queries: int = 200
    """Queries timed one by one for latency."""
    synthetic_docs: int = 1_000_000
    """Synthetic passages for the large-corpus timing (0: none)."""
    cache_dir: Path | None = None
    """Where embeddings are cached (default: the search index cache)."""
    passage_words: list[int] = field(default_factory=lambda: [64])
    """Passage sizes (max words) to compare; 1000 = one passage per page. Each is embedded once."""


# ----------------------------------------------------------------------------- recall


class Judge:
    """Does page d hold an alias of question q? Memoised (many rankings share pages)."""

    def __init__(self, docs: Sequence[Document], questions: Sequence[Question]):
        self.texts = [f"{d.title}. {d.text}" for d in docs]
        self.questions = questions
        self._memo: dict[tuple[int, int], bool] = {}

    def hit(self, q: int, d: int) -> bool:
        key = (q, d)
        if key not in self._memo:
            self._memo[key] = any_alias_in([self.texts[d]], self.questions[q].aliases)
        return self._memo[key]

    def recall(self, rankings: Sequence[Sequence[int]]) -> dict[int, float]:
        n = len(rankings)
        out = {}
        for k in KS:
            found = sum(any(self.hit(q, d) for d in r[:k]) for q, r in enumerate(rankings))
            out[k] = found / n
        return out

    def bound(self) -> float:
        """An alias anywhere in the corpus (one normalised text, as eval's CorpusIndex)."""
        from webagent.metrics import normalize_answer

        corpus = " " + " \n ".join(normalize_answer(t) for t in self.texts) + " "
        found = 0
        for q in self.questions:
            found += any(f" {a} " in corpus for a in map(normalize_answer, q.aliases) if a)
        return found / len(self.questions)


def fuse(
    bm25: Sequence[tuple[int, float]], dense_pages: Sequence[tuple[int, float]], cfg: HybridConfig
) -> list[int]:
    """HybridRetriever's fusion (`env.dense.fuse`) on precomputed rankings, to tune fast."""
    return [d for d, _ in fuse_rankings(bm25, dense_pages, cfg)[: max(KS)]]


# ----------------------------------------------------------------------------- timing


def latencies(search: Callable[[str], object], queries: Sequence[str]) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per query: CPU time is what a query costs on a machine shared with
    other jobs, wall time what it waited."""
    for q in queries[:3]:
        search(q + " warm")
    out = []
    for q in queries:
        start, cpu = time.perf_counter(), time.thread_time()
        search(q)
        out.append((time.perf_counter() - start, time.thread_time() - cpu))
    return out


def ms(xs: Sequence[tuple[float, float]], pct: float, which: int = 0) -> str:
    return f"{np.percentile([x[which] * 1000 for x in xs], pct):.1f}" if xs else "-"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    rows = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for j, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def clear_query_cache() -> None:
    dense._QUERY_VECTORS.clear()


# ----------------------------------------------------------------------------- run


def run(args: Args) -> int:
    import torch

    torch.set_num_threads(1)
    if args.quick:
        args.tune = min(args.tune, 300)
        args.timed_queries = min(args.timed_queries, 100)
        args.synthetic_docs = min(args.synthetic_docs, 50_000)
    data = args.shared_dir / "data" / "triviaqa"
    dev = load_questions(data / "dev.jsonl")
    tune = load_questions(data / "train.jsonl")[-args.tune :]
    cache_dir = args.cache_dir or index_cache_dir()
    docs = load_summaries()
    wiki_key = corpus_key("en-us", docs)
    notes: list[str] = []

    start = time.perf_counter()
    bm25 = Bm25Index.build([f"{d.title}. {d.text}" for d in docs])
    bm25_build = time.perf_counter() - start
    encoders = {"MiniLM": dense.Encoder()}
    tuned = dense.tuned_path(dense.DEFAULT_ENCODER)
    if tuned.is_file():  # the fine-tuned encoder (webagent/train_retriever.py), fp32 and int8
        encoders["MiniLM fine-tuned"] = dense.Encoder(tuned=tuned)
    default_label = list(encoders)[-1]
    encoders[f"{default_label}, int8 queries"] = dense.Encoder(
        tuned=encoders[default_label].tuned, int8_queries=True
    )
    indexes: dict[tuple[int, str], DenseIndex] = {}
    builds: dict[tuple[int, str], str] = {}
    for words in args.passage_words:
        for encoder in encoders.values():
            if (words, encoder.id) in indexes:
                continue  # int8 queries: the same passage vectors as its fp32 sibling
            start = time.perf_counter()
            index = dense_index(
                docs,
                cache_dir,
                encoder=encoder,
                passages=PassageConfig(words),
                shipped=SHIPPED_DIR,
                corpus_key=wiki_key,
            )
            took = time.perf_counter() - start
            key = dense.dense_key(index.passages, encoder, wiki_key)
            where = Path(cache_dir) / key
            info = dense.embeddings_info(where if where.is_dir() else SHIPPED_DIR / key)
            built = info.get("build_seconds")
            builds[words, encoder.id] = (
                f"{built:.0f}" if built is not None and took < 5 else f"{took:.0f}"
            )
            indexes[words, encoder.id] = index
            print(
                f"{encoder.id}, passages <= {words} words: {len(index.passages):,} ({took:.1f} s)"
            )

    sets = {"tune": tune, "dev": dev}
    # dense variants: (passage words, encoder label)
    variants = [(w, e) for w in args.passage_words for e in encoders]
    qvecs: dict[tuple[str, str], np.ndarray] = {}
    for label, encoder in encoders.items():
        for name, qs in sets.items():
            start = time.perf_counter()
            qvecs[name, label] = encoder.encode_queries([q.question for q in qs])
            took = time.perf_counter() - start
            notes.append(f"{label}: embedding {len(qs)} {name} questions: {took:.1f} s")

    def vlabel(words: int, label: str) -> str:
        size = "one per page" if words >= 1000 else f"<= {words} words"
        return f"{label}, passages {size}"

    # per set: BM25 top 100, dense page rankings per variant
    results: dict[str, dict[str, list[list[int]]]] = {}
    pools: dict[str, dict] = {}
    for name, qs in sets.items():
        texts = [q.question for q in qs]
        b = bm25.search_many(texts, 100)
        dp = {}
        for words, label in variants:
            index = indexes[words, encoders[label].id]
            dp[(words, label)] = [index.search_vector(v, 100) for v in qvecs[name, label]]
        pools[name] = {"bm25": b, "dense": dp}
        results[name] = {"BM25 (pages)": [[d for d, _ in r] for r in b]}
        for v, rs in dp.items():
            results[name][f"dense {vlabel(*v)}"] = [[d for d, _ in r] for r in rs]

    judges = {name: Judge(docs, qs) for name, qs in sets.items()}

    # tune the fusion on the held-out train questions
    grid = []
    for v in variants:
        for rrf_k in (10.0, 30.0, 60.0):
            for dw in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0):
                grid.append((v, HybridConfig(rrf_k=rrf_k, bm25_weight=1.0, dense_weight=dw)))
    scored = []
    for v, cfg in grid:
        p = pools["tune"]
        rankings = [fuse(b, d, cfg) for b, d in zip(p["bm25"], p["dense"][v], strict=True)]
        r = judges["tune"].recall(rankings)
        scored.append((r[3] + r[10], v, cfg, r))
    scored.sort(key=lambda x: -x[0])
    _, best_v, best_cfg, _ = scored[0]
    best_words, best_label = best_v
    default = HybridConfig(rrf_k=60.0, bm25_weight=1.0, dense_weight=1.0)  # plain RRF
    for name in sets:
        p = pools[name]
        fused_rows = [
            (f"hybrid RRF k=60 1:1, {vlabel(w, e)}", (w, e), default) for w, e in variants
        ]
        fused_rows += [
            (
                f"hybrid default ({_cfg(dense.DEFAULT_HYBRID)}), {vlabel(w, e)}",
                (w, e),
                dense.DEFAULT_HYBRID,
            )
            for w, e in variants
        ]
        fused_rows.append(
            (
                f"hybrid tuned (k={best_cfg.rrf_k:g}, dense x{best_cfg.dense_weight:g}),"
                f" {vlabel(*best_v)}",
                best_v,
                best_cfg,
            )
        )
        for label, v, cfg in fused_rows:
            results[name][label] = [
                fuse(b, d, cfg) for b, d in zip(p["bm25"], p["dense"][v], strict=True)
            ]

    print()
    print(
        f"Recall@k: an answer alias in the top k pages (question's words as the query); "
        f"tune = last {len(tune)} train.jsonl questions, dev = dev.jsonl ({len(dev)})"
    )
    header = ["retriever", *(f"{s} @{k}" for s in sets for k in KS)]
    rows = []
    for label in results["dev"]:
        cells = [label]
        for name in sets:
            r = judges[name].recall(results[name][label])
            cells += [f"{100 * r[k]:.1f}" for k in KS]
        rows.append(cells)
    rows.append(
        ["alias anywhere in corpus (bound)"]
        + [f"{100 * judges[s].bound():.1f}" if k == KS[-1] else "" for s in sets for k in KS]
    )
    table(header, rows)
    print()
    print("Fusion grid on tune (top 5 by recall@3 + recall@10):")
    for _total, v, cfg, r in scored[:5]:
        print(
            f"- {vlabel(*v)}, rrf_k {cfg.rrf_k:g}, dense weight {cfg.dense_weight:g}:"
            f" @3 {100 * r[3]:.1f}, @10 {100 * r[10]:.1f}"
        )

    # speed on the local corpus: the default encoder, fp32 and int8 queries
    timed = [q.question for q in dev[: args.timed_queries]]
    speed = []
    encoder = encoders[default_label]
    index = indexes[args.passage_words[0], encoder.id]

    def cold(fn: Callable[[str], object]) -> Callable[[str], object]:
        def run_one(q: str) -> object:
            clear_query_cache()
            return fn(q)

        return run_one

    lat_b = latencies(lambda q: bm25.search(q, 10), timed)
    mem_b = _bm25_bytes(bm25)
    mem_d = index.vectors.nbytes
    build_d = builds[args.passage_words[0], encoder.id]
    speed.append(["wiki", "BM25", f"{len(docs):,}", f"{bm25_build:.1f}", _mb(mem_b), lat_b])
    for label in (default_label, f"{default_label}, int8 queries"):
        timed_index = DenseIndex(index.vectors, index.passages, encoders[label])
        timed_hybrid = HybridRetriever(bm25, timed_index, best_cfg)
        lat_q = latencies(cold(timed_index.query_vector), timed)
        lat_d = latencies(cold(lambda q, i=timed_index: i.search(q, 10)), timed)
        lat_h = latencies(cold(lambda q, h=timed_hybrid: h.search_passages(q, 10)), timed)
        n = f"{len(index.passages):,}"
        speed.append(["wiki", f"query embedding only ({label})", "-", "-", "-", lat_q])
        speed.append(["wiki", f"dense ({label})", n, build_d, _mb(mem_d), lat_d])
        speed.append(
            [
                "wiki",
                f"hybrid ({label}; BM25 + dense, fused, best passage)",
                n,
                f"{bm25_build + float(build_d):.0f}",
                _mb(mem_b + mem_d),
                lat_h,
            ]
        )
    if args.synthetic_docs > 0:
        synthetic(args, docs, index, best_cfg, timed, speed, cold)

    print("\nSpeed (1 thread; build s = BM25 index / passage embeddings; memory = index arrays):")
    table(
        [
            "corpus",
            "engine",
            "passages",
            "build s",
            "memory",
            "p50 ms",
            "p95 ms",
            "CPU p50 ms",
            "CPU p95 ms",
            "queries",
        ],
        [
            [*r[:5], ms(r[5], 50), ms(r[5], 95), ms(r[5], 50, 1), ms(r[5], 95, 1), str(len(r[5]))]
            for r in speed
        ],
    )
    print()
    for note in notes:
        print("- " + note)
    print(f"- chosen on tune: {json.dumps(best_cfg.__dict__)}, {vlabel(*best_v)}")
    print("- machine: 2 cores shared with other jobs")
    return 0


def synthetic(
    args: Args,
    docs: Sequence[Document],
    index: DenseIndex,
    best_cfg: HybridConfig,
    timed: list[str],
    speed: list,
    cold: Callable,
) -> None:
    """Timings on synthetic passages (BM25 on Zipf text, dense on random unit vectors)."""
    from search import synthetic_texts  # bench/search.py: the same Zipf passages

    from env.search import tokenize

    counts: dict[str, int] = {}
    for d in docs:
        for t in tokenize(f"{d.title}. {d.text}"):
            counts[t] = counts.get(t, 0) + 1
    vocab = sorted(counts, key=lambda w: -counts[w])
    n = args.synthetic_docs
    print(f"\nsynthetic: {n:,} passages ...", flush=True)
    texts = synthetic_texts(vocab, n, 0)
    start = time.perf_counter()
    sb = Bm25Index.build(texts)
    sb_build = time.perf_counter() - start
    del texts
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, index.vectors.shape[1]), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    synth_passages = Passages([""] * n, [""] * n, np.arange(n, dtype=np.int64), PassageConfig())
    sd = DenseIndex(vecs, synth_passages, index.encoder)
    del vecs
    sh = HybridRetriever(sb, sd, best_cfg)
    slow = timed[: max(20, len(timed) // 4)]
    speed.append(
        [
            "synthetic",
            "BM25",
            f"{n:,}",
            f"{sb_build:.0f}",
            _mb(_bm25_bytes(sb)),
            latencies(lambda q: sb.search(q, 10), slow),
        ]
    )
    speed.append(
        [
            "synthetic",
            "dense (random vectors)",
            f"{n:,}",
            "-",
            _mb(sd.vectors.nbytes),
            latencies(cold(lambda q: sd.search(q, 10)), slow),
        ]
    )
    speed.append(
        [
            "synthetic",
            "hybrid",
            f"{n:,}",
            "-",
            _mb(_bm25_bytes(sb) + sd.vectors.nbytes),
            latencies(cold(lambda q: sh.search_passages(q, 10)), slow),
        ]
    )


def _cfg(cfg: HybridConfig) -> str:
    return f"k={cfg.rrf_k:g}, dense x{cfg.dense_weight:g}"


def _bm25_bytes(index: Bm25Index) -> int:
    p = index._postings
    return int(p.data.nbytes + p.indices.nbytes + p.indptr.nbytes)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> int:
    import tyro

    return run(tyro.cli(Args))


if __name__ == "__main__":
    raise SystemExit(main())
