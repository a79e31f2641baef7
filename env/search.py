"""Search: one tokenizer, a persisted BM25 index (bm25s), snippets and the results page.

Page sources (local Wikipedia, ZIM, a JSONL corpus) index their documents with `Bm25Index`,
cache it on disk with `cached_index`, and turn ranked hits into the results `Page` the browser
shows with `results_page`. The dense and hybrid retrievers (`env/dense.py`) share `Retriever`.

Scoring is Lucene's BM25 (bm25s's default) with rank-bm25's k1=1.5, b=0.75: bm25s precomputes
each (term, document) score at build time, and a query sums the postings of its terms in one
sparse product, touching only documents that contain a query term. Lucene's idf,
log(1 + (N - df + 0.5) / (df + 0.5)), is always positive; the Okapi idf of rank-bm25 is
negative above df = N/2 and gets floored, so on a corpus of a few pages a word in most of them
would score nothing. Against `rank_bm25.BM25Okapi` the rankings agree closely and the scores
equal its formula with Lucene's idf, divided by k1 + 1 (tests pin both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable
from urllib.parse import urlencode, urlsplit

import bm25s
import numpy as np
import scipy.sparse as sp

from env.limits import RenderLimits
from env.observation import escape, escape_inline, link_marker, valid_text
from env.pages import Link, Page, wrap
from env.sources.base import SearchHit

# ----------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class Document:
    """One searchable document of a corpus: what an index row points back to."""

    url: str
    title: str
    text: str


# ----------------------------------------------------------------------------- tokenizer

# NLTK's English stop-word list plus the pieces our split leaves of contractions ("don't" ->
# "don", "t"). bm25s ships only Lucene's 33 words, which keep "what", "which", "who": words in
# nearly every question and no document's topic.
STOPWORDS_EN = frozenset(
    """
    a about above after again against ain all am an and any are aren as at be because been
    before being below between both but by can couldn d did didn do does doesn doing don down
    during each few for from further had hadn has hasn have haven having he her here hers
    herself him himself his how i if in into is isn it its itself just ll m ma me mightn more
    most mustn my myself needn no nor not now o of off on once only or other our ours ourselves
    out over own re s same shan she should shouldn so some such t than that the their theirs
    them themselves then there these they this those through to too under until up ve very was
    wasn we were weren what when where which while who whom why will with won wouldn y you your
    yours yourself yourselves
    """.split()  # noqa: SIM905 - a word list reads better as text
)
TOKENIZER_VERSION = 1
"""Bumped whenever `tokenize` changes: an index saved by another version is not loaded."""

_WORD = re.compile(r"[^\W_]+")  # unicode letters and digits; "_" and punctuation split words


def tokenize(text: str) -> list[str]:
    """Lower-case unicode words (digits kept), English stop words dropped; no stemming.

    The one tokenizer for indexing and querying, so a query term always meets its index term.
    """
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS_EN]


# ----------------------------------------------------------------------------- BM25 index

K1 = 1.5
B = 0.75
METHOD = "lucene"
"""bm25s variant: Okapi's term-frequency part with an idf that never goes negative."""

_META_FILE = "webagent_index.json"
"""Written last by `save`: a directory without it is not a complete index."""


@runtime_checkable
class Retriever(Protocol):
    """Anything that ranks a corpus for a query: `Bm25Index`, `env.dense.DenseIndex`, `HybridRetriever`."""

    def search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """(document index, score) pairs, best first, only positive scores."""
        ...


