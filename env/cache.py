"""The content-addressed page cache: every page shown is kept, so episodes replay offline.

Layout under the cache root:
    pages/<aa>/<sha256>.json   the rendered page (what the model saw) + url, source, fetch time
    raw/<aa>/<sha256>          the raw bytes it was rendered from, when there were any
    urls/<aa>/<sha256(url)>    the id of the latest page stored for a URL (offline `get`)
A page's id is `Page.id` (sha256 of its canonical JSON), so `get` can prove an entry is
untampered, and writing the same page twice is a no-op. Writes go to a temp file and are
renamed into place, so a killed process never leaves a half entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from env.errors import CacheError
from env.pages import Page
from env.paths import cache_root


def default_cache_root() -> Path:
    """The page cache's default directory: `pages/` under the cache root."""
    return cache_root() / "pages"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PageCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_root()

    def _page_path(self, page_id: str) -> Path:
        digest = page_id.removeprefix("sha256:")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise CacheError(f"not a page id: {page_id!r}")
        return self.root / "pages" / digest[:2] / f"{digest}.json"

    def put(self, page: Page, *, source: str = "") -> str:
        """Store a page (and its raw bytes, if `page.meta['raw']`); returns its id."""
        page_id = page.id
        path = self._page_path(page_id)
        raw = page.meta.get("raw")
        raw_sha = None
        if isinstance(raw, bytes | bytearray):
            raw_sha = _sha(bytes(raw))
            raw_path = self.root / "raw" / raw_sha[:2] / raw_sha
            if not raw_path.exists():
                _atomic_write(raw_path, bytes(raw))
        if not path.exists():
            entry = {
                "id": page_id,
                "page": page.to_dict(),
                "source": source,
                "stored_at": time.time(),
                "fetched_at": page.meta.get("fetched_at"),
                "content_type": page.meta.get("content_type"),
                "raw_sha256": raw_sha,
            }
            _atomic_write(path, json.dumps(entry, ensure_ascii=False).encode("utf-8"))
        url_key = _sha(page.url.encode("utf-8"))
        _atomic_write(self.root / "urls" / url_key[:2] / url_key, page_id.encode("ascii"))
        return page_id

    def get(self, page_id: str) -> Page:
        """The page with this id; CacheError if missing or if its content does not hash to it."""
        path = self._page_path(page_id)
        try:
            entry = json.loads(path.read_bytes())
            page = Page.from_dict(entry["page"])
        except FileNotFoundError:
            raise CacheError(f"page {page_id} is not in the cache at {self.root}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"page {page_id}: unreadable cache entry ({exc})") from exc
        if page.id != page_id:
            raise CacheError(
                f"page {page_id} was tampered with: its content now hashes to {page.id} ({path})"
            )
        return page

    def raw(self, page_id: str) -> bytes | None:
        """The raw bytes a page was rendered from, if they were stored."""
        entry = json.loads(self._page_path(page_id).read_bytes())
        sha = entry.get("raw_sha256")
        if not sha:
            return None
        data = (self.root / "raw" / sha[:2] / sha).read_bytes()
        if _sha(data) != sha:
            raise CacheError(f"raw bytes of {page_id} were tampered with")
        return data

    def __contains__(self, page_id: str) -> bool:
        try:
            return self._page_path(page_id).exists()
        except CacheError:
            return False

    def latest_for_url(self, url: str) -> str | None:
        key = _sha(url.encode("utf-8"))
        path = self.root / "urls" / key[:2] / key
        return path.read_text().strip() if path.exists() else None
