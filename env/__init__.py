"""The WebGPT text-browser environment: commands, pages, sources, observations, records.

The package loads nothing itself (PEP 562): `import env.commands` stays pure and light, and
`from env import BrowserEnv` imports the browser (and gymnasium) only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from env.browser import BrowserEnv, EnvConfig
    from env.record import EpisodeRecord, Step

__all__ = ["BrowserEnv", "EnvConfig", "EpisodeRecord", "Step"]


def __getattr__(name: str) -> Any:
    if name in ("BrowserEnv", "EnvConfig"):
        from env import browser

        return getattr(browser, name)
    if name in ("EpisodeRecord", "Step"):
        from env import record

        return getattr(record, name)
    raise AttributeError(f"module 'env' has no attribute {name!r}")
