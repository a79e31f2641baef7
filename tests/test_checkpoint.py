"""Checkpoint directories: a kill at any point leaves one complete checkpoint to resume from."""

import hashlib
import os

import pytest
import torch

from env.paths import file_sha256
from reward.checkpoint import (
    check_fingerprint,
    complete_dir,
    load_resume,
    restore_trainable,
    resume_state,
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
    with pytest.raises(ValueError, match=r"different run.*'lr': \(0.0001, 0.001\)"):
        check_fingerprint({"seed": 0, "lr": 1e-4}, {"seed": 0, "lr": 1e-3}, "last")
    with pytest.raises(ValueError, match=r"'world': \(None, 2\)"):
        check_fingerprint(None, {"world": 2}, "last")
    last = tmp_path / "last"
    assert load_resume(last, {"seed": 0}) is None
    write_dir(last, lambda d: torch.save({"fingerprint": {"seed": 0}, "step": 3}, d / "state.pt"))
    assert load_resume(last, {"seed": 0})["step"] == 3
    with pytest.raises(ValueError, match="different run"):
        load_resume(last, {"seed": 1})


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
