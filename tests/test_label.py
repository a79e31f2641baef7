"""`webagent label`: a person judges comparisons in a real terminal (pexpect); reruns resume."""

import json
import os
import sys
from pathlib import Path

import pexpect
import pytest

from reward.comparisons import Comparison, read_comparisons, write_comparisons
from reward.label import label, labels_path, merged
from reward.text import Answer, Quote

WEBAGENT = str(Path(sys.executable).with_name("webagent"))


@pytest.fixture
def comparisons_file(tmp_path) -> Path:
    path = tmp_path / "comparisons.jsonl"
    write_comparisons(
        path,
        [
            Comparison(
                "Which river flows through Baghdad?",
                Answer(
                    "The Tigris flows through Baghdad [1].",
                    (Quote("Baghdad", "located on the banks of the Tigris"),),
                ),
                Answer("The Nile, I believe."),
            ),
            Comparison(
                "Who wrote Hamlet?",
                Answer("William Shakespeare [1].", (Quote("Hamlet", "a tragedy by Shakespeare"),)),
                Answer("Shakespeare wrote it [1].", (Quote("Hamlet", "written around 1600"),)),
            ),
            Comparison(
                "What is the capital of France?",
                Answer("Paris."),
                Answer("Lyon [1].", (Quote("Lyon", "a city in France"),)),
            ),
        ],
    )
    return path


def spawn(path: Path) -> pexpect.spawn:
    env = {**os.environ, "TERM": "dumb", "COLUMNS": "120", "HF_HUB_OFFLINE": "1"}
    return pexpect.spawn(
        WEBAGENT, ["label", str(path)], env=env, encoding="utf-8", timeout=20, dimensions=(50, 120)
    )


def finish(child: pexpect.spawn) -> None:
    child.expect("labels are saved in")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in labels_path(path).read_text().splitlines()]


def test_label_in_a_terminal_quits_and_resumes(comparisons_file):
    ids = [c.id for c in read_comparisons(comparisons_file)]

    child = spawn(comparisons_file)
    child.expect_exact("comparison 1/3", timeout=60)  # the first start imports the CLI
    child.expect_exact("Which river flows through Baghdad?")
    child.expect_exact("The Tigris flows through Baghdad [1].")  # left and right, side by side
    child.expect_exact("The Nile, I believe.")
    child.expect_exact("[1] Baghdad: located on the banks of the Tigris")
    child.expect_exact("choice> ")
    child.sendline("x")
    child.expect_exact("'x' is not a choice")
    child.expect_exact("choice> ")
    child.sendline("1")
    child.expect_exact("comparison 2/3")
    child.expect_exact("choice> ")
    child.sendline("q")
    child.expect_exact("1 labeled")
    child.expect_exact("run again to resume")
    finish(child)
    (first,) = lines(comparisons_file)
    assert first["id"] == ids[0] and first["preference"] == 1.0 and first["labeler"] == "human"
    assert first["seconds"] >= 0

    child = spawn(comparisons_file)
    child.expect_exact("comparison 2/3", timeout=60)
    child.expect_exact("Who wrote Hamlet?")
    child.expect_exact("choice> ")
    child.sendline(" T ")
    child.expect_exact("comparison 3/3")
    child.expect_exact("choice> ")
    child.sendline("s")
    child.expect_exact("1 labeled (1 ties), 1 skipped")
    finish(child)
    saved = lines(comparisons_file)
    assert [x["id"] for x in saved] == ids
    assert [x["preference"] for x in saved] == [1.0, 0.5, None]
    assert saved[2]["skipped"] is True
    assert [c.preference for c in merged(comparisons_file)] == [1.0, 0.5, None]
    assert [c.labeler for c in merged(comparisons_file)] == ["human", "human", None]

    child = spawn(comparisons_file)
    child.expect_exact("nothing left to label", timeout=60)
    finish(child)
    assert len(lines(comparisons_file)) == 3


def test_label_in_process_saves_each_answer_before_eof(comparisons_file):
    answers = iter(["?", " 2 "])
    shown: list[str] = []

    def fake_input(prompt: str) -> str:
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    counts = label(comparisons_file, input=fake_input, output=shown.append, labeler="ann")
    assert counts == {"labeled": 1, "tied": 0, "skipped": 0, "remaining": 2}
    (saved,) = lines(comparisons_file)
    assert saved["preference"] == 0.0 and saved["labeler"] == "ann"
    screen = "\n".join(shown)
    assert "equally good" in screen  # the help
    assert "comparison 2/3" in screen and "run again to resume" in screen
    assert [c.preference for c in merged(comparisons_file)] == [0.0, None, None]


def test_labels_path_sits_beside_the_input(tmp_path):
    assert labels_path(tmp_path / "x.jsonl") == tmp_path / "x.labels.jsonl"
    assert labels_path("runs/rm/c.json") == Path("runs/rm/c.json.labels.jsonl")
