"""Kiwix ZIM archives (libzim): real Wikipedia HTML with real links, offline.

Articles are served at public URLs: `https://<lang>.wikipedia.org/wiki/<Article>` for Wikipedia
archives (what a person would cite), `zim://<archive name>/<path>` for others. Links to other
articles of the archive (through redirects) stay links; links to pages the archive does not
hold are rendered as plain text, so every link the model sees can be followed. Search is BM25
over the articles' rendered text (built once, persisted); `search_backend="xapian"` uses the
archive's own full-text index instead, for archives too large to index here.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, unquote, urljoin

from env.dense import HybridRetriever, PassageConfig, hybrid_or_bm25
from env.errors import PageNotFound, SearchError
from env.limits import RenderLimits
from env.observation import strip_markup
from env.pages import Page, _parse, render_tree
from env.search import Bm25Index, Document, cached_index, snippet
from env.sources.base import SearchHit
from env.sources.local import fingerprint, index_cache_dir, ranked_hits, url_key

INTERNAL = "http://zim.invalid/"
"""Base for resolving an article's relative links (urljoin only resolves http-like schemes)."""


class ZimSource:
    def __init__(
        self,
        path: str | Path,
        *,
        search_backend: str = "bm25",
        limits: RenderLimits = RenderLimits(),
        cache_dir: str | Path | None = None,
        dense: bool = True,
        passages: PassageConfig = PassageConfig(),
    ):
        from libzim.reader import Archive

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no ZIM archive at {self.path}")
        try:
            self.archive = Archive(str(self.path))
        except RuntimeError as exc:
            raise ValueError(f"{self.path} is not a readable ZIM archive: {exc}") from exc
        self.name = f"zim:{self.path}"
        self.limits = limits
        meta_name = self._meta("Name") or self.path.stem
        lang = self._meta("Language") or "eng"
        m = re.match(r"wikipedia_([a-z]{2,3})_", meta_name)
        if m:
            self.base_url = f"https://{m.group(1)}.wikipedia.org/wiki/"
        elif lang.startswith("en") and (self._meta("Creator") or "").lower() == "wikipedia":
            self.base_url = "https://en.wikipedia.org/wiki/"
        else:
            self.base_url = f"zim://{meta_name}/"
        self.article_prefix = "" if self.archive.has_new_namespace_scheme else "A/"
        self._pages: dict[str, Page] = {}
        self.search_backend = search_backend
        self.docs: list[Document] = []
        self._index: Bm25Index | HybridRetriever | None = None
        self._dense = dense
        self._passages = passages
        self._cache_dir = Path(cache_dir) if cache_dir else index_cache_dir()

    # -- paths and URLs ---------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        try:
            return bytes(self.archive.get_metadata(key)).decode("utf-8", "replace")
        except (KeyError, RuntimeError):
            return None

    def public_url(self, path: str) -> str:
        article = path[len(self.article_prefix) :] if path.startswith(self.article_prefix) else path
        return self.base_url + quote(article, safe="_(),'!:-.")

    def _path_of(self, url: str) -> str | None:
        """Archive path of an entry for a public or internal URL, redirects followed."""
        key = url_key(url)
        for base in (url_key(self.base_url), INTERNAL):
            if key.startswith(base):
                article = unquote(key[len(base) :])
                break
        else:
            return None
        for candidate in (self.article_prefix + article, article):
            if candidate and self.archive.has_entry_by_path(candidate):
                entry = self.archive.get_entry_by_path(candidate)
                hops = 0
                while entry.is_redirect and hops < 10:
                    entry = entry.get_redirect_entry()
                    hops += 1
                return entry.path
        return None

    # -- pages ------------------------------------------------------------------------
    def get(self, url: str) -> Page:
        path = self._path_of(url)
        if path is None:
            raise PageNotFound(f"{url} is not in the archive {self.path.name}")
        if path not in self._pages:
            if len(self._pages) > 256:
                self._pages.clear()
            self._pages[path] = self._render(path)
        return self._pages[path]

    def _render(self, path: str) -> Page:
        entry = self.archive.get_entry_by_path(path)
        item = entry.get_item()
        if not item.mimetype.startswith("text/html"):
            raise PageNotFound(f"{self.public_url(path)} is not an article ({item.mimetype})")
        raw = bytes(item.content)
        tree = _parse(raw.decode("utf-8", "replace"))
        here = INTERNAL + path
        if tree is not None:
            for a in tree.iter("a"):
                href = a.get("href")
                if href is None:
                    continue
                target = urljoin(here, href)
                target_path = self._path_of(target) if target.startswith(INTERNAL) else None
                if target_path is None:
                    del a.attrib["href"]  # not in the archive: render as text
                else:
                    a.set("href", self.public_url(target_path))
        page = render_tree(tree, self.public_url(path), title=entry.title, limits=self.limits)
        page.meta.update({"raw": raw, "content_type": item.mimetype, "zim_path": path})
        return page

    def articles(self) -> list[str]:
        """Paths of every HTML article (no redirects, no assets), in archive order."""
        paths = []
        for i in range(self.archive.all_entry_count):
            entry = self.archive._get_entry_by_id(i)
            if entry.is_redirect or not entry.path.startswith(self.article_prefix):
                continue
            if entry.get_item().mimetype.startswith("text/html"):
                paths.append(entry.path)
        return paths

    # -- search -----------------------------------------------------------------------
    def _ensure_index(self) -> None:
        if self._index is not None:
            return
        paths = self.articles()
        self.docs = []
        for p in paths:
            page = self.get(self.public_url(p))
            self.docs.append(Document(page.url, page.title, strip_markup(page.text)))
        key = "zim-" + fingerprint(str(self.archive.uuid), self.path.stat().st_size, len(paths))
        bm25 = cached_index(
            self._cache_dir, key, lambda: [f"{d.title}. {d.text}" for d in self.docs]
        )
        self._index = hybrid_or_bm25(
            self.docs,
            bm25,
            self._cache_dir,
            dense=self._dense,
            passages=self._passages,
            corpus_key=key,
        )

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        if not query.strip():
            raise SearchError("empty search query")
        if self.search_backend == "xapian":
            return self._xapian(query, k)
        self._ensure_index()
        assert self._index is not None
        return ranked_hits(self._index, self.docs, query, k)

    def _xapian(self, query: str, k: int) -> list[SearchHit]:
        from libzim.search import Query, Searcher

        if not self.archive.has_fulltext_index:
            raise SearchError(f"{self.path.name} has no full-text index; use search_backend='bm25'")
        results = Searcher(self.archive).search(Query().set_query(query)).getResults(0, k)
        hits = []
        for rank, path in enumerate(results):
            page = self.get(self.public_url(path))
            text = strip_markup(page.text)
            hits.append(SearchHit(page.url, page.title, snippet(text, query), float(k - rank)))
        return hits
