"""A local corpus of documents behind BM25: the base of the Wikipedia, JSONL and ZIM sources.

`DocumentSource` answers `search` from a persisted bm25s index and `get` from a URL table. How a
document becomes a page is the subclass's business (`render`), so the local Wikipedia can add
links and a ZIM archive can render its own HTML.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from env.dense import HybridRetriever, hybrid_or_bm25
from env.errors import PageNotFound, SearchError
from env.limits import RenderLimits
from env.pages import Page, text_to_page
from env.paths import cache_root
from env.search import Bm25Index, Document, cached_index, snippet
from env.sources.base import SearchHit


def index_cache_dir() -> Path:
    """Persisted search indexes: `index/` under the cache root."""
    return cache_root() / "index"


def url_key(url: str) -> str:
    """URLs that name the same document compare equal: no fragment, decoded, spaces as '_'."""
    parts = urlsplit(url.strip())
    path = unquote(parts.path).replace(" ", "_")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


class DocumentSource:
    """Search and open a fixed list of documents."""

    def __init__(
        self,
        name: str,
        docs: Sequence[Document],
        index: Bm25Index | HybridRetriever,
        *,
        limits: RenderLimits = RenderLimits(),
    ):
        if len(index) != len(docs):
            raise ValueError(f"index has {len(index)} documents, corpus has {len(docs)}")
        self.name = name
        self.docs = list(docs)
        self.index = index
        self.limits = limits
        self.by_url = {url_key(d.url): i for i, d in enumerate(self.docs)}

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        if not query.strip():
            raise SearchError("empty search query")
        return ranked_hits(self.index, self.docs, query, k)

    def get(self, url: str) -> Page:
        i = self.by_url.get(url_key(url))
        if i is None:
            raise PageNotFound(f"{url} is not in the {self.name} corpus")
        return self.render(i)

    def render(self, i: int) -> Page:
        doc = self.docs[i]
        return text_to_page(doc.text, doc.url, doc.title, limits=self.limits)

    def __len__(self) -> int:
        return len(self.docs)


def ranked_hits(
    index: Bm25Index | HybridRetriever, docs: Sequence[Document], query: str, k: int
) -> list[SearchHit]:
    """Search hits of a local corpus; a hybrid index cuts each snippet from the best passage."""
    if isinstance(index, HybridRetriever):
        return [
            SearchHit(docs[i].url, docs[i].title, snippet(passage, query), score)
            for i, score, passage in index.search_passages(query, k)
        ]
    return [
        SearchHit(docs[i].url, docs[i].title, snippet(docs[i].text, query), score)
        for i, score in index.search(query, k)
    ]


def load_jsonl_corpus(path: str | Path) -> list[Document]:
    """A user's corpus: one `{"url","title","text"}` per line; errors name the line."""
    path = Path(path)
    docs: list[Document] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                docs.append(Document(str(row["url"]), str(row["title"]), str(row["text"])))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{path}:{n}: expected a JSON object with url, title and text ({exc})"
                ) from exc
    if not docs:
        raise ValueError(f"{path}: no documents")
    return docs


def jsonl_source(
    path: str | Path, *, cache_dir: str | Path | None = None, dense: bool = True
) -> DocumentSource:
    """A DocumentSource over a JSONL corpus, its BM25 index (and passage vectors, for hybrid
    search) built once and persisted."""
    path = Path(path)
    docs = load_jsonl_corpus(path)
    key = "jsonl-" + fingerprint(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)
    index = cached_index(
        Path(cache_dir) if cache_dir else index_cache_dir(),
        key,
        lambda: [f"{d.title}. {d.text}" for d in docs],
    )
    cache = Path(cache_dir) if cache_dir else index_cache_dir()
    return DocumentSource(
        f"jsonl:{path}", docs, hybrid_or_bm25(docs, index, cache, dense=dense, corpus_key=key)
    )
