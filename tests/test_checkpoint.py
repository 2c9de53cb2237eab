"""Checkpoint files: atomic saves, safe loads, pruning, fallback past damaged files."""
import os
import pickle
import random

import pytest
import torch

from core.checkpoint import (
    CheckpointError,
    capture_rng_state,
    checkpoint_name,
    find_resumable,
    RunCheckpoints,
    load_checkpoint,
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


def test_resume_falls_back_past_a_truncated_file(tmp_path, caplog):
    for step in (10, 20):
        save_checkpoint(payload(step), str(tmp_path / checkpoint_name(step)))
    newest = tmp_path / checkpoint_name(20)
    newest.write_bytes(newest.read_bytes()[:200])  # truncated by a crash of the disk, say
    path, ckpt = find_resumable(str(tmp_path))
    assert ckpt["steps"] == 10 and path.endswith(checkpoint_name(10))
    assert checkpoint_name(20) in caplog.text


def flip_byte(path, offset, bit=0):
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 1 << bit
    open(path, "wb").write(bytes(data))


def test_every_single_byte_flip_of_a_checkpoint_is_refused(tmp_path):
    path = str(tmp_path / "ckpt.pth.tar")
    big = {**payload(3), "state_dict": {"w": torch.randn(64, 64), "b": torch.arange(10)}}
    save_checkpoint(big, path)
    original = open(path, "rb").read()
    rng = random.Random(0)
    offsets = sorted({rng.randrange(len(original)) for _ in range(30)} | {0, len(original) // 2, len(original) - 1})
    for offset in offsets:
        open(path, "wb").write(original)
        flip_byte(path, offset, rng.randrange(8))
        with pytest.raises(CheckpointError, match="damaged"):
            load_checkpoint(path)


def test_resume_auto_skips_a_file_failing_its_checksum_with_a_warning(tmp_path, caplog):
    for step in (10, 20):
        save_checkpoint(payload(step), str(tmp_path / checkpoint_name(step)))
    newest = str(tmp_path / checkpoint_name(20))
    size = os.path.getsize(newest)
    flip_byte(newest, size // 2)  # a flip inside the payload: the file still unpickles
    path, ckpt = find_resumable(str(tmp_path))
    assert ckpt["steps"] == 10
    assert checkpoint_name(20) in caplog.text and "checksum" in caplog.text


def test_files_without_a_checksum_still_load(tmp_path):
    path = tmp_path / "older.pth.tar"
    torch.save(payload(5), path)  # written by an older version, or by hand
    assert load_checkpoint(str(path))["steps"] == 5


def test_a_saved_checkpoint_is_still_an_ordinary_torch_file(tmp_path):
    path = str(tmp_path / "ckpt.pth.tar")
    save_checkpoint(payload(4), path)
    assert torch.load(path, weights_only=True)["steps"] == 4


def test_pruning_considers_only_this_runs_files_and_keeps_the_one_just_written(tmp_path):
    for step in (100, 200):  # another run's files in the same folder
        save_checkpoint(payload(step), str(tmp_path / checkpoint_name(step)))
    series = RunCheckpoints(str(tmp_path), keep_last=2)
    for step in (1, 2, 3):
        assert os.path.isfile(series.save(payload(step), step))
    names = sorted(os.listdir(tmp_path))
    assert names == [checkpoint_name(s) for s in (2, 3, 100, 200)]
    # a resumed run goes on pruning what its earlier processes wrote
    path = str(tmp_path / checkpoint_name(3))
    resumed = RunCheckpoints(str(tmp_path), keep_last=2)
    resumed.adopt(path, load_checkpoint(path))
    resumed.save(payload(4), 4)
    assert sorted(os.listdir(tmp_path)) == [checkpoint_name(s) for s in (3, 4, 100, 200)]


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from core.atomic_files import StorageError

    path = str(tmp_path / "ckpt.pth.tar")
    save_checkpoint(payload(1), path)
    real_open = open

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def open_full(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return FullDisk(fh) if "w" in mode and ".tmp_" in str(file) else fh

    monkeypatch.setattr("builtins.open", open_full)
    with pytest.raises(StorageError) as err:
        save_checkpoint(payload(2), path)
    monkeypatch.undo()
    assert "No space left on device" in str(err.value) and path in str(err.value)
    assert "\n" not in str(err.value)
    assert load_checkpoint(path)["steps"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pth.tar"]


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
