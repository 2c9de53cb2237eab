"""Rate-distortion evaluation: x264/x265 through ffmpeg, the CSV and plot, the Bjøntegaard delta rate."""
import csv
import os

import numpy as np
import pytest
import torch

from codec.evaluate import bd_rate, ffmpeg_roundtrip, quality

model_adapter = pytest.importorskip("models.builders", reason="a model family's adapter is missing")


def carphone() -> str:
    from data_utils.sample_data import sample_video_files

    return sample_video_files("valid")[0]


def tiny_checkpoint(directory) -> str:
    from core.checkpoint import save_checkpoint
    from models.builders import config_from_dict

    raw = {"model_type": "VQVAE2", "scaling_rates": [4], "data_args": {"sequence_length": 4, "resolution": 16},
           "model_args": {"n_hid": 8, "res_channels": 4, "nb_res_layers": 1, "nb_levels": 1, "n_init": 4,
                          "vocab_size": 16}}
    torch.manual_seed(0)
    model = model_adapter.create_model(config=config_from_dict(raw))
    return save_checkpoint({"steps": 0, "state_dict": model.state_dict(), "config": raw, "model_type": "VQVAE2"},
                           os.path.join(str(directory), "tiny.pth.tar"))


def test_bd_rate_of_known_curves():
    anchor = [(0.1, 30.0), (0.2, 33.0), (0.4, 36.0), (0.8, 39.0)]
    assert bd_rate(anchor, anchor)[0] == pytest.approx(0.0, abs=1e-9)
    half = [(bpp / 2, psnr) for bpp, psnr in anchor]
    assert bd_rate(anchor, half)[0] == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(anchor, [(0.05, 20.0), (0.07, 22.0)]) == (None, "no overlap")
    assert bd_rate(anchor, [(0.3, 34.0)])[0] is None


def test_x264_roundtrip_of_odd_sized_frames(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, size=(1, 15, 21, 3), dtype=np.uint8), 4, axis=0)
    low = ffmpeg_roundtrip(frames, 25.0, "x264", 45, str(tmp_path))
    high = ffmpeg_roundtrip(frames, 25.0, "x264", 10, str(tmp_path))
    assert low[1].shape == high[1].shape == frames.shape
    assert low[0] < high[0]  # higher CRF, fewer bytes
    assert quality(low[1], frames)[0] < quality(high[1], frames)[0]
    assert quality(frames, frames)[1] == pytest.approx(1.0)


def test_evaluate_writes_csv_plot_and_bd_rate(tmp_path, capsys):
    from codec.cli import main

    out = tmp_path / "rd"
    argv = ["evaluate", "--clips", carphone(), "--checkpoints", f"tiny={tiny_checkpoint(tmp_path)}",
            "--out", str(out), "--crf", "30", "51", "--size", "32", "32", "--max-frames", "8", "--device", "cpu",
            "--quiet"]
    assert main(argv) == 0
    with open(out / "rd.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["codec"] for r in rows} == {"tiny", "x264", "x265"}
    x264 = [r for r in rows if r["codec"] == "x264"]
    assert [r["setting"] for r in x264] == ["crf=30", "crf=51"]
    for r in rows:
        assert r["clip"] == "carphone_pristine.mp4" and r["frames"] == "8" and r["width"] == "32"
        assert float(r["bpp"]) == pytest.approx(8 * int(r["bytes"]) / (8 * 32 * 32))
        assert 5 < float(r["psnr"]) < 100 and float(r["encode_fps"]) > 0
    assert float(x264[0]["psnr"]) > float(x264[1]["psnr"])
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "bd_rate.csv", newline="") as fh:
        bd = {r["codec"]: r for r in csv.DictReader(fh)}
    assert bd["tiny"]["note"] == "needs 2+ rate points per curve" and bd["x265"]["anchor"] == "x264"
    table = capsys.readouterr().out
    assert "x264" in table and "BD-rate x265 vs x264" in table
