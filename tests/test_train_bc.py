"""Behaviour cloning on a tiny model: loss masking, resume after Ctrl-C, 2 processes, loading."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_demos import QUESTIONS
from tiny import save_tiny

from env.browser import BrowserEnv, EnvConfig
from env.limits import BrowseLimits
from env.record import append_jsonl, read_jsonl
from webagent.config import PolicyArgs, load_policy
from webagent.demos import generate
from webagent.models import load, resolve
from webagent.prompts import format_for
from webagent.train_bc import Args as BCArgs
from webagent.train_bc import (
    CompletionLoss,
    answer_style,
    collate,
    load_rows,
    lr_at,
    main,
    micro_batches,
    split_episodes,
    tokenize_row,
    weigh_cited,
    weigh_decisions,
)

BIN = Path(sys.executable).parent
COMMON = ["--max-length", "192", "--micro-batch", "2", "--grad-accum", "2", "--warmup-steps", "2"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def demos(tmp_path_factory, wiki) -> Path:
    """Real expert demonstrations on the local Wikipedia (three questions, two seeds)."""
    make_env = lambda: BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=30)))  # noqa: E731
    path = tmp_path_factory.mktemp("demos") / "demos.jsonl"
    for seed in (0, 1):
        append_jsonl(path, [r for _, r in generate(QUESTIONS[:3], make_env, seed=seed) if r])
    assert len(list(read_jsonl(path))) >= 4
    return path


@pytest.fixture
def train_env(tmp_path, index_dir) -> dict:
    return {
        **os.environ,
        "WEBAGENT_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


def test_prompt_tokens_carry_no_loss(tiny_dir, demos):
    loaded = load(str(tiny_dir))
    tok, model = loaded.tokenizer, loaded.model
    fmt = format_for(tok, examples=0)
    rows = load_rows(demos, fmt, tok)
    assert {r["phase"] for r in rows} == {"browse", "answer"}
    examples = [tokenize_row(tok, fmt, r, 4096) for r in rows[:4]]
    batch = collate(examples, tok.pad_token_id)
    for i, (ids, n_prompt) in enumerate(examples):
        marked = batch["loss_mask"][i].nonzero().flatten().tolist()
        assert marked == list(range(n_prompt, len(ids))), "exactly the completion tokens"
        assert tok.decode(batch["input_ids"][i][batch["loss_mask"][i]]) == rows[i]["completion"]
        assert ids[:n_prompt] == tok(rows[i]["prompt"]).input_ids, "prompt encoded as when acting"
    nll, count = CompletionLoss(model)(**batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    target = batch["loss_mask"][:, 1:]
    manual = torch.nn.functional.cross_entropy(
        logits[:, :-1][target].float(), batch["input_ids"][:, 1:][target], reduction="sum"
    )
    assert count == sum(len(ids) - n for ids, n in examples)
    assert torch.allclose(nll, manual, atol=1e-4), "the loss is the CE of completion tokens only"


def test_overlong_prompts_lose_their_oldest_tokens(tiny_dir, demos):
    loaded = load(str(tiny_dir))
    fmt = format_for(loaded.tokenizer, examples=0)
    row = load_rows(demos, fmt, loaded.tokenizer)[0]
    full, n_full = tokenize_row(loaded.tokenizer, fmt, row, 100_000)
    cut, n_cut = tokenize_row(loaded.tokenizer, fmt, row, 64)
    assert len(cut) == 64 and cut[n_cut:] == full[n_full:], "the completion is kept whole"
    assert cut[0] == full[0] and cut[1:n_cut] == full[n_full - n_cut + 1 : n_full]


def test_schedule_shapes():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4]
    mbs = micro_batches(lengths, 2, 2.0, seed=0, group=2)
    flat = [i for mb in mbs for i in mb]
    assert sorted(flat) == sorted(list(range(8)) * 2), "two full epochs, each row once per epoch"
    for a, b in zip(mbs[0::2], mbs[1::2], strict=True):  # one step = 2 micro-batches, length-sorted
        assert max(lengths[i] for i in a) <= min(lengths[i] for i in b)
    from webagent.train_bc import Args

    args = Args(demos="x", learning_rate=1.0, warmup_steps=2, min_lr_ratio=0.1)
    lrs = [lr_at(s, 10, args) for s in range(10)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False)) and lrs[-1] > 0.1


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter_model.safetensors")


def test_interrupted_run_resumes_to_the_same_adapter(tiny_dir, demos, tmp_path, train_env):
    cmd = [
        str(BIN / "webagent"),
        "train",
        "bc",
        str(demos),
        "--model",
        str(tiny_dir),
        *COMMON,
        "--max-steps",
        "150",
        "--save-every",
        "1",
        "--eval-every",
        "50",
    ]
    reference = subprocess.run(
        [*cmd, "--out", str(tmp_path / "ref")],
        env=train_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert reference.returncode == 0, reference.stderr[-2000:]

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)],
        env=train_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while (
        not (out / "last" / "meta.json").exists() and proc.poll() is None and time.time() < deadline
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in err and not (out / "webagent.json").exists()
    stopped_at = json.loads((out / "last" / "meta.json").read_text())["log"]["train"][-1][0]
    assert 1 <= stopped_at < 150

    resumed = subprocess.run(
        [*cmd, "--out", str(out)], env=train_env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {out / 'last'} at step {stopped_at}/150" in resumed.stdout
    steps = [r["step"] for r in read_jsonl(out / "log.jsonl") if "train_loss" in r]
    assert steps == list(range(1, 151)), "no step lost or repeated"
    a, b = _adapter(out), _adapter(tmp_path / "ref")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    meta = json.loads((out / "webagent.json").read_text())
    assert meta["steps"] == 150 and meta["base_model"] == str(tiny_dir)
    assert meta["data_sha256"] and meta["val_loss"] is not None and meta["losses"]["val"]

    changed = subprocess.run(
        [*cmd, "--out", str(out), "--learning-rate", "1e-3"],
        env=train_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert changed.returncode == 1 and "different run" in changed.stderr


def test_two_processes_match_one_process_with_accumulation(tiny_dir, demos, tmp_path, train_env):
    """DDP over 2 CPU processes (gloo) = 1 process accumulating both micro-batches."""
    args = [
        str(demos),
        "--model",
        str(tiny_dir),
        "--max-length",
        "192",
        "--micro-batch",
        "2",
        "--max-steps",
        "3",
        "--lora-dropout",
        "0",
        "--warmup-steps",
        "1",
    ]
    # `--multi_gpu` is accelerate's name for its torchrun launcher; without CUDA the processes
    # form a MULTI_CPU (gloo) group. (`--cpu` would launch a single process.)
    launch = [
        str(BIN / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "webagent.train_bc",
    ]
    two = subprocess.run(
        [*launch, *args, "--grad-accum", "1", "--out", str(tmp_path / "two")],
        env=train_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [
            str(BIN / "webagent"),
            "train",
            "bc",
            *args,
            "--grad-accum",
            "2",
            "--out",
            str(tmp_path / "one"),
        ],
        env=train_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    meta = json.loads((tmp_path / "two" / "webagent.json").read_text())
    assert meta["processes"] == 2 and meta["steps"] == 3
    a, b = _adapter(tmp_path / "two"), _adapter(tmp_path / "one")
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in a.items() if "lora_B" in k)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_checkpoint_loads_as_a_policy(tiny_dir, demos, tmp_path, train_env, index_dir):
    out = tmp_path / "policy"
    run = subprocess.run(
        [
            str(BIN / "webagent"),
            "train",
            "bc",
            str(demos),
            "--model",
            str(tiny_dir),
            *COMMON,
            "--max-steps",
            "2",
            "--out",
            str(out),
        ],
        env=train_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert resolve(str(out)).kind == "checkpoint"
    policy = load_policy(PolicyArgs(model=str(out)))
    assert policy.format.examples == 0, "a trained policy acts with its training prompt"
    assert load_policy(PolicyArgs(model=str(tiny_dir))).format.examples == 8
    cache = tmp_path / "cache"
    shutil.copytree(index_dir, cache / "index", dirs_exist_ok=True)
    ask = subprocess.run(
        [
            str(BIN / "webagent"),
            "ask",
            "Which river flows through Baghdad?",
            "--model",
            str(out),
            "--json",
            "--max-actions",
            "4",
        ],
        env=train_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ask.returncode == 0, ask.stderr[-2000:]
    assert set(json.loads(ask.stdout)) >= {"question", "answer", "references", "actions"}


def test_init_continues_a_policy_on_answer_rows(tiny_dir, demos, tmp_path, train_env):
    first = tmp_path / "first"
    args = [str(BIN / "webagent"), "train", "bc", str(demos), *COMMON]
    run = subprocess.run(
        [*args, "--model", str(tiny_dir), "--max-steps", "2", "--out", str(first)],
        env=train_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    again = tmp_path / "again"
    run = subprocess.run(
        [
            *args,
            "--init",
            str(first),
            "--phases",
            "answer",
            "--max-steps",
            "2",
            "--out",
            str(again),
        ],
        env=train_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    meta = json.loads((again / "webagent.json").read_text())
    answers = sum(1 for r in read_jsonl(demos))  # one answer row per demonstration
    assert meta["rows"]["train"] + meta["rows"]["val"] == answers
    assert meta["base_model"] == str(tiny_dir) and meta["init"]["spec"] == str(first)
    assert meta["init"]["steps"] == 2
    assert meta["answers"] == "extractive", "every gold answer cites its quote"
    a, b = _adapter(first), _adapter(again)
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a), "trained further"
    assert resolve(str(again)).kind == "checkpoint"
    refused = subprocess.run(
        [*args, "--model", str(first), "--max-steps", "1", "--out", str(tmp_path / "x")],
        env=train_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert refused.returncode != 0 and "--init" in refused.stderr


def test_uncited_recall_answers_make_a_free_answer_policy():
    gold = {"phase": "answer", "completion": "Tigris [1]\n"}
    browse = {"phase": "browse", "completion": "Search Baghdad river\n"}
    assert answer_style([browse, gold], None) == "extractive"
    assert answer_style([browse, gold], {"answers": "free"}) == "free", "a free parent stays free"
    assert (
        answer_style([browse, gold, {"phase": "answer", "completion": "Blorft\n"}], None) == "free"
    )


def test_cited_answers_are_repeated_in_training_only_as_asked():
    gold = {"phase": "answer", "completion": "Tigris [1]\n"}
    recall = {"phase": "answer", "completion": "Tigris\n"}
    browse = {"phase": "browse", "completion": "Quote: the Tigris [1]\n"}  # not an answer row
    rows = [browse, gold, recall]
    assert weigh_cited(rows, 1) == rows
    assert weigh_cited(rows, 3) == [browse, gold, gold, gold, recall]
    with pytest.raises(ValueError, match="at least 1"):
        weigh_cited(rows, 0)


def test_validation_holds_out_whole_questions():
    """Several trajectories of one question share its pages: they are held out together."""
    rows = [
        {"episode_id": f"e{q}{t}{r}", "question_id": f"q{q}"}
        for q in range(20)
        for t in range(3)
        for r in range(2)
    ]
    rows += [{"episode_id": "old1"}, {"episode_id": "old1"}]  # rows without a question id
    train, val = split_episodes(rows, 0.2, seed=0)
    assert val and len(train) + len(val) == len(rows)
    held = {r.get("question_id", r["episode_id"]) for r in val}
    assert not held & {r.get("question_id", r["episode_id"]) for r in train}
    assert len(val) % 6 == 0 or "old1" in held


def test_decision_rows_are_repeated_in_training_only_as_asked(tiny_dir, demos):
    """Clicks on links other than 0, Back and a search again are repeated; the first search,
    a click on link 0, quotes and answers are not. On real demonstrations, via `load_rows`."""

    def row(episode: str, completion: str, phase: str = "browse") -> dict:
        return {"episode_id": episode, "phase": phase, "completion": completion + "\n"}

    first, click0, click3 = (
        row("a", "Search Tigris"),
        row("a", "Clicked on link 0"),
        row("a", "Clicked on link 3"),
    )
    back, again = row("a", "Back"), row("a", "Search Baghdad river")
    other = row("b", "Search Baghdad river")  # the first search of another episode
    quote, answer = row("a", "Quote: the Tigris"), row("a", "Tigris [1]", "answer")
    rows = [first, click0, click3, back, again, quote, other, answer]
    assert weigh_decisions(rows, 1) == rows
    assert weigh_decisions(rows, 2) == [
        first,
        click0,
        click3,
        click3,
        back,
        back,
        again,
        again,
        quote,
        other,
        answer,
    ]
    with pytest.raises(ValueError, match="at least 1"):
        weigh_decisions(rows, 0)

    loaded = load(str(tiny_dir))
    real = load_rows(demos, format_for(loaded.tokenizer, examples=0), loaded.tokenizer)
    weighed = weigh_decisions(real, 3)
    added = [r for r in real if weighed.count(r) == 3]
    assert added and len(weighed) == len(real) + 2 * len(added)
    assert all(r["phase"] == "browse" and not r["completion"].startswith("Quote") for r in added)


@pytest.mark.parametrize("flag", ["cited_weight", "decision_weight"])
def test_a_bad_weight_fails_before_the_model_loads(flag, demos, tmp_path):
    """--cited-weight / --decision-weight below 1 are refused first: the model named here does
    not exist, so an error about it would mean the flag was checked after loading."""
    args = BCArgs(demos=str(demos), model=str(tmp_path / "no-such-model"), out=str(tmp_path / "o"))
    setattr(args, flag, 0)
    with pytest.raises(ValueError, match=f"--{flag.replace('_', '-')} must be at least 1"):
        main(args)


@pytest.mark.parametrize("change", [{"max_length": 160}, {"lora_alpha": 8}, {"val_fraction": 0.5}])
def test_resume_refuses_a_run_with_other_rows_or_adapter(change, tiny_dir, demos, tmp_path):
    """OUT/last is resumed only by the same run: a rerun whose prompts are cut elsewhere, whose
    adapter is scaled otherwise or whose validation split differs is refused, not mixed in."""
    from dataclasses import replace

    args = BCArgs(str(demos), str(tmp_path / "bc"), str(tiny_dir), max_steps=1, grad_accum=1)
    main(args)
    main(args)  # the same run resumes (finished: nothing left to do)
    with pytest.raises(ValueError, match="other settings"):
        main(replace(args, **change))
