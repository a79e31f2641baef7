"""Checkpoint directories that survive a kill at any moment (shared by the RM, BC and PPO trainers).

A training run keeps what it needs to resume in OUT/last. `write_dir` fills a fresh `last.tmp`,
moves the previous `last` aside to `last.old`, renames the new one into place and only then
deletes the old one, so a kill leaves a complete `last` or (between the two renames) a complete
`last.old`; `complete_dir` finds whichever survived.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def _sibling(target: Path, suffix: str) -> Path:
    return target.with_name(target.name + suffix)


def write_dir(target: str | Path, fill: Callable[[Path], None]) -> Path:
    """Write a directory with `fill(tmp)`, then swap it in for `target`; returns `target`."""
    target = Path(target)
    tmp, old = _sibling(target, ".tmp"), _sibling(target, ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def complete_dir(target: str | Path) -> Path | None:
    """The last complete checkpoint: `target`, else a `target.old` a kill left behind (moved
    back into place), else None. A half-written `target.tmp` is never used."""
    target = Path(target)
    old = _sibling(target, ".old")
    if not target.exists() and old.exists():
        os.replace(old, target)
    return target if target.exists() else None


def resume_state(target: str | Path, name: str = "state.pt") -> Path | None:
    """The resume file `name` in the last complete checkpoint `target`, or None to start over."""
    found = complete_dir(target)
    return found / name if found is not None and (found / name).exists() else None


def check_fingerprint(stored: dict | None, current: dict, where: str | Path) -> None:
    """Refuse to continue a checkpoint that a run with other data or settings wrote: resuming
    it would silently mix two runs. The error names every setting that differs."""
    if stored == current:
        return
    stored = stored or {}
    diff = {
        k: (stored.get(k), current.get(k))
        for k in {**stored, **current}
        if stored.get(k) != current.get(k)
    }
    raise ValueError(
        f"{where} was written by a different run, with other settings ({diff}); "
        "use another --out or delete it"
    )


def settings_file(path: str | Path, settings: dict) -> None:
    """A resumable output's settings, beside it: the first run writes them, a rerun must have
    the same ones (keys the file has and `settings` lacks are not compared)."""
    path = Path(path)
    if path.exists():
        before = json.loads(path.read_text())
        check_fingerprint({k: before.get(k) for k in settings}, settings, path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2))


def load_resume(target: str | Path, fingerprint: dict, name: str = "state.pt") -> dict | None:
    """The state saved in the last complete checkpoint `target` (a torch file holding its run's
    `fingerprint`), or None to start over; a checkpoint of another run is refused."""
    import torch

    path = resume_state(target, name)
    if path is None:
        return None
    state = torch.load(path, weights_only=False)
    check_fingerprint(state.get("fingerprint"), fingerprint, target)
    return state


def trainable_state(model) -> dict:
    """The parameters being trained (LoRA adapters, a value head), on the CPU: what a resumable
    checkpoint needs of a model whose frozen weights are reloaded from their source."""
    return {k: v.detach().cpu() for k, v in model.named_parameters() if v.requires_grad}


def restore_trainable(model, saved: dict) -> None:
    """Copy `trainable_state` output back into the model's parameters, in place."""
    params = dict(model.named_parameters())
    for k, v in saved.items():
        params[k].data.copy_(v)
