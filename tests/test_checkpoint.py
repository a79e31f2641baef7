"""Checkpoint directories: a kill at any point leaves one complete checkpoint to resume from."""

import os

import pytest

from reward.checkpoint import complete_dir, resume_state, write_dir


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
