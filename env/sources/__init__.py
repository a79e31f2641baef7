"""Page sources behind one interface, chosen by a spec string.

`open_source("wiki")` is the default local Wikipedia; `"zim:PATH"` a Kiwix archive;
`"jsonl:PATH"` a user's `{"url","title","text"}` corpus; `"web"` the live web (with a
SearxNG endpoint for search, from `searx=` or $WEBAGENT_SEARX_URL); `"cache"` only what the
page cache holds.
"""

from __future__ import annotations

import os

from env.sources.base import PageSource, SearchHit

__all__ = ["PageSource", "SearchHit", "open_source", "SOURCE_SPECS"]

SOURCE_SPECS = "wiki | zim:PATH | jsonl:PATH | web | cache"


def open_source(
    spec: str = "wiki", *, searx: str | None = None, allow_private: bool = False
) -> PageSource:
    """Build the source a spec names; ValueError (listing the valid specs) for anything else."""
    kind, _, arg = spec.partition(":")
    if kind == "wiki" and not arg:
        from env.sources.wiki import local_wikipedia

        return local_wikipedia()
    if kind == "zim" and arg:
        from env.sources.zim import ZimSource

        return ZimSource(arg)
    if kind == "jsonl" and arg:
        from env.sources.local import jsonl_source

        return jsonl_source(arg)
    if kind == "web" and not arg:
        from env.sources.searx import SearxSearch
        from env.sources.web import LiveWeb

        endpoint = searx or os.environ.get("WEBAGENT_SEARX_URL")
        search = SearxSearch(endpoint, allow_private=allow_private) if endpoint else None
        return LiveWeb(search, allow_private=allow_private)
    if kind == "cache" and not arg:
        from env.cache import CacheSource, PageCache

        return CacheSource(PageCache())
    raise ValueError(f"unknown page source {spec!r}; expected {SOURCE_SPECS}")
