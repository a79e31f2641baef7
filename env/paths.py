"""Where webagent keeps what it builds once and reuses (models, search indexes, pages, history).

One root for all of it, so one variable moves it: `$WEBAGENT_CACHE` (a leading `~` expanded),
else `~/.cache/webagent`. Its parts: `models/` (prepared models), `index/` (search indexes),
`pages/` (the page cache), `repl_history`. And how a file on disk is fingerprinted
(`file_sha256`: training data in a run's resume fingerprint, cached embeddings).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """`$WEBAGENT_CACHE` (with `~` expanded), else `~/.cache/webagent`; read at each call, so
    a test or a caller can point it elsewhere."""
    env = os.environ.get("WEBAGENT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "webagent"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (files may be larger than memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
