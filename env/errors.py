"""Typed failures of page sources, rendering and the cache. Nothing returns a silent None.

The browser turns any `PageError` into an action error the model sees; callers outside the
browser (CLI, replay) turn them into a clear message and a non-zero exit.
"""

from __future__ import annotations


class PageError(Exception):
    """A page could not be had; the message is written for the model and the user."""


class PageNotFound(PageError):
    """The source has no page at that URL."""


class BlockedURL(PageError):
    """The URL is refused: private/loopback/link-local target, bad scheme, or blocked domain."""


class FetchError(PageError):
    """The network fetch failed: timeout, connection error, HTTP error, redirect loop."""


class PageTooLarge(PageError):
    """The body is over the byte cap."""


class UnsupportedContent(PageError):
    """The body is not HTML, plain text or PDF (images, archives, binary)."""


class SearchError(PageError):
    """The search backend failed or is not configured."""


class CacheError(PageError):
    """A page-cache entry is missing (offline replay) or fails its content hash (tampered)."""
