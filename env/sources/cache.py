"""The page cache as a source: serves only what it already holds, and never searches.

This is the one offline page source: `"cache"` browsing opens cached URLs, and replay
(`webagent.replay`) names it after the recorded source while the browser looks pages up by id.
"""

from __future__ import annotations

from env.cache import PageCache
from env.errors import PageNotFound, SearchError
from env.pages import Page
from env.search import SearchHit


class CacheSource:
    """A page source that serves only what the cache already holds (offline browsing)."""

    def __init__(self, cache: PageCache, name: str = "cache"):
        self.cache = cache
        self.name = name
        """What records say the pages came from: "cache", or the recorded source in replay."""

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        raise SearchError("the page cache cannot search; open cached URLs directly")

    def get(self, url: str) -> Page:
        page_id = self.cache.latest_for_url(url)
        if page_id is None:
            raise PageNotFound(f"{url} is not in the page cache")
        return self.cache.get(page_id)
