"""The tool as a user meets it: the ``vqvc`` command from any folder, ``--set`` overrides, the
resolved ``config.json``, the three-line Python API and ``vqvc eval``."""
import glob
import json
import os
import subprocess
import sys
import tomllib

import pytest
import torch

from core.config import apply_overrides, parse_overrides
from core.config_schema import ConfigError
from data_utils.loader import build_loader
from data_utils.sample_data import builtin_files
from log_utils.log_utils import frame_psnr
from models.builders import load_config
from models.loaders import model_from_checkpoint
from tests.helpers import tiny_config, write_config
from train import evaluate_checkpoint as evaluation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = [os.path.join(ROOT, "param.json"), *sorted(glob.glob(os.path.join(ROOT, "configs", "*.json"))),
           *sorted(p for p in glob.glob(os.path.join(ROOT, "multitask", "*.json")) if not p.endswith("config.json"))]


def run_vqvc(args, cwd, **kwargs):
    """``python -m vqvc ARGS`` in ``cwd``, the project importable as an installed package would be."""
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vqvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VqVae2 trained 4 steps by ``vqvc train`` from a folder outside the project, with --set."""
    folder = tmp_path_factory.mktemp("user")
    data = tiny_config(folder)
    data["train_args"]["folder_name"] = "runs"  # relative: lands in the folder the command runs in
    write_config(folder, data, "tiny.json")
    done = run_vqvc(["train", "--config", "tiny.json", "--device", "cpu", "--set", "train_args.num_steps=4",
                     "train_args.save_interval=4", "train_args.validation_interval=4", "train_args.lr=3e-3"],
                    cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = folder / "runs" / "tiny"
    return folder, run_dir, str(run_dir / "checkpoints" / "checkpoint_step00000004.pth.tar")


# -- overrides ----------------------------------------------------------------------------------


def test_overrides_are_json_values_or_bare_strings_nested_by_dotted_keys():
    assert parse_overrides(["train_args.lr=1e-4", "data_args.resolution=[32, 48]", "train_args.device=cpu",
                            "train_args.use_gan=true", "train_args.init_from=null", "model_args.ddconfig.ch=64"]) == {
        "train_args": {"lr": 1e-4, "device": "cpu", "use_gan": True, "init_from": None},
        "data_args": {"resolution": [32, 48]}, "model_args": {"ddconfig": {"ch": 64}}}
    base = {"train_args": {"lr": 0.1, "num_steps": 5}}
    assert apply_overrides(base, ["train_args.lr=0.5"]) == {"train_args": {"lr": 0.5, "num_steps": 5}}
    assert base == {"train_args": {"lr": 0.1, "num_steps": 5}}  # the file's data is not changed


@pytest.mark.parametrize("item, message", [
    ("train_args.lr", "--set 'train_args.lr': expected KEY=VALUE"),
    ("train_args..lr=1", "expected KEY=VALUE with a dotted key"),
])
def test_malformed_overrides_are_one_line_errors(item, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_overrides([item])


@pytest.mark.parametrize("item, message", [
    ("train_args.lr=-1", "train_args.lr = -1.0: expected a value > 0"),
    ("train_args.lrr=1", "train_args.lrr: unknown key (did you mean 'lr'?)"),
    ("data_args.batch_size=two", "data_args.batch_size = 'two': expected an integer"),
    ("train_args=3", "train_args = 3: expected an object"),
])
def test_overrides_are_checked_by_the_schema_with_the_same_messages(tmp_path, item, message):
    path = write_config(tmp_path, tiny_config(tmp_path))
    with pytest.raises(ConfigError) as err:
        load_config(path, [item])
    assert str(err.value).startswith(f"{path}: {message}")


def test_a_bad_override_stops_the_training_script_with_one_line_and_exit_2(tmp_path):
    path = write_config(tmp_path, tiny_config(tmp_path))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train", "train_custom_videos.py"), "--config", path,
                           "--set", "train_args.num_steps=0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.endswith(f" - ERROR - {path}: train_args.num_steps = 0: expected a value > 0")


# -- the resolved config ------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, ROOT))
def test_the_resolved_config_rebuilds_the_same_config(tmp_path, path):
    config = load_config(path, ["train_args.lr=0.123"])
    saved = config.save_resolved(str(tmp_path / "config.json"))
    again = load_config(saved)
    assert again.resolved() == config.resolved()
    assert again.run_name == config.run_name and again.train_args.lr == 0.123
    assert not [name for name in os.listdir(tmp_path) if name != "config.json"]  # atomic: no temp file left


def test_a_run_writes_its_resolved_config_with_defaults_and_overrides(trained):
    _folder, run_dir, _ckpt = trained
    resolved = json.loads((run_dir / "config.json").read_text())
    assert resolved["train_args"]["num_steps"] == 4 and resolved["train_args"]["lr"] == 3e-3  # --set
    assert resolved["train_args"]["keep_last"] == 3 and resolved["train_args"]["lr_decay_interval"] == 1000  # defaults
    assert resolved["model_args"]["vocab_size"] == 32 and resolved["train_args"]["run_name"] == "tiny"


# -- the command and the API ----------------------------------------------------------------------


def test_pyproject_installs_every_package_and_the_vqvc_command():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)
    assert project["project"]["scripts"] == {"vqvc": "vqvc.cli:main"}
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [name for name in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, name, "__init__.py"))]
    assert sorted(p for p in packages if f"{p}*" not in patterns) == ["benchmarks"]
    assert project["tool"]["setuptools"]["py-modules"] == ["main"]


def test_vqvc_lists_its_commands_and_refuses_an_unknown_one(tmp_path):
    done = run_vqvc(["--help"], cwd=tmp_path)
    assert done.returncode == 0
    for command in ("vqvc train", "vqvc eval", "vqvc codec", "vqvc menu", "--set KEY=VALUE"):
        assert command in done.stdout
    done = run_vqvc(["fly"], cwd=tmp_path)
    assert done.returncode == 2 and "unknown command 'fly'; choose one of: train, eval, codec, menu" in done.stderr


def test_vqvc_codec_and_menu_work_from_another_folder(trained):
    folder, _run_dir, ckpt = trained
    clip = builtin_files("builtin:valid", False)[0]
    done = run_vqvc(["codec", "compress", clip, "clip.vqv", "--checkpoint", ckpt, "--max-frames", "4",
                     "--size", "32", "32", "--device", "cpu", "--quiet"], cwd=folder)
    assert done.returncode == 0, done.stderr
    done = run_vqvc(["codec", "info", "clip.vqv"], cwd=folder)
    assert done.returncode == 0 and "4 frames" in done.stdout
    done = run_vqvc(["menu", "--mode", "multi", "--dry-run"], cwd=folder)  # the project's multitask/ folder
    assert done.returncode == 0 and "vqvae2_k64" in done.stdout


def test_the_python_api_in_three_lines_from_another_folder(trained):
    folder, _run_dir, ckpt = trained
    script = f"""
