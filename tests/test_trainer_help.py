"""Every setting of every trainer says what it does in `webagent train NAME --help`."""

import dataclasses
import importlib
import re
import sys

import pytest

from webagent.cli import TRAINERS, train

ENTRY = re.compile(r"^(-|[A-Z][A-Z_]+(\s|$))")  # an option, or a positional's metavar
NO_TEXT = re.compile(r"\((default: .*|required|fixed to: .*)\)$")


def help_entries(text: str) -> dict[str, str]:
    """Each option's (or positional's) first token -> its description, from tyro's help (with
    rich's boxes on a terminal, plain indented columns elsewhere)."""
    lines = [line.replace("│", " ").rstrip() for line in text.splitlines()]
    indent = next(len(x) - len(x.lstrip()) for x in lines if x.lstrip().startswith("-h, --help"))
    entries: dict[str, list[str]] = {}
    current = None
    for line in lines:
        pad, body = len(line) - len(line.lstrip()), line.strip()
        if pad == indent and ENTRY.match(body) and set(body) != {"-"}:
            flag, _, rest = re.split(r"(\s{2,}|$)", body, maxsplit=1)
            current = flag.split(",")[0].split()[0]
            entries[current] = [rest.strip()]
        elif pad > indent and body and current is not None:
            entries[current].append(body)
        else:
            current = None
    return {k: " ".join(v).strip() for k, v in entries.items()}


def fields(cls) -> list[str]:
    """The flags tyro makes of a config (nested blocks flattened: --max-actions, not --env...)."""
    out = []
    for f in dataclasses.fields(cls):
        cls_of = f.default_factory().__class__ if callable(f.default_factory) else None
        if cls_of is not None and dataclasses.is_dataclass(cls_of):
            out += fields(cls_of)
        else:
            out.append(f.name)
    return out


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_every_trainer_setting_has_a_description_in_help(name, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["webagent"])
    with pytest.raises(SystemExit) as exit_:
        train([name, "--help"])  # `webagent train NAME --help`
    assert exit_.value.code == 0
    entries = help_entries(capsys.readouterr().out)
    entries.pop("-h")
    undocumented = [flag for flag, text in entries.items() if not NO_TEXT.sub("", text).strip()]
    assert not undocumented, f"webagent train {name}: no description for {undocumented}"
    args = importlib.import_module(TRAINERS[name]).Args
    flags = {"--" + f.replace("_", "-") for f in fields(args)}
    shown = set(entries)
    missing = {f for f in flags if f not in shown and f.lstrip("-").upper() not in shown}
    assert not missing, f"not in --help: {missing}"


def test_the_check_catches_a_setting_without_a_description():
    text = (
        "│ -h, --help    show this help message and exit  │\n"
        "│ --seed INT    (default: 0)                     │\n"
        "│ --lr FLOAT                                     │\n"
        "│               Peak rate. (default: 0.1)        │\n"
    )
    entries = help_entries(text)
    assert NO_TEXT.sub("", entries["--seed"]) == "" and entries["--lr"].startswith("Peak rate.")
