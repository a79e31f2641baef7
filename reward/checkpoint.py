"""Checkpoint directories that survive a kill at any moment (shared by the RM, BC and PPO trainers).

A training run keeps what it needs to resume in OUT/last. `write_dir` fills a fresh `last.tmp`,
moves the previous `last` aside to `last.old`, renames the new one into place and only then
deletes the old one, so a kill leaves a complete `last` or (between the two renames) a complete
`last.old`; `complete_dir` finds whichever survived.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Callable, Collection
from dataclasses import fields, is_dataclass
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


_ABSENT = object()
"""A setting one side does not record (a run from before it existed, or after it went)."""


def flag_names(args: object) -> set[str]:
    """The settings a rerun can give as flags: the field names of a dataclass of arguments and
    of the dataclasses in it (the CLIs omit prefixes: --int8, not --policy.int8), without the
    positional ones and --out (a different one is a different run)."""
    names: set[str] = set()
    for f in fields(args):  # type: ignore[arg-type]
        value = getattr(args, f.name)
        if is_dataclass(value):
            names |= flag_names(value)
        elif "Positional" not in str(f.type) and f.name not in ("dataset", "out"):
            names.add(f.name)
    return names


def _flat(settings: dict, prefix: str = "") -> dict:
    """{"policy": {"int8": True}} -> {"policy.int8": True}: what differs, named to the leaf."""
    flat = {}
    for k, v in settings.items():
        if isinstance(v, dict) and v:
            flat.update(_flat(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _shown(value: object) -> str:
    if value is _ABSENT:
        return "(absent)"
    return value if isinstance(value, str) else json.dumps(value)


def _flag(key: str, value: object, flags: Collection[str]) -> str | None:
    """The flag that sets `key` back to `value`, when it is one (else None)."""
    name = key.rsplit(".", 1)[-1]
    if name not in flags or value is _ABSENT or value is None or isinstance(value, dict):
        return None
    dashed = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return dashed if value else f"--no-{name.replace('_', '-')}"
    values = value if isinstance(value, list) else [value]
    return " ".join([dashed, *(shlex.quote(str(v)) for v in values)])


def check_fingerprint(
    stored: dict | None, current: dict, where: str | Path, flags: Collection[str] = ()
) -> None:
    """Refuse to continue a checkpoint that a run with other data or settings wrote: resuming
    it would silently mix two runs. The error names every setting that differs, as its old
    value -> this run's, and how to go on: the flags that give the old values back (`flags`:
    the settings that are flags, `flag_names`), else a new --out."""
    if stored == current:
        return
    before, now = _flat(stored or {}), _flat(current)
    keys = [*now, *(k for k in before if k not in now)]
    diffs = [
        (k, before.get(k, _ABSENT), now.get(k, _ABSENT))
        for k in keys
        if before.get(k, _ABSENT) != now.get(k, _ABSENT)
    ]
    lines = [f"  {k}: {_shown(old)} → {_shown(new)}" for k, old, new in diffs]
    gone = [k for k, old, new in diffs if old is _ABSENT or new is _ABSENT]
    hints = [h for k, old, _ in diffs if (h := _flag(k, old, flags)) is not None]
    if gone:
        how = (
            f"it was written by another version of webagent (it records {', '.join(gone)} "
            "otherwise): use a new --out or delete it"
        )
    elif len(hints) == len(diffs):
        how = f"to continue it, rerun with {' '.join(hints)}; else use a new --out or delete it"
    else:
        how = "use a new --out or delete it"
    raise ValueError(
        f"{where} was written by a different run, with other settings (its → this run's):\n"
        + "\n".join(lines)
        + f"\n{how}"
    )


def settings_file(path: str | Path, settings: dict, flags: Collection[str] = ()) -> None:
    """A resumable output's settings, beside it: the first run writes them, a rerun must have
    the same ones (keys the file has and `settings` lacks are not compared; `flags`: see
    `check_fingerprint`)."""
    path = Path(path)
    if path.exists():
        before = json.loads(path.read_text())
        check_fingerprint({k: before[k] for k in settings if k in before}, settings, path, flags)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2))


def load_resume(
    target: str | Path, fingerprint: dict, name: str = "state.pt", flags: Collection[str] = ()
) -> dict | None:
    """The state saved in the last complete checkpoint `target` (a torch file holding its run's
    `fingerprint`), or None to start over; a checkpoint of another run is refused (`flags`: see
    `check_fingerprint`)."""
    import torch

    path = resume_state(target, name)
    if path is None:
        return None
    state = torch.load(path, weights_only=False)
    check_fingerprint(state.get("fingerprint"), fingerprint, target, flags)
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