import torch
clips = torch.randint(0, 256, (3, 2, 32, 32, 3), dtype=torch.uint8)
import vqvc
model = vqvc.load_model({ckpt!r})
indices = model.encode(model.clips_to_input(clips))
frames = model.decode(indices)
assert frames.shape == (6, 3, 32, 32) and not frames.requires_grad
assert torch.allclose(frames, model(model.clips_to_input(clips)).recon, atol=1e-5)
print("ok", tuple(indices.shape))
"""
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok (3,")


# -- vqvc eval ------------------------------------------------------------------------------------


def test_eval_writes_the_protocol_and_the_metrics_of_the_whole_pass(trained, tmp_path):
    folder, _run_dir, ckpt = trained
    done = run_vqvc(["eval", "--checkpoint", ckpt, "--data", "builtin:valid", "--frames", "2", "--clips-per-file",
                     "3", "--out", str(tmp_path / "ev"), "--device", "cpu"], cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "| PSNR (dB) |" in done.stdout and "eval: 100%" in done.stderr  # the table, and a progress bar
    record = json.loads((tmp_path / "ev" / "eval.json").read_text())
    protocol, metrics = record["protocol"], record["metrics"]
    assert protocol["resolution"] == [32, 32] and protocol["frames_per_clip"] == 2 and protocol["data"] == "builtin:valid"
    for key in ("crop", "psnr", "ssim", "lpips", "rfid", "codebook_usage", "bpp_fixed", "bpp_entropy_payload",
                "bpp_entropy_coded"):
        assert protocol[key]
    assert (metrics["clips"], metrics["frames"]) == (3, 6)

    # PSNR: the mean over frames of each clamped RGB frame's PSNR, computed here independently
    model, config, _ = model_from_checkpoint(ckpt)
    data_args = config.data_args
    loader = build_loader(builtin_files("builtin:valid", False), data_args, False, validation=True, clips_per_file=3)
    values, bits, pixels = [], 0.0, 0
    with torch.no_grad():
        for clips, _ in loader:
            out = model(model.clips_to_input(clips))
            recon = (out.recon * 0.5 + 0.5).clamp(0, 1)
            values += frame_psnr(recon, clips.permute(0, 1, 4, 2, 3).flatten(0, 1).float() / 255).tolist()
            bits += out.indices.numel() * 5  # log2(32)
            pixels += clips.shape[0] * clips.shape[1] * 32 * 32
    assert metrics["psnr"] == pytest.approx(sum(values) / len(values), abs=1e-3)
    assert metrics["bpp_fixed"] == pytest.approx(bits / pixels)
    assert 0 < metrics["bpp_entropy_payload"] < 1.1 * metrics["bpp_fixed"] < metrics["bpp_entropy_coded"]
    assert 0 < metrics["codebook_usage"] <= 1 and 0 < metrics["ssim"] <= 1
    markdown = (tmp_path / "ev" / "eval.md").read_text()
    assert "| PSNR (dB) |" in markdown and "## Protocol" in markdown and "| crop |" in markdown
    assert sorted(os.listdir(tmp_path / "ev")) == ["eval.json", "eval.md"]


def test_eval_refuses_a_frame_count_the_model_cannot_code_in_one_line(trained, tmp_path, caplog):
    _folder, _run_dir, ckpt = trained
    assert evaluation.main(["--checkpoint", ckpt, "--data", "builtin:valid", "--frames", "3", "--quiet",
                            "--out", str(tmp_path / "ev")]) == 2
    assert "--frames 3: expected a positive multiple of 2" in caplog.text
    assert not (tmp_path / "ev").exists()
