"""Writing a policy checkpoint: the directory `webagent.models.load` reads (BC's and PPO's).

A policy directory holds the adapter (or full weights, with their tokenizer), `webagent.json`
(base model, prompt format, answer style, provenance) and whatever else a trainer adds (PPO's
value head). It is written beside the target and moved in file by file, so a kill never leaves
a policy whose weights and metadata disagree about which run they came from.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from webagent.models import CHECKPOINT_META

KEEP = ("last", "log.jsonl", "MODEL_CARD.md")
"""Files of a run directory that a new policy does not replace (resume state, log, card)."""


def save_policy(
    model, tokenizer, directory: Path, meta: dict, extra: Callable[[Path], None] | None = None
) -> None:
    """The loadable policy: adapter (or full weights) + tokenizer + webagent.json, atomically;
    `extra(tmp)` writes a trainer's own files beside them."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    if meta.get("adapter") is None:  # full fine-tune: a plain HF directory needs its tokenizer
        tokenizer.save_pretrained(tmp)
    if extra is not None:
        extra(tmp)
    (tmp / CHECKPOINT_META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    _replace_dir(tmp, directory, keep=KEEP)


def _replace_dir(tmp: Path, directory: Path, keep: tuple[str, ...] = ()) -> None:
    """Move tmp's files into directory (files replaced one by one with os.replace)."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        if old.name not in keep and old.is_file() and not (tmp / old.name).exists():
            old.unlink()
    for f in tmp.iterdir():
        os.replace(f, directory / f.name)
    tmp.rmdir()
