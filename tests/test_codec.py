"""The codec: bitstream round trips for every model family, entropy coding, refusals, the CLI."""
import os

import numpy as np
import pytest
import torch

from codec.bitstream import CodecError, read_header, unpack
from codec.codec import _pad_chunk, _to_frames, _to_model, compress, decode_indices, decompress, load_codec_model
from codec.entropy import AdaptiveCoder, StaticCoder, empirical_entropy
from codec.prior import CODE_PRIOR_KEY, fit_code_prior
from codec.video_io import read_frames, write_video
from models.adapter_base import as_level_list

model_adapter = pytest.importorskip("models.builders", reason="a model family's adapter is missing")

DATA_ARGS = {"sequence_length": 4, "resolution": 16, "batch_size": 2}
TINY = {
    "VqVae2": {"model_args": {"group_count": 2, "n_hid": 4, "n_blk_per_group": 1, "vocab_size": 16, "n_init": 8}},
    "VQVAE2": {"scaling_rates": [2, 2], "model_args": {"n_hid": 8, "res_channels": 4, "nb_res_layers": 1,
                                                        "nb_levels": 2, "n_init": 4, "vocab_size": 16}},
    "VQVAE2_OptVQ": {"scaling_rates": [2], "model_args": {"n_hid": 8, "res_channels": 4, "nb_res_layers": 1,
                                                           "nb_levels": 1, "n_init": 4, "vocab_size": 16}},
    "TamingVQGAN": {"model_args": {"vocab_size": 16, "n_init": 4, "ddconfig": {
        "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "z_channels": 4, "resolution": 16}}},
}


def tiny_checkpoint(directory, model_type: str, seed: int = 0, code_prior=None) -> str:
    """A checkpoint of an untrained tiny model, as the training loop writes it."""
    from core.checkpoint import save_checkpoint
    from models.builders import config_from_dict

    raw = {"model_type": model_type, "data_args": DATA_ARGS, **TINY[model_type]}
    torch.manual_seed(seed)
    model = model_adapter.create_model(config=config_from_dict(raw))
    payload = {"steps": 0, "state_dict": model.state_dict(), "config": raw, "model_type": model_type}
    if code_prior is not None:
        payload[CODE_PRIOR_KEY] = code_prior
    path = os.path.join(str(directory), f"{model_type}_{seed}.pth.tar")
    return save_checkpoint(payload, path)


def clip(frames=7, height=13, width=19, seed=0) -> np.ndarray:
    """A smooth moving gradient with noise: real-ish content, odd sizes by default."""
    rng = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    base = np.stack([(x * 9 + t * 5) % 256, (y * 11 + t * 3) % 256, (x + y) * 6 % 256], axis=-1)
    return np.clip(base + rng.integers(-20, 21, size=base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def vqvae2_ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "VQVAE2")


@pytest.mark.parametrize("model_type", list(TINY))
def test_roundtrip_gives_model_indices_and_decoded_frames(tmp_path, model_type):
    codec = load_codec_model(tiny_checkpoint(tmp_path, model_type))
    model, frames = codec.model, clip()
    data = compress(codec, frames, fps=25.0)
    header, indices = decode_indices(codec, data)
    decoded, _ = decompress(codec, data)

    # What the model itself gives, chunk by chunk, on the padded frames.
    factor, chunk = model.spatial_factor, codec.chunk_frames
    padded_size = tuple(-(-s // factor) * factor for s in frames.shape[1:3])
    expected_indices, expected_frames = None, []
    with torch.no_grad():
        for start in range(0, len(frames), chunk):
            padded = _pad_chunk(frames[start:start + chunk], padded_size, model.frames_per_clip)
            levels = model.encode(_to_model(padded, "cpu"))
            expected_frames.append(_to_frames(model.decode(levels))[: len(frames) - start])
            levels = [t.numpy() for t in as_level_list(levels)]
            expected_indices = levels if expected_indices is None else [
                np.concatenate(pair) for pair in zip(expected_indices, levels)]
    assert len(indices) == len(model.vocab_sizes)
    for got, want in zip(indices, expected_indices):
        np.testing.assert_array_equal(got, want.reshape(got.shape))
    np.testing.assert_array_equal(decoded, np.concatenate(expected_frames)[:, :13, :19])
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert header.model_type == model_type and header.frames == 7 and header.size == (13, 19)


@pytest.mark.parametrize("shape", [(1, 5, 3), (9, 16, 17), (4, 8, 8)])
def test_any_frame_count_and_size_round_trips_to_its_own_shape(vqvae2_ckpt, shape):
    codec = load_codec_model(vqvae2_ckpt)
    decoded, header = decompress(codec, compress(codec, clip(*shape), fps=30.0, adaptive=True))
    assert decoded.shape == shape + (3,)
    assert header.padded_size[0] % 4 == 0 and header.padded_size[1] % 4 == 0 and header.fps == 30.0


def test_vqvae2_sequence_clips_padded_in_time(tmp_path):
    codec = load_codec_model(tiny_checkpoint(tmp_path, "VqVae2"))
    assert codec.model.frames_per_clip == 4
    decoded, header = decompress(codec, compress(codec, clip(frames=6), fps=25.0))
    assert decoded.shape == (6, 13, 19, 3)
    assert header.clips == 2 and header.padded_frames == 8


def test_frames_of_another_size_or_type_are_refused(vqvae2_ckpt):
    codec = load_codec_model(vqvae2_ckpt)
    frames = list(clip(frames=3))
    with pytest.raises(CodecError, match="frame 3 .* shaped like the first"):
        compress(codec, frames[:2] + [frames[2][:, :-1]], 25.0)
    with pytest.raises(CodecError, match="frame 1 is float32"):
        compress(codec, clip(frames=2).astype(np.float32), 25.0)


def skewed_stream(vocab_size=64, count=20000, seed=1):
    rng = np.random.default_rng(seed)
    p = 0.8 ** np.arange(vocab_size)
    return rng.choice(vocab_size, size=count, p=p / p.sum())


@pytest.mark.parametrize("coder", ["prior", "adaptive"])
def test_skewed_stream_codes_near_its_entropy(coder):
    symbols = skewed_stream()
    vocab_size, count = 64, len(symbols)
    entropy_coder = (StaticCoder(np.bincount(symbols, minlength=vocab_size) + 0.5) if coder == "prior"
                     else AdaptiveCoder(vocab_size))
    words = entropy_coder.encode(symbols)
    np.testing.assert_array_equal(entropy_coder.decode(words, count), symbols)
    coded_bits = 32 * len(words)
    entropy_bits = count * empirical_entropy(symbols, vocab_size)
    assert coded_bits < count * np.log2(vocab_size)
    assert entropy_bits <= coded_bits < 1.03 * entropy_bits


def test_uniform_coder_costs_log2_vocab():
    symbols = skewed_stream()
    bits = 32 * len(StaticCoder(np.ones(64)).encode(symbols))
    assert bits == pytest.approx(len(symbols) * 6, rel=0.01)


def loader_of(frames: np.ndarray, sequence_length: int = 4):
    """What ``video_pipe`` yields: ``(uint8 (b, d, h, w, c), paths)`` batches."""
    clips = torch.from_numpy(frames[: len(frames) // sequence_length * sequence_length])
    return [(clips.reshape(-1, sequence_length, *frames.shape[1:]), ["clip.mp4"])]


def test_prior_from_training_codes_beats_uniform_and_round_trips(tmp_path):
    plain = load_codec_model(tiny_checkpoint(tmp_path, "VQVAE2"))
    frames = clip(frames=8, height=16, width=16)
    entry = fit_code_prior(plain.model, loader_of(frames), "cpu", lambda x: (x - 0.5) / 0.5)
    assert [len(c) for c in entry["counts"]] == [16, 16]
    assert entry["num_indices"] == sum(int(c.sum()) for c in entry["counts"]) == 8 * (8 * 8 + 4 * 4)

    with_prior = load_codec_model(tiny_checkpoint(tmp_path / "p", "VQVAE2", code_prior=entry))
    uniform_bytes = compress(plain, frames, 25.0)
    prior_bytes = compress(with_prior, frames, 25.0)
    header, _ = read_header(prior_bytes)
    assert header.coder["kind"] == "prior"
    assert header.payload_bytes < read_header(uniform_bytes)[0].payload_bytes
    np.testing.assert_array_equal(decompress(with_prior, prior_bytes)[0], decompress(plain, uniform_bytes)[0])


def test_refitted_prior_is_refused(tmp_path):
    frames = clip(frames=4, height=16, width=16)
    model = load_codec_model(tiny_checkpoint(tmp_path, "VQVAE2")).model
    entry = fit_code_prior(model, loader_of(frames), "cpu", lambda x: (x - 0.5) / 0.5)
    coder = load_codec_model(tiny_checkpoint(tmp_path / "a", "VQVAE2", code_prior=entry))
    entry["counts"][0][3] += 5
    other = load_codec_model(tiny_checkpoint(tmp_path / "b", "VQVAE2", code_prior=entry))
    with pytest.raises(CodecError, match="code prior .* holds code prior"):
        decompress(other, compress(coder, frames, 25.0))


def test_damaged_files_are_refused(vqvae2_ckpt):
    codec = load_codec_model(vqvae2_ckpt)
    data = compress(codec, clip(), 25.0, adaptive=True)
    header, streams = unpack(data)
    assert [len(s) for s in streams] == [level.words for level in header.levels]
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


def test_wrong_checkpoint_is_refused_naming_both_hashes(tmp_path, vqvae2_ckpt):
    codec = load_codec_model(vqvae2_ckpt)
    other = load_codec_model(tiny_checkpoint(tmp_path, "VQVAE2", seed=1))
    assert other.identity != codec.identity
    with pytest.raises(CodecError) as err:
        decompress(other, compress(codec, clip(), 25.0))
    assert codec.identity[:16] in str(err.value) and other.identity[:16] in str(err.value)


# -- the command line ------------------------------------------------------------

def run_cli(*argv) -> int:
    from codec.cli import main

    return main([str(a) for a in argv] + ["--quiet"])


def test_cli_compress_info_decompress(tmp_path, vqvae2_ckpt, capsys):
    source = tmp_path / "in.mp4"
    write_video(str(source), clip(frames=5), fps=12.0)
    vqv, mp4, pngs = tmp_path / "out.vqv", tmp_path / "recon.mp4", tmp_path / "frames"
    assert run_cli("compress", source, vqv, "--checkpoint", vqvae2_ckpt, "--adaptive", "--device", "cpu") == 0
    summary = capsys.readouterr().out
    assert "5 frames 19x13" in summary and f"{os.path.getsize(vqv)} bytes" in summary and "bpp" in summary

    assert run_cli("info", vqv) == 0
    info = capsys.readouterr().out
    assert "bits/index" in info and "log2 codebook 4.000" in info and "empirical entropy" in info

    assert run_cli("decompress", vqv, mp4, "--frames", pngs, "--checkpoint", vqvae2_ckpt) == 0
    assert "decode" in capsys.readouterr().out
    expected, _ = decompress(load_codec_model(vqvae2_ckpt), vqv.read_bytes())
    video, fps = read_frames(str(mp4))
    np.testing.assert_array_equal(video, expected)  # lossless mp4
    assert fps == pytest.approx(12.0)
    np.testing.assert_array_equal(read_frames(str(pngs))[0], expected)


def test_cli_refusals_are_one_line_and_leave_no_output(tmp_path, vqvae2_ckpt, capsys):
    frames_dir = tmp_path / "src"
    frames_dir.mkdir()
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


def test_cli_fit_prior_rewrites_checkpoint(tmp_path, capsys):
    from core.checkpoint import load_checkpoint

    data_dir = tmp_path / "videos"
    write_video(str(data_dir / "a.mp4"), clip(frames=8, height=24, width=20), fps=25.0)
    checkpoint = tiny_checkpoint(tmp_path, "VqVae2")
    assert run_cli("fit-prior", "--checkpoint", checkpoint, "--data", data_dir, "--clips-per-file", 2,
                   "--device", "cpu") == 0
    entry = load_checkpoint(checkpoint)[CODE_PRIOR_KEY]
    assert entry["num_indices"] == 2 * 8 * 8  # two clips of 16x16 frames -> 8x8 codes each
    assert int(entry["counts"][0].sum()) == entry["num_indices"]
    assert str(data_dir) in entry["source"]
    codec = load_codec_model(checkpoint)
    assert read_header(compress(codec, clip(frames=4), 25.0))[0].coder["kind"] == "prior"
