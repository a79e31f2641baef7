"""Issue 16: input from a hostile or careless user. Forged records, bad questions, bad flags,
mistyped records, `--allow-host`. CLI cases run the real `webagent` in a subprocess and must fail
before any model loads (`--model` names a model that does not exist: reaching the loader would
fail with another message)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from test_web import redirect, server, static  # noqa: F401 - `server` is a fixture

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
    for action in [
        "Search Baghdad",
        "Clicked on link 0",
        "Quote: Baghdad is the capital",
        "End: Answer",
    ]:
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


# ----------------------------------------------------------------------------- questions


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ("", "empty"),
        ("  \n\t ", "empty"),
        ("x" * 1001, "1001 characters; the limit is 1000"),
        ("caf\udce9?", "not valid UTF-8 text (byte 0xe9 at character 4)"),
        ("a\ud800b", "lone surrogate U+D800"),
        ("who\x1b[2J?", "control character U+001B at character 4"),
        ("nul\x00?", "control character U+0000"),
        ("Who wrote \x91Pygmalion'?", "control character U+0091"),
        (5, "a question is text"),
    ],
)
def test_questions_that_cannot_be_asked(question, message):
    from env.questions import QuestionError, check_question

    with pytest.raises(QuestionError, match=re.escape(message)):
        check_question(question)


def test_questions_that_can_be_asked():
    from env.questions import check_question

    for q in [
        "Who?",
        "x" * 1000,
        "line one\nline two\r\n\ttabbed",
        "and\u2028Quiver\x85?",
        "【9†x】",
    ]:
        assert check_question(q) == q


def test_the_environment_and_the_runner_refuse_bad_questions_before_any_episode(wiki):
    from env.questions import QuestionError
    from webagent.rollout import Task, run_episodes

    env = BrowserEnv(wiki)
    for bad in ["", "x" * 5000]:
        with pytest.raises(QuestionError):
            env.reset(bad)

    def no_env():
        raise AssertionError("no episode may start")

    with pytest.raises(QuestionError, match="task 1: the question is empty"):
        next(run_episodes(None, [Task("fine?"), Task("  ")], no_env))


def test_dataset_rows_with_bad_questions_are_skipped_and_counted(tmp_path, caplog):
    from webagent.datasets import load_questions

    rows = [("ok one?", "a"), ("x" * 2000, "b"), ("esc \x1b[31m?", "c"), ("ok two?", "d")]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": [a]}) + "\n" for q, a in rows))
    with caplog.at_level("WARNING"):
        questions = load_questions(path)
    assert [q.question for q in questions] == ["ok one?", "ok two?"]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "skipped 2 question(s)" in warning
    assert f"{path}:2: the question has 2000 characters" in warning
    assert f"{path}:3: the question contains the control character U+001B" in warning


def test_ask_refuses_a_non_utf8_argument_before_loading_a_model():
    out = run(["ask", b"caf\xe9?", *NO_MODEL])  # a Latin-1 terminal's bytes
    assert out.returncode == 1, out.stderr
    assert "not valid UTF-8 text (byte 0xe9 at character 4)" in out.stderr
    assert "Loading" not in out.stderr and "Traceback" not in out.stderr


def test_repl_refuses_bad_questions_before_loading_a_model(tmp_path):
    lines = ["", "   ", "x" * 1500, ":drive", "\x1b[2J?", ":quit"]
    out = run(
        ["repl", *NO_MODEL], env={"WEBAGENT_CACHE": str(tmp_path)}, input="\n".join(lines) + "\n"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the question has 1500 characters" in out.stdout
    assert "control character U+001B" in out.stdout
    assert "loading" not in out.stdout.lower() and "Traceback" not in out.stderr


def test_eval_reports_skipped_questions_before_loading_a_model(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"question": "ok?", "answer": ["a"]})
        + "\n"
        + json.dumps({"question": "bad\x00?", "answer": ["b"]})
        + "\n"
    )
    out = run(["eval", str(path), "--out", str(tmp_path / "run"), *NO_MODEL])
    assert "skipped 1 question(s) that cannot be asked" in out.stderr
    assert f"{path}:2" in out.stderr
    # the model is what fails here: the questions were read and checked first
    assert out.stderr.index("skipped") < out.stderr.index("unknown model spec")


# ----------------------------------------------------------------------------- flags


def test_ask_refuses_bad_flags_before_loading_a_model(tmp_path):
    out = run(["ask", "q?", "--max-actions", "0", *NO_MODEL])
    assert out.returncode == 1 and "--max-actions must be at least 1, got 0" in out.stderr
    assert "Loading" not in out.stderr and "Traceback" not in out.stderr
    out = run(["ask", "q?", "--record", str(tmp_path), *NO_MODEL])
    assert out.returncode == 1 and "is a directory: give a file" in out.stderr, out.stderr
    assert "Loading" not in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", ""], "the question is empty"),
        (["ask", "x" * 100_000], "the question has 100000 characters; the limit is 1000"),
        (["ask", "q?", "--max-actions", "-1"], "--max-actions must be at least 1, got -1"),
        (["ask", "q?", "--window-lines", "0"], "--window-lines must be at least 1"),
        (["ask", "q?", "--record", "{tmp}/file/x.jsonl"], "is not a directory"),
        (["ask", "q?", "--temperature", "-1"], "--temperature must be 0"),
        (["ask", "q?", "--top-p", "0"], "--top-p must be in (0, 1]"),
        (["ask", "q?", "--best-of", "0"], "--best-of must be at least 1"),
        (["ask", "q?", "--source", "zim:/nonexistent.zim"], "is not a file"),
        (["ask", "q?", "--allow-host", "127.0.0.1"], "--allow-host applies to the live web only"),
        (["ask", "q?", "--source", "web", "--search", "bm25"], "--search applies to local sources"),
        (["eval", "{tmp}/q.jsonl", "--source", "cache", "--search", "bm25"], "not cache"),
        (
            ["ask", "q?", "--source", "web", "--allow-host", "http://127.0.0.1:8000/"],
            "--allow-host takes a host name or IP address",
        ),
        (["eval", "{tmp}/q.jsonl", "--batch", "0"], "--batch must be at least 1"),
        (["eval", "{tmp}/q.jsonl", "--limit", "0"], "--limit must be at least 1"),
        (["replay", "{tmp}/r.jsonl", "--html", "{tmp}"], "is a directory"),
    ],
)
def test_flags_are_checked_before_anything_runs(args, message, tmp_path, capsys):
    """In-process `main(argv)` (the same code as the `webagent` script, without a new
    interpreter per case); a check that did not fire would reach the model loader."""
    from webagent.cli import main

    (tmp_path / "file").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(argv + (NO_MODEL if argv[0] != "replay" else [])) == 1
    err = capsys.readouterr().err
    assert message in err and "unknown model spec" not in err, err


def test_browse_limits_refuse_empty_budgets():
    from env.limits import BrowseLimits

    for bad in [{"max_actions": 0}, {"max_actions": -1}, {"window_lines": 0}, {"max_actions": "5"}]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            BrowseLimits(**bad)


def test_a_limit_error_survives_pickling():
    """It crosses process boundaries (multiprocessing workers, records) whole."""
    import pickle

    from env.limits import LimitError

    back = pickle.loads(pickle.dumps(LimitError("max_actions", "must be at least 1, got 0")))
    assert isinstance(back, LimitError)
    assert (back.field, back.problem) == ("max_actions", "must be at least 1, got 0")
    assert str(back) == "max_actions must be at least 1, got 0"


# ----------------------------------------------------------------------------- records


def test_records_are_checked_field_by_field_naming_file_line_and_field(recorded, tmp_path):
    from env.record import RecordError, read_records

    record, cache = recorded
    good = record.to_dict()
    bad = record.to_dict()
    bad["meta"]["env"]["limits"]["max_actions"] = "5"
    path = tmp_path / "eps.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(
        RecordError,
        match=re.escape(f"{path}:2: meta.env.limits.max_actions: expected int, got str"),
    ):
        list(read_records(path))
    out = run(["replay", str(path), "--page-cache", str(cache.root)])
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{path}:2: meta.env.limits.max_actions: expected int" in out.stderr, out.stderr
    for field, value, message in [
        ("answer", 5, "answer: expected str"),
        ("steps", [{"observation": "o", "action": 3}], "steps[0].action: expected str, got int 3"),
        (
            "quotes",
            [{"n": "1", "title": "t", "url": "u", "extract": "e"}],
            "quotes[0].n: expected int",
        ),
        (
            "meta",
            {"env": {"search_results": True}},
            "meta.env.search_results: expected int, got bool",
        ),
        (
            "meta",
            {"env": {"limits": {"max_actions": 0}}},
            "meta.env.limits.max_actions: must be at least 1, got 0",
        ),
        ("meta", {"env": {"limits": [5]}}, "meta.env.limits: expected an object, got list"),
        (
            "steps",
            [{"observation": "o", "action": "a", "token_ids": [1, "x"]}],
            "steps[0].token_ids[1]: expected int",
        ),
    ]:
        with pytest.raises(RecordError, match=re.escape(message)):
            EpisodeRecord.from_dict({**good, field: value})
    # settings this version lacks: ignored when reading, refused by replay (same browser only)
    from env.browser import config_from_dict

    EpisodeRecord.from_dict({**good, "meta": {"env": {"bogus": 1}}})
    with pytest.raises(ValueError, match="bogus: not a browser setting"):
        config_from_dict({"bogus": 1})


# ----------------------------------------------------------------------------- --allow-host


def test_allow_host_opens_exactly_that_host_and_not_what_it_redirects_to(server, tmp_path):  # noqa: F811
    """`repl :drive` through the real CLI (no model): a SearxNG endpoint and pages on
    127.0.0.1, one result redirecting to http://localhost (the same machine by another name)."""
    port = server.server_address[1]
    results = {
        "results": [
            {"url": server.url("/page"), "title": "Local page", "content": "allowed"},
            {"url": server.url("/hop"), "title": "Redirecting page", "content": "redirects"},
        ]
    }
    server.routes["/s/search"] = static(json.dumps(results).encode(), ctype="application/json")
    server.routes["/page"] = static(b"<title>Local page</title><p>The Tigris is long.</p>")
    server.routes["/hop"] = redirect(f"http://localhost:{port}/page")
    drive = ":drive\nWhich river?\nSearch tigris\nClicked on link 0\nBack\nClicked on link 1\n:abort\n:quit\n"
    web = ["--source", "web", "--searx", server.url("/s"), *NO_MODEL]
    cache = {"WEBAGENT_CACHE": str(tmp_path)}

    out = run(["repl", *web, "--allow-host", "127.0.0.1"], env=cache, input=drive)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "【0†Local page†127.0.0.1】" in out.stdout and "The Tigris is long." in out.stdout
    assert "localhost resolves to 127.0.0.1, a loopback address: refused" in out.stdout
    assert server.log.count("/page") == 1  # the redirect's target was never requested

    server.log.clear()
    out = run(["repl", *web], env=cache, input=drive)  # nothing allowed: the search is refused
    assert "127.0.0.1 resolves to 127.0.0.1, a loopback address: refused" in out.stdout
    assert server.log == []
