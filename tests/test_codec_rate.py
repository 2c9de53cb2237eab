"""Several rates from one model: ``compress --rate N`` keeps the first N residual levels; ``evaluate``
draws the model's curve."""
import csv

import numpy as np
import pytest
import torch

from codec.bitstream import CodecError, read_header
from codec.codec import compress, decode_indices, decompress, load_codec_model, to_clips, to_frames
from codec.evaluate import quality
from tests.codec_helpers import FakeResidualAdapter, clip, still_clip, tiny_checkpoint


@pytest.fixture(autouse=True)
def fake_residual(monkeypatch):
    from models.builders import _MODEL_REGISTRY

    monkeypatch.setitem(_MODEL_REGISTRY, "FakeResidual", FakeResidualAdapter)


@pytest.fixture
def residual(tmp_path):
    return tiny_checkpoint(tmp_path, "FakeResidual")


def test_each_rate_keeps_the_first_levels_and_decodes_what_the_model_does(residual):
    codec = load_codec_model(residual)
    frames = clip(8, 16, 24)
    sizes, psnrs = [], []
    for rate in (1, 2, 3):
        data = compress(codec, frames, 25.0, rate=rate)
        header, indices = decode_indices(codec, data)
        assert header.levels[0].depth == rate and header.levels[0].clip_shape == (1, rate, 4, 6)
        assert indices[0].shape == (8, rate, 4, 6)
        decoded, _ = decompress(codec, data)
        with torch.no_grad():
            full = codec.model.encode_clips(to_clips(frames, 1, "cpu"))
            np.testing.assert_array_equal(indices[0], full[:, :rate].numpy())
            expected = to_frames(codec.model.decode_clips(full[:, :rate], len(frames)))
        np.testing.assert_array_equal(decoded, expected)
        sizes.append(len(data))
        psnrs.append(quality(decoded, frames)[0])
    assert sizes[0] < sizes[1] < sizes[2] and psnrs[0] < psnrs[1] < psnrs[2]
    no_rate = read_header(compress(codec, frames, 25.0))[0]
    assert no_rate.levels[0].depth == 3  # all levels by default


def test_rate_needs_residual_levels(tmp_path, residual):
    plain = load_codec_model(tiny_checkpoint(tmp_path, "TamingVQGAN"))
    with pytest.raises(CodecError, match="no residual quantizer levels"):
        compress(plain, clip(2, 16, 16), 25.0, rate=1)
    with pytest.raises(CodecError, match="at least 1"):
        compress(load_codec_model(residual), clip(2, 16, 16), 25.0, rate=0)


def test_rate_above_the_depth_keeps_every_level(residual):
    codec = load_codec_model(residual)
    header = read_header(compress(codec, still_clip(4, 16, 16), 25.0, rate=9))[0]
    assert header.levels[0].depth == 3


def test_cli_rate_and_info(tmp_path, residual, capsys):
    from codec.cli import main
    from codec.video_io import write_video

    write_video(str(tmp_path / "in.mp4"), clip(6, 16, 16), 25.0)
    out = tmp_path / "r2.vqv"
    assert main(["compress", str(tmp_path / "in.mp4"), str(out), "--checkpoint", residual, "--rate", "2",
                 "--device", "cpu", "--quiet"]) == 0
    assert main(["info", str(out)]) == 0
    assert "2 residual level(s)" in capsys.readouterr().out


def test_evaluate_draws_one_curve_from_a_models_rates(tmp_path, residual, capsys):
    from codec.cli import main
    from data_utils.sample_data import sample_video_files

    out = tmp_path / "rd"
    argv = ["evaluate", "--clips", sample_video_files("valid")[0], "--checkpoints", f"residual={residual}",
            "--out", str(out), "--crf", "30", "40", "51", "--size", "32", "32", "--max-frames", "6",
            "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    with open(out / "rd.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["codec"] == "residual"]
    assert [r["setting"].split()[-1] for r in rows] == ["rate=1", "rate=2", "rate=3"]
    assert float(rows[0]["bpp"]) < float(rows[1]["bpp"]) < float(rows[2]["bpp"])
    with open(out / "bd_rate.csv", newline="") as fh:
        anchors = {(r["codec"], r["anchor"]) for r in csv.DictReader(fh)}
    assert {("residual", "x264"), ("residual", "x265"), ("x265", "x264")} <= anchors
    assert "BD-rate residual vs x265" in capsys.readouterr().out


def test_a_header_claiming_more_residual_levels_than_the_model_has_is_refused(residual):
    from codec.codec import check_model
    from codec.bitstream import unpack
    from tests.test_codec_header import crafted

    codec = load_codec_model(residual)
    data = compress(codec, clip(4, 16, 16), 25.0, rate=2)

    def deeper(header):
        header["levels"][0]["depth"] = 4
        header["levels"][0]["clip_shape"][1] = 4

    header, _ = unpack(crafted(data, deeper))
    with pytest.raises(CodecError, match="depth = 4: expected 1 to the 3 residual levels"):
        check_model(header, codec, "deep.vqv")
