"""Every bad input a user can give ends in one line naming the key or path and what was expected.

``BAD_INPUTS`` is the list the robustness figures count: each entry is run through the
training entry point (``main``), which must return a non-zero code and log exactly one
error line, never a traceback.
"""
import errno
import logging
import os
import pickle

import pytest
import torch

from tests.helpers import merge, tiny_config, write_config
from train.train_custom_videos import main

VQVAE2 = {"model_type": "VQVAE2", "scaling_rates": [2, 2],
          "model_args": {"n_hid": 8, "res_channels": 4, "nb_res_layers": 1, "nb_levels": 2, "n_init": 8,
                         "vocab_size": 16}}
TAMING = {"model_type": "TamingVQGAN",
          "model_args": {"vocab_size": 16, "n_init": 8,
                         "ddconfig": {"ch": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [],
                                      "z_channels": 8, "resolution": 32}}}  # (its LPIPS needs VGG weights)


class Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def pickle_with_globals(tmp_path, name):
    path = tmp_path / name
    with open(path, "wb") as fh:
        torch.save({"features.0.weight": torch.zeros(1), "hook": Evil()}, fh, pickle_module=pickle)
    return str(path)


def a_file(tmp_path, name="not_a_folder", data=b"x"):
    (tmp_path / name).write_bytes(data)
    return str(tmp_path / name)


def a_folder(tmp_path, name, files=()):
    folder = tmp_path / name
    folder.mkdir()
    for file_name, data in files:
        (folder / file_name).write_bytes(data)
    return str(folder)


def family(spec):
    """Replace the tiny VqVae2 model with another family's (its model_args whole)."""
    return lambda tmp_path, data: {**data, "model_type": spec["model_type"], "model_args": spec["model_args"],
                                   **({"scaling_rates": spec["scaling_rates"]} if "scaling_rates" in spec else {})}


def overrides(**sections):
    return lambda tmp_path, data: merge(data, sections)


# (id, data -> bad data, text the one line must contain)
BAD_INPUTS = [
    ("seed -1", overrides(data_args={"seed": -1}), "data_args.seed"),
    ("seed 2**70", overrides(data_args={"seed": 2**70}), "data_args.seed"),
    ("vocab_size 1e9", overrides(model_args={"vocab_size": 1e9}), "model_args.vocab_size"),
    ("resolution 100000", overrides(data_args={"resolution": [100000, 100000]}), "data_args.resolution"),
    ("prefetch cache too big", overrides(data_args={"initial_prefetch_size": 10**7, "resolution": [256, 256]}),
     "data_args.initial_prefetch_size"),
    ("input_channels 1", overrides(model_args={"input_channels": 1}), "model_args.input_channels"),
    ("output_channels 1", overrides(model_args={"output_channels": 1}), "model_args.output_channels"),
    ("folder_name is a file", lambda t, d: merge(d, {"train_args": {"folder_name": a_file(t)}}),
     "train_args.folder_name"),
    ("run_name ../..", overrides(train_args={"run_name": "../.."}), "train_args.run_name"),
    ("device tpu", overrides(train_args={"device": "tpu"}), "train_args.device"),
    ("device cuda:7", overrides(train_args={"device": "cuda:7"}), "train_args.device"),
    ("device xla", overrides(train_args={"device": "xla"}), "train_args.device"),
    ("vgg_weights with globals",
     lambda t, d: merge(d, {"train_args": {"vgg_weights": pickle_with_globals(t, "vgg.pth"), "use_perceptual": True}}),
     "vgg.pth"),
    ("fid_weights with globals",
     lambda t, d: merge(d, {"train_args": {"fid_weights": pickle_with_globals(t, "fid.pth"), "compute_fid": True}}),
     "fid.pth"),
    ("only unreadable images",
     lambda t, d: merge(d, {"use_images": True, "data_process": {"train": a_folder(
         t, "broken_images", [(f"{i}.png", b"not a png") for i in range(3)])}}), "data_process.train: no usable image"),
    ("batch_size 0", overrides(data_args={"batch_size": 0}), "data_args.batch_size"),
    ("batch_size '2'", overrides(data_args={"batch_size": "2"}), "data_args.batch_size"),
    ("lr -1", overrides(train_args={"lr": -1}), "train_args.lr"),
    ("lr 'fast'", overrides(train_args={"lr": "fast"}), "train_args.lr"),
    ("lr_decay 0", overrides(train_args={"lr_decay": 0}), "train_args.lr_decay"),
    ("lr_decay_interval 0", overrides(train_args={"lr_decay_interval": 0}), "train_args.lr_decay_interval"),
    ("num_steps 0", overrides(train_args={"num_steps": 0}), "train_args.num_steps"),
    ("sequence_length 0", overrides(data_args={"sequence_length": 0}), "data_args.sequence_length"),
    ("sequence_length longer than every clip", overrides(data_args={"sequence_length": 1000}), "data_process"),
    ("model_type Nope", overrides(model_type="Nope"), "model_type"),
    ("group_count 7", overrides(model_args={"group_count": 7}), "model_args.group_count"),
    ("n_init 50", overrides(model_args={"n_init": 50}), "n_init = 50"),
    ("unknown top-level key", overrides(modle_type="VqVae2"), "modle_type"),
    ("unknown train_args key", overrides(train_args={"learning_rate": 1}), "train_args.learning_rate"),
    ("model_args not an object", lambda t, d: {**d, "model_args": "abc"}, "model_args"),
    ("train folder missing", lambda t, d: merge(d, {"data_process": {"train": str(t / "nowhere")}}), "nowhere"),
    ("train folder empty", lambda t, d: merge(d, {"data_process": {"train": a_folder(t, "empty")}}), "empty"),
    ("valid folder missing", lambda t, d: merge(d, {"data_process": {"vaild": str(t / "gone")}}), "gone"),
    ("training_data_files missing",
     lambda t, d: {**{k: v for k, v in d.items() if k != "data_process"},
                   "data_args": {**d["data_args"], "training_data_files": [str(t / "missing.mp4")]}}, "missing.mp4"),
    ("checkpoint_path missing", lambda t, d: merge(d, {"train_args": {"checkpoint_path": str(t / "no.pth.tar")}}),
     "no.pth.tar"),
    ("checkpoint_path garbage",
     lambda t, d: merge(d, {"train_args": {"checkpoint_path": a_file(t, "junk.pth.tar", b"\0" * 64)}}), "junk.pth.tar"),
    ("init_from missing", lambda t, d: merge(d, {"train_args": {"init_from": str(t / "up.ckpt")}}), "up.ckpt"),
    ("resolution 31", overrides(data_args={"resolution": [31, 31]}), "data_args.resolution"),
    ("resolution 0", overrides(data_args={"resolution": 0}), "data_args.resolution"),
    ("precision fp8", overrides(train_args={"precision": "fp8"}), "train_args.precision"),
    ("save_interval 0", overrides(train_args={"save_interval": 0}), "train_args.save_interval"),
    ("keep_last 0", overrides(train_args={"keep_last": 0}), "train_args.keep_last"),
    ("val_max_images 0", overrides(train_args={"val_max_images": 0}), "train_args.val_max_images"),
    ("disc_loss wgan", overrides(train_args={"disc_loss": "wgan"}), "train_args.disc_loss"),
    ("recon_loss l3", overrides(train_args={"recon_loss": "l3"}), "train_args.recon_loss"),
    ("grad_clip -1", overrides(train_args={"grad_clip": -1}), "train_args.grad_clip"),
    ("resume yes", overrides(train_args={"resume": "yes"}), "train_args.resume"),
    ("use_images 'yes'", overrides(use_images="yes"), "use_images"),
    ("num_shards 0", overrides(data_args={"num_shards": 0}), "data_args.num_shards"),
    ("shard_id 3 of 2", overrides(data_args={"shard_id": 3, "num_shards": 2}), "data_args.shard_id"),
    ("initial_prefetch_size 0", overrides(data_args={"initial_prefetch_size": 0}), "data_args.initial_prefetch_size"),
    ("VQVAE2 scaling_rates [3, 2]", lambda t, d: merge(family(VQVAE2)(t, d), {"scaling_rates": [3, 2]}),
     "scaling_rates"),
    ("VQVAE2 three levels, two rates", lambda t, d: merge(family(VQVAE2)(t, d), {"model_args": {"nb_levels": 3}}),
     "scaling_rates"),
    ("Taming ch_mult []", lambda t, d: merge(family(TAMING)(t, d), {"model_args": {"ddconfig": {"ch_mult": []}}}),
     "model_args.ddconfig.ch_mult"),
    ("Taming resolution 34", lambda t, d: merge(family(TAMING)(t, d), {"data_args": {"resolution": [34, 34]}}),
     "data_args.resolution"),
]


