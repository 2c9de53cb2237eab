"""Checkpoint files: atomic saves, safe loads, pruning, fallback past damaged files."""
import os
import pickle

import pytest
import torch

from core.checkpoint import (
    CheckpointError,
    capture_rng_state,
    checkpoint_name,
    find_resumable,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)


def payload(step):
    return {"steps": step, "state_dict": {"w": torch.full((3,), float(step))}, "config": {"model_type": "VqVae"}}


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pth.tar")
    save_checkpoint(payload(1), path)

    def crash(obj, fh):
        fh.write(b"partial bytes")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(payload(2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["steps"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pth.tar"]  # no temp file left behind


def test_load_refuses_pickled_code_without_opt_in(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        torch.save({"steps": 1, "state_dict": {}, "config": {}, "obj": Evil()}, fh, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="allow_unsafe_load"):
        load_checkpoint(str(path))
    assert load_checkpoint(str(path), allow_unsafe=True)["obj"] == os.getcwd()


def test_damaged_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "none.pth"))
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="damaged or not a checkpoint"):
        load_checkpoint(str(tmp_path / "junk.pth"))


def test_prune_keeps_newest_and_resume_falls_back_past_damage(tmp_path, caplog):
    for step in (10, 20, 30, 40):
        save_checkpoint(payload(step), str(tmp_path / checkpoint_name(step)))
    prune_checkpoints(str(tmp_path), keep_last=3)
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == [
        checkpoint_name(40), checkpoint_name(30), checkpoint_name(20)]
    newest = tmp_path / checkpoint_name(40)
    newest.write_bytes(newest.read_bytes()[:200])  # truncated by a crash of the disk, say
    path, ckpt = find_resumable(str(tmp_path))
    assert ckpt["steps"] == 30 and path.endswith(checkpoint_name(30))
    assert checkpoint_name(40) in caplog.text


def test_rng_state_round_trips_through_a_safe_load(tmp_path):
    import random

    import numpy as np

    state = capture_rng_state()
    save_checkpoint({"rng": state}, str(tmp_path / "rng.pth"))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(load_checkpoint(str(tmp_path / "rng.pth"))["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_orphaned_temp_files_of_a_killed_save_are_removed(tmp_path):
    from core.atomic_files import remove_orphaned_temp_files

    save_checkpoint(payload(1), str(tmp_path / checkpoint_name(1)))
    (tmp_path / ".tmp_abc123checkpoint_step00000002.pth.tar").write_bytes(b"half a checkpoint")
    assert remove_orphaned_temp_files(str(tmp_path)) == 1
    assert os.listdir(tmp_path) == [checkpoint_name(1)]
    assert remove_orphaned_temp_files(str(tmp_path / "missing")) == 0