class Bm25Index:
    """Sparse BM25 (bm25s) over a list of texts; persisted to a directory, memory-mapped on load."""

    def __init__(self, model: bm25s.BM25):
        self._model = model
        self._vocab: dict[str, int] = model.vocab_dict
        scores = model.scores
        self._num_docs = int(scores["num_docs"])
        n_terms = len(scores["indptr"]) - 1
        # bm25s stores a (documents x terms) CSC matrix; the same three arrays read as CSR are
        # its (terms x documents) transpose, so a query product needs no copy of the index.
        self._postings = sp.csr_matrix(
            (scores["data"], scores["indices"], scores["indptr"]),
            shape=(n_terms, self._num_docs),
            copy=False,
        )

    # -- building and persistence

    @classmethod
    def build(cls, texts: Sequence[str], *, show_progress: bool = False) -> Bm25Index:
        """Index `texts`; row i of the index is texts[i]."""
        return cls.from_tokens((tokenize(t) for t in texts), show_progress=show_progress)

    @classmethod
    def from_tokens(
        cls, docs: Iterable[Sequence[str]], *, show_progress: bool = False
    ) -> Bm25Index:
        """Index documents already split by `tokenize` (lets a benchmark time the two apart)."""
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(tok, len(vocab)) for tok in doc] for doc in docs]
        model = bm25s.BM25(k1=K1, b=B, method=METHOD, backend="numpy")
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # mean length of an empty corpus
            model.index((ids, vocab), create_empty_token=False, show_progress=show_progress)
        return cls(model)

    def save(self, directory: str | Path) -> None:
        """Write the index files, then the metadata file that marks the directory complete."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / _META_FILE).unlink(missing_ok=True)  # overwriting: incomplete until done
        self._model.save(str(directory), show_progress=False)
        meta = {"tokenizer_version": TOKENIZER_VERSION, "num_docs": self._num_docs}
        (directory / _META_FILE).write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True) -> Bm25Index:
        """Open a saved index; FileNotFoundError if incomplete, ValueError if from another tokenizer.

        With `mmap` the score arrays stay on disk and pages are read as queries touch them.
        """
        directory = Path(directory)
        meta_path = directory / _META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory}: not a complete search index")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("tokenizer_version") != TOKENIZER_VERSION:
            raise ValueError(
                f"{directory}: index made by tokenizer version {meta.get('tokenizer_version')},"
                f" this code uses {TOKENIZER_VERSION}"
            )
        model = bm25s.BM25.load(str(directory), mmap=mmap, show_progress=False, verbosity=0)
        return cls(model)

    def __len__(self) -> int:
        return self._num_docs

    # -- querying

    def search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """(document index, score), best first, only score > 0; ties go to the lower index."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[tuple[int, float]]]:
        """`search` for each query, scored together in sparse products of bounded size."""
        results: list[list[tuple[int, float]]] = []
        # About 2**22 query-document pairs per product bounds the dense work of one chunk.
        chunk = max(1, min(256, (1 << 22) // max(1, self._num_docs)))
        for start in range(0, len(queries), chunk):
            results.extend(self._search_chunk(queries[start : start + chunk], k))
        return results

    def _query_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        """Rows = queries, columns = terms, values = how often the term is in the query.

        A repeated query word counts each time, as in bm25s and rank-bm25.
        """
        rows: list[int] = []
        cols: list[int] = []
        for row, query in enumerate(queries):
            for tok in tokenize(query):
                col = self._vocab.get(tok)
                if col is not None:
                    rows.append(row)
                    cols.append(col)
        data = np.ones(len(rows), dtype=np.float32)
        shape = (len(queries), self._postings.shape[0])
        return sp.csr_matrix((data, (rows, cols)), shape=shape)

    def _search_chunk(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        if k <= 0 or self._num_docs == 0:
            return [[] for _ in queries]
        scores = (self._query_matrix(queries) @ self._postings).tocsr()  # queries x docs
        out = []
        for row in range(len(queries)):
            lo, hi = scores.indptr[row], scores.indptr[row + 1]
            out.append(_top_k(scores.indices[lo:hi], scores.data[lo:hi], k))
        return out


def _top_k(docs: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best positive (doc, score) pairs; ties broken by doc index, so results are stable."""
    keep = scores > 0
    docs, scores = docs[keep], scores[keep]
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth  # everything tied with the k-th best, then cut after sorting
        docs, scores = docs[keep], scores[keep]
    order = np.lexsort((docs, -scores))[:k]
    return [(int(docs[i]), float(scores[i])) for i in order]


def cached_index(cache_dir: str | Path, key: str, texts: Callable[[], Sequence[str]]) -> Bm25Index:
    """The index saved under cache_dir/key, or one built from texts() and saved atomically.

    `key` names the corpus version (a fingerprint the caller chooses); a change rebuilds.
    """
    return cached_build(cache_dir, key, Bm25Index.load, lambda d: Bm25Index.build(texts()).save(d))


T = TypeVar("T")


def check_cache_key(key: str) -> None:
    """A cache key names one entry of a cache directory: never a path."""
    if not key or key in {".", ".."} or "/" in key or os.sep in key:
        raise ValueError(f"cache key must be a plain file name, got {key!r}")


def cached_build(
    cache_dir: str | Path, key: str, load: Callable[[Path], T], build: Callable[[Path], None]
) -> T:
    """load(cache_dir/key), or build(directory) into a temporary sibling renamed into place.

    A crash or an exception mid-build leaves nothing at cache_dir/key that a later call would
    load; an entry `load` rejects (FileNotFoundError, ValueError, OSError: stale, foreign or
    corrupted) is moved away and rebuilt. The one cache of the BM25 index and the embeddings.
    """
    check_cache_key(key)
    cache_dir = Path(cache_dir)
    final = cache_dir / key
    if final.exists():
        try:
            return load(final)
        except (FileNotFoundError, ValueError, OSError):
            _discard(final, cache_dir)  # stale or foreign: rebuild below
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.building-", dir=cache_dir))
    try:
        build(tmp)
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if final.exists():  # another process finished the same build first: use theirs
            return load(final)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load(final)


def _discard(path: Path, cache_dir: Path) -> None:
    """Move a bad cache entry out of the way (rename is atomic), then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=".discard-", dir=cache_dir))
    try:
        os.rename(path, trash / "old")
    except FileNotFoundError:
        pass  # another process moved it first
    finally:
        shutil.rmtree(trash, ignore_errors=True)


# ----------------------------------------------------------------------------- snippets

_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
ELLIPSIS = "…"


def snippet(text: str, query: str, max_chars: int = 200) -> str:
    """The sentences of `text` that best match the query, at most `max_chars` long.

    The sentence with the most distinct query words is taken with the sentences after it that
    still fit; a sentence too long to fit is cut to its best window of words, "…" marking each
    cut. With no query word in the text, the snippet is the text's beginning.
    """
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= max_chars:
        return text
    if max_chars <= len(ELLIPSIS):
        return ""
    wanted = set(tokenize(query))
    sentences = _SENTENCE_END.split(text)
    overlap = [len(wanted.intersection(tokenize(s))) for s in sentences]
    best = max(range(len(sentences)), key=lambda i: (overlap[i], -i))
    if overlap[best] == 0:
        best = 0
    if len(sentences[best]) > max_chars:
        return _window(sentences[best], wanted, max_chars, best > 0)
    out = sentences[best]
    for sentence in sentences[best + 1 :]:
        if len(out) + 1 + len(sentence) > max_chars:
            break
        out = f"{out} {sentence}"
    return out


def _window(sentence: str, wanted: set[str], max_chars: int, cut_before: bool) -> str:
    """The run of whole words of `sentence` covering the most query words, with "…" at cuts."""
    words = sentence.split(" ")
    hits = [wanted.intersection(tokenize(w)) for w in words]
    budget = max_chars - 2 * len(ELLIPSIS)  # room for a mark at either end

    def run(i: int) -> int:
        """End (exclusive) of the longest run from word i within the budget (at least one word)."""
        j, used = i, -1
        while j < len(words) and used + 1 + len(words[j]) <= budget:
            used += 1 + len(words[j])
            j += 1
        return max(j, i + 1)

    # Slide a window over the words, counting the distinct query words it covers.
    counts: Counter[str] = Counter()
    best_score, best_starts = -1, [0]
    j, used = 0, -1
    for i in range(len(words)):
        if j <= i:
            j, used = i, -1
            counts.clear()
        while j < len(words) and used + 1 + len(words[j]) <= budget:
            used += 1 + len(words[j])
            counts.update(hits[j])
            j += 1
        score = sum(1 for c in counts.values() if c > 0)
        if score > best_score:
            best_score, best_starts = score, [i]
        elif score == best_score and best_starts[-1] == i - 1:
            best_starts.append(i)  # the first run of equally good starts: take its middle
        if j > i:
            used -= len(words[i]) + 1
            counts.subtract(hits[i])
    start = best_starts[len(best_starts) // 2] if best_score > 0 else 0
    end = run(start)
    body = " ".join(words[start:end])
    cut_after = end < len(words)
    if len(body) > budget:  # one word longer than the whole snippet
        body, cut_after = body[:budget], True
    return (ELLIPSIS if cut_before or start > 0 else "") + body + (ELLIPSIS if cut_after else "")


# ----------------------------------------------------------------------------- results page

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:(//)?")


def results_page(
    query: str, hits: Sequence[SearchHit], *, limits: RenderLimits = RenderLimits()
) -> Page:
    """The results of a search as a Page the browser scrolls and clicks like any other.

    Each hit is a link marker line (domain always shown), its URL without scheme, then its
    snippet; links[i] is hit i, so "Click i" opens it.
    """
    lines: list[str] = []
    links: list[Link] = []
    for i, hit in enumerate(hits):
        lines.append(link_marker(i, hit.title, hit.url, ""))
        lines.append(escape_inline(_SCHEME.sub("", hit.url)))
        lines.extend(wrap(escape(hit.snippet), limits.line_width_chars))
        links.append(Link(valid_text(hit.url), valid_text(hit.title)))
    if not hits:
        lines.append(f"No results found for: {escape(_SPACE.sub(' ', query).strip())}")
    return Page(
        url="search:?" + urlencode({"q": valid_text(query)}),
        title=f"Search results for: {escape(_SPACE.sub(' ', query).strip())}",
        lines=tuple(lines[: limits.max_lines]),
        links=tuple(links),
        kind="search",
    )


# ----------------------------------------------------------------------------- hygiene

_PLAIN_WORD = re.compile(r"[^\W_]+")


def _ngrams(words: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def shares_ngram(question: str, text: str, n: int = 10) -> bool:
    """True if `text` contains any n words of `question` in a row (case-insensitive).

    WebGPT's evaluation hygiene: a page that quotes the question (a quiz site with the answer)
    is not fair evidence. Stop words are kept, as in the question. A question shorter than n
    words has no n-gram and never matches.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    grams = set(_ngrams(_PLAIN_WORD.findall(question.lower()), n))
    if not grams:
        return False
    return any(g in grams for g in _ngrams(_PLAIN_WORD.findall(text.lower()), n))


def _host(url: str) -> str:
    try:  # urlsplit itself raises on an unbalanced '[' (a search result's URL is outside input)
        host = urlsplit(url if "//" in url else "//" + url).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".")


def domain_blocked(url: str, blocked: Iterable[str]) -> bool:
    """True if the URL's host is a blocked domain or one of its subdomains.

    "wikipedia.org" blocks "en.wikipedia.org" and "wikipedia.org" but not "notwikipedia.org".
    Entries may be written "*.example.com" or ".example.com"; case does not matter.
    """
    host = _host(url)
    if not host:
        return False
    for entry in blocked:
        domain = entry.strip().lower().lstrip("*").strip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


_QUESTION_STOP = set(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "from",
        "and",
        "or",
        "is",
        "was",
        "were",
        "are",
        "be",
        "been",
        "which",
        "who",
        "whom",
        "what",
        "when",
        "where",
        "why",
        "how",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "his",
        "her",
        "their",
        "did",
        "does",
        "do",
        "name",
        "called",
        "known",
        "as",
    ]
)


def query_variants(question: str) -> list[str]:
    """Search queries a person would try for a question, best first: its key words, its named
    phrases, then the whole question. Used by the demonstrator and the admissible-action aid."""
    words = re.findall(r"[\w'’\-]+", question)
    content = [w for w in words if w.lower() not in _QUESTION_STOP]
    named = [
        n
        for n in re.findall(
            r"(?:[A-Z][\w'’\-]+(?:\s+(?:of|the|de|and)?\s*[A-Z][\w'’\-]+)*)", question
        )
        if n.lower() not in _QUESTION_STOP
    ]
    out = [" ".join(content[:8]), " ".join(named[:3]), " ".join(words)]
    return [q for q in dict.fromkeys(o.strip() for o in out) if q]
