"""The one small interface every page source implements, and what a search returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from env.pages import Page


@dataclass(frozen=True)
class SearchHit:
    """One ranked search result: what a results page lists and what retrieve-then-read reads."""

    url: str
    title: str
    snippet: str
    score: float


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
