"""Live search through a SearxNG instance's JSON API (`/search?q=...&format=json`).

SearxNG is a self-hostable metasearch engine; its JSON format must be enabled in the
instance's settings.yml (`search: formats: [html, json]`). The request goes through the same
guarded fetch as pages (SSRF check per hop, byte and time caps), so an instance on this machine
needs `allow_hosts=["127.0.0.1"]` (or `allow_private=True`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit

from env.errors import PageError, SearchError
from env.limits import FetchLimits
from env.sources.base import SearchHit
from env.sources.web import DEFAULT_USER_AGENT, GuardedClient

_WS = re.compile(r"\s+")
_MAX_TITLE_CHARS = 300
_MAX_SNIPPET_CHARS = 1_000


def _clean(value: object, max_chars: int) -> str:
    return _WS.sub(" ", value).strip()[:max_chars] if isinstance(value, str) else ""


class SearxSearch(GuardedClient):
    """`search(query, k)` against `{endpoint}/search`, results best first as SearchHits."""

    name = "searx"

    def __init__(
        self,
        endpoint: str,
        *,
        limits: FetchLimits = FetchLimits(),
        allow_private: bool = False,
        allow_hosts: Sequence[str] = (),
        user_agent: str = DEFAULT_USER_AGENT,
    ):
        if urlsplit(endpoint).scheme not in {"http", "https"}:
            raise SearchError(f"SearxNG endpoint must be an http(s) URL, got {endpoint!r}")
        super().__init__(
            limits=limits,
            allow_private=allow_private,
            allow_hosts=allow_hosts,
            user_agent=user_agent,
        )
        self.endpoint = endpoint.rstrip("/")

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        query = _WS.sub(" ", query).strip()
        if not query or k <= 0:
            return []
        url = f"{self.endpoint}/search?" + urlencode({"q": query, "format": "json"})
        try:
            fetched = self.fetch(url, accept="application/json")
        except PageError as exc:
            raise SearchError(f"SearxNG search failed: {exc}") from exc
        try:
            data = json.loads(fetched.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SearchError(
                f"SearxNG at {self.endpoint} did not return JSON ({exc}); is `json` in "
                "search.formats of its settings.yml?"
            ) from None
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise SearchError(f"SearxNG at {self.endpoint}: reply has no 'results' list")
        return self._hits(results, k)

    @staticmethod
    def _hits(results: list, k: int) -> list[SearchHit]:
        """Valid http(s) results in the engine's order, duplicates dropped, at most k."""
        hits: list[SearchHit] = []
        seen: set[str] = set()
        for rank, item in enumerate(results):
            if not isinstance(item, dict):
                continue
            url = item.get("url")
            if not isinstance(url, str) or urlsplit(url).scheme not in {"http", "https"}:
                continue
            if url in seen:
                continue
            seen.add(url)
            score = item.get("score")
            if not isinstance(score, int | float) or isinstance(score, bool):
                score = 1.0 / (rank + 1)  # the engine's order is its ranking
            hits.append(
                SearchHit(
                    url=url,
                    title=_clean(item.get("title"), _MAX_TITLE_CHARS) or url,
                    snippet=_clean(item.get("content"), _MAX_SNIPPET_CHARS),
                    score=float(score),
                )
            )
            if len(hits) >= k:
                break
        return hits
