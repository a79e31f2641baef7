"""Where webagent keeps what it builds once and reuses (models, search indexes, pages, history).

One root for all of it, so one variable moves it: `$WEBAGENT_CACHE` (a leading `~` expanded),
else `~/.cache/webagent`. Its parts: `models/` (prepared models), `index/` (search indexes),
`pages/` (the page cache), `repl_history`.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$WEBAGENT_CACHE` (with `~` expanded), else `~/.cache/webagent`; read at each call, so
    a test or a caller can point it elsewhere."""
    env = os.environ.get("WEBAGENT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "webagent"
