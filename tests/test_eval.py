"""`webagent eval` end to end on a tiny model: outputs, resume after a kill, compare."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import save_tiny

from env.record import read_jsonl
from webagent.config import EnvArgs, PolicyArgs
from webagent.eval import EvalArgs, compare, run

WEBAGENT = str(Path(sys.executable).with_name("webagent"))
QUESTIONS = [
    ("d1", "Which river flows through Baghdad?", ["Tigris", "The Tigris"]),
    ("d2", "Who painted the Mona Lisa?", ["Leonardo da Vinci", "Leonardo"]),
    ("d3", "What is the capital of Peru?", ["Lima"]),
    ("d4", "Who wrote Hamlet?", ["William Shakespeare", "Shakespeare"]),
    ("d5", "Which planet is known as the Red Planet?", ["Mars"]),
    ("d6", "What is the largest ocean?", ["Pacific Ocean", "Pacific"]),
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny-eval"))


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question_id": i, "question": q, "answer": {"value": a[0], "aliases": a}})
            + "\n"
            for i, q, a in QUESTIONS
        )
    )
    return path


def _args(dataset, out, tiny_dir, index_dir, **kw) -> EvalArgs:
    return EvalArgs(
        dataset=str(dataset),
        out=str(out),
        policy=PolicyArgs(model=str(tiny_dir), examples=2),
        env=EnvArgs(max_actions=2, page_cache=str(out.parent / "pages")),
        batch=3,
        **kw,
    )


def test_browse_run_writes_every_output(dataset, tmp_path, tiny_dir, index_dir, monkeypatch):
    monkeypatch.setenv("WEBAGENT_CACHE", str(index_dir.parent))
    out = run(_args(dataset, tmp_path / "browse", tiny_dir, index_dir, limit=4))
    rows = list(read_jsonl(out / "results.jsonl"))
    assert [r["question_id"] for r in sorted(rows, key=lambda r: r["question_id"])] == [
        "d1",
        "d2",
        "d3",
        "d4",
    ]
    for r in rows:
        assert r["actions"] == 2 and r["episode"]["question"] == r["question"]
        assert r["in_corpus"] in (0.0, 1.0) and r["seen_answer"] in (0.0, 1.0)
    summary = json.loads((out / "summary.json").read_text())
    for key in [
        "n",
        "em",
        "f1",
        "contains",
        "supported",
        "citation_valid",
        "mean_actions",
        "invalid_rate",
        "no_answer_rate",
        "seconds_per_question",
        "model",
        "data",
        "settings",
    ]:
        assert key in summary
    assert summary["n"] == 4 and summary["mean_actions"] == 2.0
    assert summary["settings"]["policy"]["int8"] is True, "evals sample with int8 by default"
    assert {r["episode"]["model"] for r in rows} == {f"{tiny_dir.name}+int8"}
    assert summary["in_corpus"] > 0  # Tigris, Lima, ... are in the local Wikipedia
    assert (out / "report.md").read_text().startswith("# Evaluation: browse")
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same directory with other settings is refused, not mixed
    with pytest.raises(ValueError, match="other settings"):
        run(_args(dataset, tmp_path / "browse", tiny_dir, index_dir, limit=4, closed_book=True))
    fp32 = _args(dataset, tmp_path / "browse", tiny_dir, index_dir, limit=4)
    fp32.policy.int8 = False  # other arithmetic: not resumed into the int8 run either
    with pytest.raises(ValueError, match=r"policy\.int8: true → false\n.*rerun with --int8;"):
        run(fp32)


def test_closed_book_and_rag_and_compare(dataset, tmp_path, tiny_dir, index_dir, monkeypatch):
    monkeypatch.setenv("WEBAGENT_CACHE", str(index_dir.parent))
    closed = run(_args(dataset, tmp_path / "closed", tiny_dir, index_dir, closed_book=True))
    rag = run(_args(dataset, tmp_path / "rag", tiny_dir, index_dir, rag=2))
    rows = list(read_jsonl(rag / "results.jsonl"))
    assert len(rows) == 6 and all(len(r["passages"]) == 2 for r in rows)
    assert "Passage [1]" in rows[0]["prompt"] and rows[0]["mode"] == "rag-2"
    assert any(r["seen_answer"] for r in rows), (
        "BM25 finds the Tigris page for the Baghdad question"
    )
    target = compare([str(closed), str(rag)], str(tmp_path / "cmp"))
    table = (target / "compare.md").read_text()
    assert "| closed |" in table and "| rag |" in table
    assert (target / "compare.png").exists()
    with pytest.raises(ValueError, match="no summary.json"):
        compare([str(tmp_path / "nothing")], str(tmp_path / "cmp2"))


def test_compare_tells_int8_from_fp32_and_one_search_from_another(tmp_path):
    """Run labels name the arithmetic and the search engine where the runs differ in them."""
    from webagent.eval import run_labels

    configs = {
        "a": {"policy": {"int8": True}, "env": {"search": "hybrid"}},
        "b": {"policy": {"int8": False}, "env": {"search": "hybrid"}},
        "c": {"policy": {"int8": True}, "env": {"search": "bm25"}},
        "old": {"policy": {}, "env": {}},  # from before either was recorded
    }
    for name, config in configs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    dirs = [str(tmp_path / name) for name in configs]
    assert run_labels(dirs) == [
        "a (int8, search hybrid)",
        "b (fp32, search hybrid)",
        "c (int8, search bm25)",
        "old (int8 ?, search ?)",
    ]
    assert run_labels(dirs[:2]) == ["a (int8)", "b (fp32)"]
    assert run_labels([dirs[0], dirs[0]]) == ["a", "a"], "alike: the names alone"


def test_resume_after_kill_loses_and_duplicates_nothing(dataset, tmp_path, tiny_dir, index_dir):
    out = tmp_path / "killed"
    env = {**os.environ, "WEBAGENT_CACHE": str(index_dir.parent)}
    cmd = [
        WEBAGENT,
        "eval",
        str(dataset),
        "--out",
        str(out),
        "--model",
        str(tiny_dir),
        "--examples",
        "2",
        "--max-actions",
        "3",
        "--batch",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (
        not results.exists() or len(results.read_text().splitlines()) < 2
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(list(read_jsonl(results)))
    assert 2 <= before < len(QUESTIONS), "killed part-way"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ids = [r["question_id"] for r in read_jsonl(results)]
    assert sorted(ids) == [i for i, _, _ in QUESTIONS]  # each exactly once
    seeds = {r["question_id"]: r["episode"]["seed"] for r in read_jsonl(results)}
    assert seeds == {q: i for i, (q, _, _) in enumerate(QUESTIONS)}, "seeds by position"
    assert json.loads((out / "summary.json").read_text())["n"] == len(QUESTIONS)


def test_best_of_plays_greedy_first_and_resumes_by_position(
    dataset, tmp_path, tiny_dir, index_dir, monkeypatch
):
    """Candidate 0 is the greedy episode (best-of-1 is the greedy run), the others sample at
    the default best-of temperature; a resumed run samples what an uninterrupted one would;
    the judge takes the reward model's vote weight; a run dir of other settings is refused."""
    from transformers import AutoTokenizer

    from reward.best_of_n import judge
    from reward.model import RewardModel, prepare_tokenizer
    from webagent.config import BEST_OF_TEMPERATURE

    monkeypatch.setenv("WEBAGENT_CACHE", str(index_dir.parent))
    rm = tmp_path / "rm"
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_dir))
    meta = {"base_model": str(tiny_dir), "max_length": 256, "best_of": {"vote_weight": 0.5}}
    RewardModel.from_body(tiny_dir).save(rm, tok, meta)

    greedy = list(
        read_jsonl(
            run(_args(dataset, tmp_path / "g", tiny_dir, index_dir, limit=3)) / "results.jsonl"
        )
    )
    bo = lambda limit, **kw: _args(  # noqa: E731
        dataset, tmp_path / "bo", tiny_dir, index_dir, limit=limit, best_of=3, rm=str(rm), **kw
    )
    run(bo(1))
    out = run(bo(3))  # resumes: questions 2 and 3 only
    rows = list(read_jsonl(out / "results.jsonl"))
    assert [r["question_id"] for r in rows] == ["d1", "d2", "d3"]
    for qi, (row, plain) in enumerate(zip(rows, greedy, strict=True)):
        cands = row["candidates"]
        assert [c["temperature"] for c in cands] == [0.0, BEST_OF_TEMPERATURE, BEST_OF_TEMPERATURE]
        assert [c["episode"]["seed"] for c in cands] == [3 * qi, 3 * qi + 1, 3 * qi + 2]
        first = cands[0]["episode"]
        assert [s["action"] for s in first["steps"]] == [
            s["action"] for s in plain["episode"]["steps"]
        ]
        assert cands[0]["answer"] == plain["answer"] and cands[0]["em"] == plain["em"]
        assert row["vote_weight"] == 0.5
        ranked = judge([c["score"] for c in cands], [c["answer"] for c in cands], 0.5)
        assert [c["agreement"] for c in cands] == ranked.agreement
        assert [c["final"] for c in cands] == pytest.approx(ranked.final)
        assert row["best"] == ranked.best and row["answer"] == cands[row["best"]]["answer"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_of_curve"][0]["em"] == sum(r["em"] for r in greedy) / 3
    config = json.loads((out / "config.json").read_text())
    assert config["best_of_temperature"] == BEST_OF_TEMPERATURE and config["greedy_candidate"]
    with pytest.raises(ValueError, match="different run"):
        run(bo(3, vote_weight=1.0))
    for key in ("best_of_temperature", "greedy_candidate", "vote_weight"):
        del config[key]  # a run dir from before candidate 0 was greedy
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="different run"):
        run(bo(3))


def test_bad_dataset_is_a_clear_cli_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": ["a"]}\nnot json\n')
    out = subprocess.run(
        [WEBAGENT, "eval", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and "bad.jsonl:2" in out.stderr and "Traceback" not in out.stderr
