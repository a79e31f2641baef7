"""The one small interface every page source implements; a search returns `SearchHit`s.

`SearchHit` lives beside the ranking in `env.search` (results pages and indexes build it without
importing the sources); it is re-exported here for the sources' sake.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from env.pages import Page
from env.search import SearchHit

__all__ = ["PageSource", "SearchHit", "Searcher"]


@runtime_checkable
class PageSource(Protocol):
    """A place pages come from. Failures raise `env.errors.PageError` subclasses, never None."""

    name: str
    """Short label stored in episode records ('wiki', 'zim:…', 'web', 'jsonl:…')."""

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        """Ranked hits for a query, best first (SearchError if the backend fails)."""
        ...

    def get(self, url: str) -> Page:
        """The rendered page at `url` (PageNotFound, BlockedURL, FetchError, ...)."""
        ...


class Searcher(Protocol):
    """A search backend without pages of its own (SearxNG behind `LiveWeb`)."""

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        """Ranked hits for a query, best first (SearchError if the backend fails)."""
        ...
