"""Checking JSON read from disk against a dataclass's field types, with errors that name the field.

Records, stored browser settings and checkpoints' metadata are outside input: each value is
checked before use, and RecordError says where (e.g. 'steps[2].action: expected str, got int 3').
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable
from dataclasses import fields, is_dataclass


class RecordError(ValueError):
    """A record file line is not a valid episode record; the message names file and line."""


def typed_fields(cls: type, data: object, where: str = "", *, required: Iterable[str] = ()) -> dict:
    """The entries of `data` that are fields of the dataclass `cls`, each checked against the
    field's type (JSON's: a tuple field takes a list; a nested dataclass field takes an object,
    which its own `typed_fields` checks). RecordError names the field, e.g. 'steps[2].action'.
    Keys that are not fields are dropped (written by another version)."""
    if not isinstance(data, dict):
        raise RecordError(f"{where or cls.__name__}: expected an object, got {shown(data)}")
    prefix = f"{where}." if where else ""
    for name in required:
        if name not in data:
            raise RecordError(f"{prefix}{name}: missing")
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        if f.name in data:
            _check_type(data[f.name], hints[f.name], prefix + f.name)
            out[f.name] = data[f.name]
    return out


def _check_type(value: object, hint: object, where: str) -> None:
    """RecordError at `where` (or at the list item inside it) unless `value` has type `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [h for h in args if h is not type(None)]
        if len(options) == 1:  # X | None: say what is wrong inside X
            _check_type(value, options[0], where)
            return
        if not any(_matches(value, h) for h in options):
            raise RecordError(f"{where}: expected {_type_name(hint)}, got {shown(value)}")
        return
    if not _matches(value, hint):
        raise RecordError(f"{where}: expected {_type_name(hint)}, got {shown(value)}")
    if origin in (list, tuple) and args:
        for i, item in enumerate(value):  # type: ignore[arg-type]
            _check_type(item, args[0], f"{where}[{i}]")


def _matches(value: object, hint: object) -> bool:
    """The outer type only (a list's items are checked by `_check_type`)."""
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict or hint is dict or is_dataclass(hint):
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)  # type: ignore[arg-type]


def _type_name(hint: object) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin in (list, tuple):
        return "a list"
    if origin is dict or hint is dict or is_dataclass(hint):
        return "an object"
    return getattr(hint, "__name__", str(hint))


def shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"
