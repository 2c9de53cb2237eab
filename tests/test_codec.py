"""The codec: exact round trips for every model family, the model as the codec's face, refusals, the CLI."""
import os

import numpy as np
import pytest
import torch

from codec.bitstream import CodecError, read_header, unpack
from codec.codec import compress, decode_indices, decompress, load_codec_model, pad_chunk, to_clips, to_frames
from codec.video_io import read_frames, write_video
from core.indices import as_level_list
from tests.codec_helpers import TINY, FakeResidualAdapter, clip, still_clip, tiny_checkpoint

FAMILIES = [name for name in TINY if name != "FakeResidual"]


@pytest.fixture(autouse=True)
def fake_residual(monkeypatch):
    from models.builders import _MODEL_REGISTRY

    monkeypatch.setitem(_MODEL_REGISTRY, "FakeResidual", FakeResidualAdapter)


@pytest.fixture(scope="module")
def vqvae2_ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "VQVAE2")


def expected_output(codec, frames: np.ndarray) -> tuple:
    """What the model itself gives, chunk by chunk, on the padded frames: (indices per level, frames)."""
    model, chunk = codec.model, codec.chunk_frames
    padded_size = tuple(-(-s // model.spatial_factor) * model.spatial_factor for s in frames.shape[1:3])
    indices, decoded = None, []
    with torch.no_grad():
        for start in range(0, len(frames), chunk):
            padded = pad_chunk(frames[start:start + chunk], padded_size, model.frames_per_clip)
            clips = to_clips(padded, model.frames_per_clip, "cpu")
            levels = model.encode_clips(clips)
            decoded.append(to_frames(model.decode_clips(levels, len(clips)))[: len(frames) - start])
            levels = [t.numpy() for t in as_level_list(levels)]
            indices = levels if indices is None else [np.concatenate(pair) for pair in zip(indices, levels)]
    return indices, np.concatenate(decoded)[:, : frames.shape[1], : frames.shape[2]]


@pytest.mark.parametrize("coder", ["auto", "context", "adaptive", "uniform"])
@pytest.mark.parametrize("model_type", FAMILIES + ["FakeResidual"])
def test_round_trip_gives_the_models_indices_and_frames_exactly(tmp_path, model_type, coder):
    codec = load_codec_model(tiny_checkpoint(tmp_path, model_type))
    frames = np.concatenate([still_clip(6, 13, 19), clip(5, 13, 19)])  # repeats, then motion
    data = compress(codec, frames, fps=25.0, coder=coder, key_interval=2)
    header, indices = decode_indices(codec, data)
    decoded, _ = decompress(codec, data)

    want_indices, want_frames = expected_output(codec, frames)
    assert len(indices) == len(codec.model.vocab_sizes) == len(header.levels)
    for got, want in zip(indices, want_indices):
        np.testing.assert_array_equal(got, want.reshape(got.shape))
    np.testing.assert_array_equal(decoded, want_frames)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert header.model_type == model_type and header.frames == 11 and header.size == (13, 19)
    assert header.groups > 1  # several groups, each decoded on its own
    if coder != "auto":
        assert {level.coder for level in header.levels} == {coder}


def test_multi_level_model_takes_and_gives_a_list(tmp_path):
    codec = load_codec_model(tiny_checkpoint(tmp_path, "VQVAE2"))
    assert codec.latent((16, 16))[0] is True and len(codec.latent((16, 16))[1]) == 2
    header, indices = decode_indices(codec, compress(codec, clip(2, 16, 16), 25.0))
    assert [i.shape for i in indices] == [(2, 8, 8), (2, 4, 4)]
    assert [level.clip_shape for level in header.levels] == [(1, 8, 8), (1, 4, 4)]


@pytest.mark.parametrize("shape", [(1, 5, 3), (9, 16, 17), (4, 8, 8)])
def test_any_frame_count_and_size_round_trips_to_its_own_shape(vqvae2_ckpt, shape):
    codec = load_codec_model(vqvae2_ckpt)
    decoded, header = decompress(codec, compress(codec, clip(*shape), fps=30.0))
    assert decoded.shape == shape + (3,)
    assert header.padded_size[0] % 4 == 0 and header.padded_size[1] % 4 == 0 and header.fps == 30.0


def test_vqvae2_sequence_clips_padded_in_time(tmp_path):
    codec = load_codec_model(tiny_checkpoint(tmp_path, "VqVae2"))
    assert codec.model.frames_per_clip == 4
    decoded, header = decompress(codec, compress(codec, clip(frames=6), fps=25.0))
    assert decoded.shape == (6, 13, 19, 3)
    assert header.clips == 2


def test_frames_of_another_size_or_type_are_refused(vqvae2_ckpt):
    codec = load_codec_model(vqvae2_ckpt)
    frames = list(clip(frames=3))
    with pytest.raises(CodecError, match="frame 3 .* shaped like the first"):
        compress(codec, frames[:2] + [frames[2][:, :-1]], 25.0)
    with pytest.raises(CodecError, match="frame 1 is float32"):
        compress(codec, clip(frames=2).astype(np.float32), 25.0)


# -- the model is the codec's face ------------------------------------------------

@pytest.mark.parametrize("model_type", FAMILIES)
def test_adapter_takes_clips_in_unit_range_and_folds_them(tmp_path, model_type):
    codec = load_codec_model(tiny_checkpoint(tmp_path, model_type))
    model = codec.model
    clips = torch.rand(2, model.frames_per_clip, 3, 16, 16)
    with torch.no_grad():
        direct = model.encode(clips.reshape(-1, 3, 16, 16) * 2 - 1)
        via_face = model.encode_clips(clips)
        for a, b in zip(as_level_list(direct), as_level_list(via_face)):
            torch.testing.assert_close(a, b)
        decoded = model.decode_clips(via_face, 2)
    assert decoded.shape == clips.shape and 0.0 <= decoded.min() and decoded.max() <= 1.0
    torch.testing.assert_close(decoded, ((model.decode(direct) + 1) / 2).clamp(0, 1).reshape(decoded.shape))


def test_codec_does_no_conversion_of_its_own():
    import inspect

    import codec.codec as codec_module

    source = inspect.getsource(codec_module)
    assert "- 0.5) / 0.5" not in source and "* 0.5 + 0.5" not in source and "encode_clips" in source


def test_wrong_checkpoint_is_refused_naming_both_hashes(tmp_path, vqvae2_ckpt):
    codec = load_codec_model(vqvae2_ckpt)
    other = load_codec_model(tiny_checkpoint(tmp_path, "VQVAE2", seed=1))
    assert other.identity != codec.identity
    with pytest.raises(CodecError) as err:
        decompress(other, compress(codec, clip(), 25.0))
    assert codec.identity[:16] in str(err.value) and other.identity[:16] in str(err.value)


def test_damaged_files_are_refused(vqvae2_ckpt):
    codec = load_codec_model(vqvae2_ckpt)
    data = compress(codec, clip(), 25.0)
    header, streams = unpack(data)
    assert [[len(s) for s in group] for group in streams] == [[lv.groups[g][0] for lv in header.levels]
                                                              for g in range(header.groups)]
    with pytest.raises(CodecError, match="truncated"):
        decompress(codec, data[:-9])
    with pytest.raises(CodecError, match="truncated"):
        decompress(codec, data[:20])
    with pytest.raises(CodecError, match="not a vqvc bitstream"):
        decompress(codec, b"RIFF" + data[4:])
    with pytest.raises(CodecError, match="version 9"):
        decompress(codec, data[:4] + bytes([9]) + data[5:])
    flipped = bytearray(data)
    flipped[-10] ^= 0x40
    with pytest.raises(CodecError, match="payload is corrupted"):
        decompress(codec, bytes(flipped))
    flipped = bytearray(data)
    flipped[12] ^= 0x01
    with pytest.raises(CodecError, match="header is corrupted"):
        decompress(codec, bytes(flipped))


# -- the command line ------------------------------------------------------------

def run_cli(*argv) -> int:
    from codec.cli import main

    return main([str(a) for a in argv] + ["--quiet"])


def test_cli_compress_info_decompress(tmp_path, vqvae2_ckpt, capsys):
    source = tmp_path / "in.mp4"
    write_video(str(source), clip(frames=5), fps=12.0)
    vqv, mp4, pngs = tmp_path / "out.vqv", tmp_path / "recon.mp4", tmp_path / "frames"
    assert run_cli("compress", source, vqv, "--checkpoint", vqvae2_ckpt, "--device", "cpu") == 0
    summary = capsys.readouterr().out
    assert "5 frames 19x13" in summary and f"{os.path.getsize(vqv)} bytes" in summary and "bpp" in summary
    assert "encode" in summary and "frames/s" in summary and "entropy coding" in summary

    assert run_cli("info", vqv) == 0
    info = capsys.readouterr().out
    header = read_header(vqv.read_bytes())[0]
    for kind in ("uniform", "adaptive", "context"):
        assert f"{kind} {header.levels[0].costs[kind]:.3f}" in info
    assert "fixed length 4.000" in info and "empirical entropy" in info and f"with {header.levels[0].coder}" in info

    assert run_cli("decompress", vqv, mp4, "--frames", pngs, "--checkpoint", vqvae2_ckpt) == 0
    out = capsys.readouterr().out
    assert "decode" in out and "frames/s" in out
    expected, _ = decompress(load_codec_model(vqvae2_ckpt), vqv.read_bytes())
    video, fps = read_frames(str(mp4))
    np.testing.assert_array_equal(video, expected)  # lossless mp4
    assert fps == pytest.approx(12.0)
    np.testing.assert_array_equal(read_frames(str(pngs))[0], expected)


def test_cli_refusals_are_one_line_and_leave_no_output(tmp_path, vqvae2_ckpt, capsys):
    write_video(str(tmp_path / "in.mp4"), clip(frames=3), fps=25.0)
    vqv = tmp_path / "a.vqv"
    assert run_cli("compress", tmp_path / "in.mp4", vqv, "--checkpoint", vqvae2_ckpt, "--device", "cpu") == 0
    data = vqv.read_bytes()
    (tmp_path / "short.vqv").write_bytes(data[: len(data) // 2])
    (tmp_path / "foreign.vqv").write_bytes(b"\x00\x00\x00\x18ftypmp42" + data[12:])
    other = tiny_checkpoint(tmp_path, "VQVAE2", seed=3)
    capsys.readouterr()
    cases = [("short.vqv", vqvae2_ckpt, "truncated"), ("foreign.vqv", vqvae2_ckpt, "not a vqvc bitstream"),
             ("a.vqv", other, "coded with model weights")]
    for name, checkpoint, message in cases:
        out = tmp_path / f"{name}.mp4"
        assert run_cli("decompress", tmp_path / name, out, "--frames", tmp_path / "png", "--checkpoint",
                       checkpoint) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "Traceback" not in err
        assert len(err.splitlines()) == 1
        assert not out.exists() and not (tmp_path / "png").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp_")]


def test_cli_cut_keeps_whole_groups_that_decode_alone(tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path, "VQVAE2")
    codec = load_codec_model(checkpoint)
    frames = np.concatenate([still_clip(10, 16, 16), clip(10, 16, 16)])
    vqv, part = tmp_path / "all.vqv", tmp_path / "part.vqv"
    vqv.write_bytes(compress(codec, frames, 25.0, key_interval=4))
    full, _ = decompress(codec, vqv.read_bytes())
    assert run_cli("cut", vqv, part, "--from", 5, "--to", 9) == 0
    assert "frames 4 to 12" in capsys.readouterr().out  # groups of 4 frames: [4, 8) and [8, 12)
    decoded, header = decompress(codec, part.read_bytes())
    np.testing.assert_array_equal(decoded, full[4:12])
    assert header.frames == 8 and header.groups == 2
    assert run_cli("cut", vqv, part, "--from", 18, "--to", 99) == 0  # the last, short group
    np.testing.assert_array_equal(decompress(codec, part.read_bytes())[0], full[16:])
    assert run_cli("cut", vqv, part, "--from", 20, "--to", 30) == 1
    assert "the video has 20 frames" in capsys.readouterr().err
