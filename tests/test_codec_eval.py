"""Rate-distortion evaluation: x264/x265 through ffmpeg, LPIPS, the CSV, the pictures, the Bjøntegaard delta rate."""
import csv
import math
import os

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from codec.evaluate import RatePoint, bd_rate, evaluate, ffmpeg_roundtrip, quality, side_by_side_points
from codec.rd_pictures import MIN_TILE_PX, RD_PANELS, rd_figure, side_by_side_figure
from core.pretrained import VGG16_FILE
from models.perceptual import VGG16Slices

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


def random_vgg16_file(directory) -> str:
    """A torchvision-style VGG16 ``features.*`` weights file with random values (no download)."""
    torch.manual_seed(1)
    path = os.path.join(str(directory), "vgg16_random.pth")
    torch.save({f"features.{key.split('.', 1)[1]}": value for key, value in VGG16Slices().state_dict().items()}, path)
    return path


def rate_point(clip, codec, setting, bpp, psnr, lpips=None) -> RatePoint:
    return RatePoint(clip, codec, setting, 8, 16, 16, int(bpp * 8 * 16 * 16 / 8), bpp, psnr, psnr / 50, lpips, 10.0,
                     10.0)


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


def test_evaluate_writes_csv_plot_and_bd_rate(empty_hub, capsys):
    tmp_path = empty_hub
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
    captured = capsys.readouterr()
    assert "x264" in captured.out and "BD-rate x265 vs x264" in captured.out
    # no VGG16 weights: LPIPS skipped with one note naming the file and the option, the column left empty
    notes = [line for line in captured.err.splitlines() if "LPIPS" in line]
    assert len(notes) == 1 and VGG16_FILE in notes[0] and "--vgg-weights" in notes[0] and "skipped" in notes[0]
    assert all(r["lpips"] == "" for r in rows)
    # the middle frame side by side: original, the model, x264 -- three tiles of at least MIN_TILE_PX each
    picture = imread(str(out / "side_by_side_carphone_pristine.png"))
    assert picture.shape[1] == 3 * MIN_TILE_PX


def test_missing_vgg_weights_file_is_one_line_error(tmp_path, capsys):
    from codec.cli import main

    argv = ["evaluate", "--clips", carphone(), "--checkpoints", str(tmp_path / "never_read.pth.tar"),
            "--out", str(tmp_path / "rd"), "--vgg-weights", str(tmp_path / "absent.pth"), "--quiet"]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "\n" not in error and "--vgg-weights" in error and "absent.pth" in error
    assert not (tmp_path / "rd").exists()


def test_evaluate_measures_lpips_with_given_weights(tmp_path):
    points, _ = evaluate([carphone()], [f"tiny={tiny_checkpoint(tmp_path)}"], str(tmp_path / "rd"), crfs=(30, 51),
                         size=(32, 32), max_frames=4, codecs=("x264",), vgg_weights=random_vgg16_file(tmp_path))
    assert [p.setting for p in points] == ["tiny.pth.tar", "crf=30", "crf=51"]
    assert all(p.lpips is not None and math.isfinite(p.lpips) and p.lpips > 0 for p in points)
    assert points[1].lpips < points[2].lpips  # more bits, closer to the original
    with open(tmp_path / "rd" / "rd.csv", newline="") as fh:
        assert [float(r["lpips"]) for r in csv.DictReader(fh)] == pytest.approx([p.lpips for p in points])
    fig = rd_figure(points)
    assert len(fig.axes) == len(RD_PANELS) == 3
    for ax in fig.axes:  # every panel draws every point, labelled by its setting
        assert sorted(t.get_text() for t in ax.texts) == ["crf=30", "crf=51", "tiny"]


def test_rd_figure_has_a_row_of_panels_per_clip_and_says_when_lpips_is_missing():
    points = [rate_point(clip, codec, setting, bpp, psnr, lpips if clip == "a.mp4" else None)
              for clip in ("a.mp4", "b.mp4")
              for codec, setting, bpp, psnr, lpips in (("model", "m.pth.tar rate=1", 0.05, 25.0, 0.3),
                                                       ("model", "m.pth.tar rate=2", 0.1, 28.0, 0.2),
                                                       ("x264", "crf=37", 0.08, 30.0, 0.1))]
    fig = rd_figure(points, lpips_note="no VGG16 weights")
    assert len(fig.axes) == 2 * 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["a.mp4: PSNR", "a.mp4: SSIM", "a.mp4: LPIPS", "b.mp4: PSNR", "b.mp4: SSIM", "b.mp4: LPIPS"]
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["crf=37", "m rate=1", "m rate=2"]
    assert [line.get_label() for line in fig.axes[0].lines] == ["model", "x264"]
    assert sorted(t.get_text() for t in fig.axes[2].texts) == ["crf=37", "m rate=1", "m rate=2"]
    missing = [t.get_text() for t in fig.axes[5].texts]
    assert len(missing) == 1 and "not measured" in missing[0] and "no VGG16 weights" in missing[0]
    assert not fig.axes[5].lines


def test_side_by_side_shows_the_top_model_rate_and_the_nearest_x264():
    points = [rate_point("a.mp4", "model", "m rate=1", 0.05, 25.0), rate_point("a.mp4", "model", "m rate=2", 0.2, 28.0),
              rate_point("a.mp4", "x265", "crf=30", 0.2, 33.0), rate_point("a.mp4", "x264", "crf=30", 0.5, 34.0),
              rate_point("a.mp4", "x264", "crf=44", 0.15, 29.0), rate_point("a.mp4", "x264", "crf=51", 0.04, 22.0)]
    chosen = side_by_side_points(points)
    assert [(p.codec, p.setting) for p in chosen] == [("model", "m rate=2"), ("x264", "crf=44")]
    original = np.full((16, 24, 3), 100, dtype=np.uint8)
    decoded = [(p, original + 1) for p in chosen]  # off by one everywhere: 48.13 dB
    fig = side_by_side_figure(original, 4, "a.mp4", decoded)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 3 and titles[0] == "original\na.mp4, frame 4"
    assert titles[1] == "model m rate=2\n0.2000 bpp, PSNR 48.13 dB (clip 28.00 dB)"
    assert titles[2].startswith("x264 crf=44\n0.1500 bpp, PSNR 48.13 dB")
