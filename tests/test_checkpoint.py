"""Checkpoint directories: a kill at any point leaves one complete checkpoint to resume from."""

import hashlib
import json
import os

import pytest
import torch

from env.paths import file_sha256
from reward.checkpoint import (
    check_fingerprint,
    complete_dir,
    flag_names,
    load_resume,
    restore_trainable,
    resume_state,
    settings_file,
    trainable_state,
    write_dir,
)


def test_write_dir_swaps_in_whole_directories(tmp_path):
    last = tmp_path / "last"
    write_dir(last, lambda d: (d / "state.pt").write_text("1"))
    write_dir(last, lambda d: (d / "state.pt").write_text("2"))
    assert (last / "state.pt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"], "no tmp or old left behind"

    def dies(d):
        (d / "state.pt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dir(last, dies)
    assert (last / "state.pt").read_text() == "2", "a failed write leaves the old checkpoint"
    assert complete_dir(last) == last


def test_complete_dir_recovers_a_kill_between_the_renames(tmp_path):
    last = tmp_path / "last"
    write_dir(last, lambda d: (d / "state.pt").write_text("1"))
    os.replace(last, tmp_path / "last.old")  # the kill: old moved aside, new not yet in place
    (tmp_path / "last.tmp").mkdir()
    assert complete_dir(last) == last and (last / "state.pt").read_text() == "1"
    assert complete_dir(tmp_path / "never") is None


def test_resume_state_finds_the_file_only_in_a_complete_checkpoint(tmp_path):
    last = tmp_path / "last"
    assert resume_state(last) is None
    write_dir(last, lambda d: (d / "adapter.bin").write_text("x"))
    assert resume_state(last) is None, "a checkpoint without state.pt does not resume"
    write_dir(last, lambda d: (d / "state.pt").write_text("2"))
    os.replace(last, tmp_path / "last.old")
    assert resume_state(last) == last / "state.pt" and (last / "state.pt").read_text() == "2"


def test_file_sha256_matches_hashlib_across_block_boundaries(tmp_path):
    data = os.urandom((1 << 20) + 17)  # more than one 1 MiB block
    (tmp_path / "data.jsonl").write_bytes(data)
    assert file_sha256(tmp_path / "data.jsonl") == hashlib.sha256(data).hexdigest()


def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(tmp_path):
    check_fingerprint({"seed": 0, "lr": 1e-4}, {"seed": 0, "lr": 1e-4}, "last")
    with pytest.raises(ValueError, match=r"different run(.|\n)*\n  lr: 0.0001 → 0.001\n"):
        check_fingerprint({"seed": 0, "lr": 1e-4}, {"seed": 0, "lr": 1e-3}, "last")
    with pytest.raises(ValueError, match=r"world: \(absent\) → 2\n.*new --out"):
        check_fingerprint(None, {"world": 2}, "last")
    last = tmp_path / "last"
    assert load_resume(last, {"seed": 0}) is None
    write_dir(last, lambda d: torch.save({"fingerprint": {"seed": 0}, "step": 3}, d / "state.pt"))
    assert load_resume(last, {"seed": 0})["step"] == 3
    with pytest.raises(ValueError, match="different run"):
        load_resume(last, {"seed": 1})


def test_an_old_run_directory_is_refused_saying_which_settings_differ_and_what_to_do(tmp_path):
    """An eval run from before int8 sampling and --search: each difference is named old -> new
    down to the leaf setting, and the way on is a flag that gives the old value back, or a new
    --out when no flag can (a setting the old run never recorded)."""
    from webagent.eval import EvalArgs

    args = EvalArgs(dataset="d.jsonl")
    flags = flag_names(args)
    assert {"int8", "search", "max_actions", "best_of", "model"} <= flags
    assert not {"dataset", "out", "policy", "env"} & flags
    now = {"policy": {"int8": True, "seed": 0}, "env": {"search": "hybrid", "max_actions": 10}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"policy": {"int8": False, "seed": 0}, "env": {"max_actions": 10}}))
    with pytest.raises(ValueError) as refused:
        settings_file(path, now, flags)
    lines = str(refused.value).splitlines()
    assert "different run" in lines[0]
    assert lines[1:3] == ["  policy.int8: false → true", "  env.search: (absent) → hybrid"]
    assert "another version" in lines[3] and "use a new --out" in lines[3]
    path.write_text(json.dumps({"policy": {"int8": False, "seed": 0}, **{"env": now["env"]}}))
    with pytest.raises(ValueError, match=r"rerun with --no-int8; else use a new --out"):
        settings_file(path, now, flags)
    old = {**now, "env": {"search": "bm25", "max_actions": 20}}
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"rerun with --search bm25 --max-actions 20;"):
        settings_file(path, now, flags)
    settings_file(path, old, flags)  # the same settings resume


def test_trainable_state_round_trips_only_the_trained_parameters():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    model[0].requires_grad_(False)
    saved = trainable_state(model)
    assert sorted(saved) == ["1.bias", "1.weight"]
    frozen = model[0].weight.detach().clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    restore_trainable(model, saved)
    assert torch.equal(model[1].weight, saved["1.weight"])
    assert torch.equal(model[0].weight, frozen + 1.0), "frozen weights are not touched"
