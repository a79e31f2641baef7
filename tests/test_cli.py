"""The `webagent` command as a user runs it: subprocesses and a pseudo-terminal (pexpect)."""

import json
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from tiny import save_tiny

from env.cache import PageCache
from env.record import read_records

WEBAGENT = str(Path(sys.executable).with_name("webagent"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny"))


def run(args, env, **kw):
    return subprocess.run(
        [WEBAGENT, *args], env=env, capture_output=True, text=True, timeout=300, **kw
    )


def test_ask_json_schema(tiny_dir, cli_env, wiki, tmp_path):
    record_file = tmp_path / "eps.jsonl"
    out = run(
        [
            "ask",
            "Which river flows through Baghdad?",
            "--model",
            str(tiny_dir),
            "--json",
            "--max-actions",
            "2",
            "--record",
            str(record_file),
        ],
        cli_env,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)  # stdout holds exactly one JSON object
    assert set(data) == {
        "question",
        "answer",
        "supported_by_quotes",
        "raw_answer",
        "citation_gate",
        "references",
        "actions",
    }
    assert data["citation_gate"] is None  # a model other than the shipped one: no gate
    assert data["question"] == "Which river flows through Baghdad?"
    assert isinstance(data["actions"], list) and len(data["actions"]) == 2
    (record,) = read_records(record_file)
    assert record.model == f"{tiny_dir.name}+int8", "ask samples with int8 weights by default"
    assert [s.action for s in record.steps if s.phase == "browse"] == data["actions"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "q", "--model", "no-such-model"], "no-such-model"),
        (["ask", "q", "--source", "gopher"], "unknown page source"),
        (["replay", "/nonexistent/eps.jsonl"], "no such file"),
    ],
)
def test_bad_input_gives_one_clear_line(args, message, cli_env):
    out = run(args, cli_env)
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr
    if "--debug" not in args:
        debug = run([*args, "--debug"], cli_env)
        assert "Traceback" in debug.stderr


def _drive(cli_env, tiny_dir, save_to: Path) -> None:
    """Record a human demonstration through the REPL's :drive mode in a real terminal."""
    child = pexpect.spawn(
        WEBAGENT,
        ["repl", "--model", str(tiny_dir)],
        env=cli_env,
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 200),
    )
    child.expect(r"\? ")
    child.sendline(":help")
    child.expect(":drive")
    child.expect(r"\? ")
    child.sendline(":why")
    child.expect("no episode yet")
    child.expect(r"\? ")
    child.sendline(":drive")
    child.expect("question> ")
    child.sendline("Which river flows through Baghdad?")
    for command, expect in [
        ("Search Baghdad river", "Search results for: Baghdad river"),
        ("Clicked on link 0", "Baghdad \\(en.wikipedia.org\\)"),
        ("Clicked on link 77", "there is no link 77"),
        ("Quote: located on the banks of the Tigris", "From \\[1\\] Baghdad"),
        ("End: Answer", "Passage \\[1\\] Baghdad: "),
    ]:
        child.expect("command> ")
        child.sendline(command)
        child.expect(expect)
    child.expect("answer> ")
    child.sendline("The Tigris [1].")
    child.expect("References:")
    child.expect(r"\? ")
    child.sendline(":why")
    child.expect("step 6: what the model saw")
    child.expect(r"\? ")
    child.sendline(f":save {save_to}")
    child.expect("saved episode")
    child.expect(r"\? ")
    child.sendline(":quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_repl_drive_records_a_demonstration_that_replays(cli_env, tiny_dir, tmp_path, wiki):
    episodes = tmp_path / "demo.jsonl"
    _drive(cli_env, tiny_dir, episodes)
    (record,) = read_records(episodes)
    assert record.model == "human" and record.answer == "The Tigris [1]."
    assert record.quotes[0].extract == "located on the banks of the Tigris"
    assert record.steps[2].error.startswith("there is no link 77")

    out = run(["replay", str(episodes), "--html", str(tmp_path / "t.html")], cli_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 steps identical" not in out.stdout and "6 steps identical" in out.stdout
    assert "Question: Which river flows through Baghdad?" in out.stdout
    html = (tmp_path / "t.html").read_text()
    assert "<mark>" in html and "located on the banks of the" in html

    # tamper with the cached article: replay must notice and fail
    cache = PageCache(Path(cli_env["WEBAGENT_CACHE"]) / "pages")
    path = cache._page_path(record.steps[1].page_id)
    entry = json.loads(path.read_text())
    entry["page"]["lines"][1] = entry["page"]["lines"][1].replace("Tigris", "Euphrates")
    path.write_text(json.dumps(entry))
    out = run(["replay", str(episodes), "--quiet"], cli_env)
    assert out.returncode == 1 and "tampered" in out.stdout

    # a missing entry is reported as such
    path.unlink()
    out = run(["replay", str(episodes), "--quiet"], cli_env)
    assert out.returncode == 1 and "not in the cache" in out.stdout


def test_replay_reports_corrupt_record_line(cli_env, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "question": "q", "source": "wiki"}\n{oops\n{"id": "b", "question": "q", "source": "wiki"}\n'
    )
    out = run(["replay", str(bad)], cli_env)
    assert out.returncode == 1 and "bad.jsonl:2" in out.stderr


def test_repl_answers_a_question_with_the_model(cli_env, tiny_dir):
    child = pexpect.spawn(
        WEBAGENT,
        ["repl", "--model", str(tiny_dir), "--max-actions", "2"],
        env=cli_env,
        encoding="utf-8",
        timeout=180,
    )
    child.expect(r"\? ")
    child.sendline("Who was Ray Charles?")
    child.expect("loading")
    child.expect("  3. Answer")
    child.expect("No answer")
    child.expect(r"\? ")
    child.sendeof()
    child.expect(pexpect.EOF)
