"""Issue 16: input from a hostile or careless user. Forged records, bad questions, bad flags,
mistyped records, `--allow-host`. CLI cases run the real `webagent` in a subprocess and must fail
before any model loads (`--model` names a model that does not exist: reaching the loader would
fail with another message)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from env.browser import BrowserEnv
from env.cache import PageCache
from env.record import EpisodeRecord, append_jsonl
from webagent.replay import replay

WEBAGENT = str(Path(sys.executable).with_name("webagent"))
NO_MODEL = ["--model", "/nonexistent/model-that-must-never-load"]


def run(args: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [WEBAGENT, *args], env=env, capture_output=True, text=True, timeout=120, **kw
    )


# ----------------------------------------------------------------------------- replay


@pytest.fixture
def recorded(wiki, tmp_path) -> tuple[EpisodeRecord, PageCache]:
    cache = PageCache(tmp_path / "pages")
    env = BrowserEnv(wiki, cache=cache)
    env.reset("Which river flows through Baghdad?")
    for action in ["Search Baghdad", "Clicked on link 0", "Quote: Baghdad is the capital",
                   "End: Answer"]:  # fmt: skip
        env.step(action)
    record = env.step("Baghdad [1].")[4]["record"]
    assert replay(record, cache).ok
    return record, cache


def _forged(record: EpisodeRecord, **changes) -> EpisodeRecord:
    forged = EpisodeRecord.from_dict(record.to_dict())
    for name, value in changes.items():
        setattr(forged, name, value)
    return forged


def test_replay_refuses_a_forged_answer_and_forged_quotes(recorded):
    record, cache = recorded
    quote = record.quotes[0]
    cases = {
        "answer": _forged(record, answer="Paris [1]."),
        "quote [1] extract": _forged(record, quotes=[replace(quote, extract="Paris is it")]),
        "quote [1] url": _forged(record, quotes=[replace(quote, url="https://evil.example/")]),
        "quotes: the record has 2": _forged(record, quotes=[quote, replace(quote, n=2)]),
        "end": _forged(record, end="budget"),
    }
    for expected, forged in cases.items():
        result = replay(forged, cache)
        assert not result.ok and any(expected in m for m in result.mismatches), (expected, result)
    # an action that is not what its recorded completion says
    forged = _forged(record)
    forged.steps[0].completion = "Search Paris\nmore"
    assert "not what its recorded completion says" in replay(forged, cache).mismatches[0]


def test_replay_cli_fails_on_a_forged_record_and_names_what_differs(recorded, tmp_path):
    record, cache = recorded
    quotes = [replace(record.quotes[0], extract="Paris is the capital")]
    forged = _forged(record, id="forged", answer="Paris [1].", quotes=quotes)
    path = tmp_path / "forged.jsonl"
    append_jsonl(path, [record, forged])
    out = run(["replay", str(path), "--page-cache", str(cache.root), "--quiet"])
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"replayed {record.id}: 5 steps identical" in out.stdout
    assert "replayed forged" not in out.stdout
    assert "answer: the record says 'Paris [1].', the re-run 'Baghdad [1].'" in out.stdout
    assert "quote [1] extract" in out.stdout
    assert "1 of 2 episodes did not replay identically" in out.stderr
