"""Page sources behind one interface, chosen by a spec string.

`open_source("wiki")` is the default local Wikipedia; `"zim:PATH"` a Kiwix archive;
`"jsonl:PATH"` a user's `{"url","title","text"}` corpus; `"web"` the live web (with a
SearxNG endpoint for search, from `searx=` or $WEBAGENT_SEARX_URL); `"cache"` only what the
page cache holds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from env.sources.base import PageSource, SearchHit

__all__ = ["PageSource", "SearchHit", "open_source", "check_spec", "SOURCE_SPECS", "LOCAL_KINDS"]

SOURCE_SPECS = "wiki | zim:PATH | jsonl:PATH | web | cache"
LOCAL_KINDS = frozenset({"wiki", "zim", "jsonl"})
"""Sources searched by our own engine (BM25 or hybrid); the others search elsewhere."""


def open_source(
    spec: str = "wiki",
    *,
    searx: str | None = None,
    allow_private: bool = False,
    allow_hosts: Sequence[str] = (),
    dense: bool = True,
) -> PageSource:
    """Build the source a spec names; ValueError (listing the valid specs) for anything else.

    `allow_private` and `allow_hosts` are for "web" (pages and the SearxNG endpoint): every
    private address, or exactly these hosts as written in URLs (each redirect hop is checked
    again, so a host allowed does not open what it redirects to). `dense=False`: a local source
    (wiki, zim, jsonl) searches with BM25 alone, never loading the encoder or its vectors."""
    kind, arg = check_spec(spec)
    if kind == "wiki":
        from env.sources.wiki import local_wikipedia

        return local_wikipedia(dense=dense)
    if kind == "zim":
        from env.sources.zim import ZimSource

        return ZimSource(arg, dense=dense)
    if kind == "jsonl":
        from env.sources.local import jsonl_source

        return jsonl_source(arg, dense=dense)
    if kind == "web":
        from env.sources.searx import SearxSearch
        from env.sources.web import LiveWeb

        endpoint = searx or os.environ.get("WEBAGENT_SEARX_URL")
        guard = {"allow_private": allow_private, "allow_hosts": tuple(allow_hosts)}
        search = SearxSearch(endpoint, **guard) if endpoint else None
        return LiveWeb(search, **guard)
    from env.cache import PageCache
    from env.sources.cache import CacheSource

    return CacheSource(PageCache())


def check_spec(spec: str) -> tuple[str, str]:
    """(kind, argument) of a source spec, without opening anything: a bad spec or a missing
    archive fails here, before a model loads. ValueError lists the valid specs."""
    kind, _, arg = spec.partition(":")
    if kind in {"wiki", "web", "cache"} and not arg:
        return kind, arg
    if kind in {"zim", "jsonl"} and arg:
        if not os.path.isfile(arg):
            raise ValueError(f"page source {spec!r}: {arg} is not a file")
        return kind, arg
    raise ValueError(f"unknown page source {spec!r}; expected {SOURCE_SPECS}")