@pytest.mark.parametrize("make, expected", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_naming_it(tmp_path, caplog, make, expected):
    data = make(tmp_path, tiny_config(tmp_path, train_args={"num_steps": 2, "validation_interval": 100}))
    path = write_config(tmp_path, data)
    with caplog.at_level(logging.WARNING):
        code = main(["--config", path])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2, errors
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert expected in errors[0]


def os_error_for(paths_under, code, message):
    """``open``/``os.open`` replacements raising ``OSError(code)`` for writes under ``paths_under``."""
    real_open, real_os_open = open, os.open

    def refused(path):
        return str(os.path.abspath(path)).startswith(str(paths_under))

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and refused(file):
            raise OSError(code, message, str(file))
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and refused(path):
            raise OSError(code, message, str(path))
        return real_os_open(path, flags, *args, **kwargs)

    return fake_open, fake_os_open


def test_a_read_only_run_folder_is_one_line_before_anything_runs(tmp_path, monkeypatch, caplog):
    data = tiny_config(tmp_path)
    path = write_config(tmp_path, data)
    os.makedirs(tmp_path / "runs" / "cfg")
    fake_open, fake_os_open = os_error_for(tmp_path / "runs", errno.EROFS, "Read-only file system")
    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    assert main(["--config", path]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Read-only file system" in errors[0] and "train_args.folder_name" in errors[0]


def test_a_full_disk_during_training_is_one_line_and_exit_code_74(tmp_path, monkeypatch, caplog):
    data = tiny_config(tmp_path, train_args={"num_steps": 4, "save_interval": 2, "validation_interval": 100})
    path = write_config(tmp_path, data)
    checkpoints = tmp_path / "runs" / "cfg" / "checkpoints"
    fake_open, fake_os_open = os_error_for(checkpoints, errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    assert main(["--config", path]) == 74
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(checkpoints) in errors[0]
    assert not [n for n in os.listdir(checkpoints) if n.startswith(".tmp")]
