"""The entropy coders: exact under every kind, never above fixed length, temporal context, large alphabets."""
import math

import numpy as np
import pytest

from codec.bitstream import read_header
from codec.codec import compress, decode_indices, decompress, load_codec_model
from codec.context import KINDS, code_group, prior_state
from codec.entropy import Decoding, Encoding, empirical_entropy
from codec.levels import LevelEncoder
from models.code_prior import StreamCounts
from models.code_streams import coding_radices, join_digits, split_digits
from tests.codec_helpers import FakeResidualAdapter, clip, still_clip, tiny_checkpoint


@pytest.fixture(autouse=True)
def fake_residual(monkeypatch):
    from models.builders import _MODEL_REGISTRY

    monkeypatch.setitem(_MODEL_REGISTRY, "FakeResidual", FakeResidualAdapter)


def repeating_frames(frames=12, height=9, width=11, vocab=64, changed=0.2, seed=0) -> np.ndarray:
    """Latent frames that mostly repeat the previous one, as codes of video do."""
    rng = np.random.default_rng(seed)
    out = [rng.integers(0, vocab, size=(height, width))]
    for _ in range(frames - 1):
        frame = out[-1].copy()
        where = rng.random((height, width)) < changed
        frame[where] = rng.integers(0, vocab, size=int(where.sum()))
        out.append(frame)
    return np.stack(out).astype(np.int32)


def coded(kind: str, frames: np.ndarray, radices: list, start=None) -> tuple:
    op = Encoding()
    code_group(op, kind, radices, frames.shape, start, split_digits(frames, radices))
    words = op.words()
    decoded = join_digits(code_group(Decoding(words), kind, radices, frames.shape, start), radices)
    return words, decoded


@pytest.mark.parametrize("radices", [[64], [4, 8, 2], [2] * 6, [16, 16, 16, 16]])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_decodes_exactly(kind, radices):
    vocab = math.prod(radices)
    frames = repeating_frames(vocab=vocab)
    prior = StreamCounts.zeros(radices)
    prior.observe_sequence(repeating_frames(vocab=vocab, seed=1))
    start = {"prior": prior, "context_prior": prior_state(prior)}.get(kind)
    words, decoded = coded(kind, frames, radices, start)
    np.testing.assert_array_equal(decoded, frames)
    if kind == "uniform":
        assert 32 * len(words) == pytest.approx(frames.size * math.log2(vocab), abs=64)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 1), (2, 1, 5), (4, 2, 2)])
def test_tiny_frames_decode_exactly(shape):
    frames = np.random.default_rng(0).integers(0, 8, size=shape).astype(np.int32)
    for kind in ("adaptive", "context"):
        np.testing.assert_array_equal(coded(kind, frames, [8])[1], frames)


def test_temporal_context_codes_repeating_frames_far_below_frequencies():
    frames = repeating_frames(frames=20, height=16, width=16, vocab=256, changed=0.1)
    adaptive = len(coded("adaptive", frames, [256])[0])
    context = len(coded("context", frames, [256])[0])
    assert context < 0.4 * adaptive


def test_large_alphabets_are_coded_digit_by_digit():
    assert coding_radices([512]) == [512] and coding_radices([8, 8, 8]) == [512]  # small: whole
    assert coding_radices([16, 16, 16, 16]) == [16, 16, 16, 16] and coding_radices([2] * 18) == [2] * 18
    assert coding_radices([65536]) == [65536]  # a plain codebook has no digits to split
    frames = repeating_frames(vocab=2 ** 16, changed=0.1)
    words, decoded = coded("context", frames, [16] * 4)
    np.testing.assert_array_equal(decoded, frames)
    assert 32 * len(words) < 0.5 * frames.size * 16


def test_skewed_stream_codes_near_its_entropy():
    rng = np.random.default_rng(1)
    p = 0.8 ** np.arange(64)
    frames = rng.choice(64, size=(10, 40, 50), p=p / p.sum()).astype(np.int32)
    entropy = frames.size * empirical_entropy(np.bincount(frames.reshape(-1), minlength=64))
    prior = StreamCounts.zeros([64])
    prior.observe_sequence(rng.choice(64, size=(10, 40, 50), p=p / p.sum()))
    for kind, start in (("adaptive", None), ("prior", prior)):
        bits = 32 * len(coded(kind, frames, [64], start)[0])
        assert entropy <= bits < 1.03 * entropy


def level_encoder(kinds, depth=0):
    return LevelEncoder(256, [256], depth, kinds, None, 0)


def test_the_cheapest_kind_is_chosen_and_never_above_fixed_length():
    noise = np.random.default_rng(0).integers(0, 256, size=(8, 12, 12))  # incompressible
    encoder = level_encoder(["uniform", "adaptive", "context"])
    encoder.add_group(noise, 8)
    info, words = encoder.finish()
    assert info.coder == "uniform" and info.costs["uniform"] == min(info.costs.values())
    assert 32 * sum(len(w) for w in words) <= noise.size * 8 + 64  # fixed length, plus the final flush

    encoder = level_encoder(["uniform", "adaptive", "context"])
    encoder.add_group(repeating_frames(frames=8, height=12, width=12, vocab=256), 8)
    info, _ = encoder.finish()
    assert info.coder == "context" and info.costs["context"] < info.costs["adaptive"] < info.costs["uniform"]


def test_auto_picks_per_level_and_the_header_and_info_say_so(tmp_path):
    codec = load_codec_model(tiny_checkpoint(tmp_path, "TamingVQGAN"))
    data = compress(codec, still_clip(16, 32, 32), 25.0)
    header = read_header(data)[0]
    for level in header.levels:
        assert set(level.costs) == {"uniform", "adaptive", "context"}  # no prior fitted
        assert level.coder == min(level.costs, key=lambda k: (level.costs[k], KINDS.index(k)))
        assert 32 * level.words <= header.clips * level.indices_per_clip * math.log2(level.vocab_size) + 32
    assert header.levels[0].coder == "context"
    forced = compress(codec, still_clip(16, 32, 32), 25.0, coder="uniform")
    assert len(forced) > len(data)
    np.testing.assert_array_equal(decompress(codec, forced)[0], decompress(codec, data)[0])


def test_groups_restart_their_models_so_each_decodes_alone(tmp_path):
    codec = load_codec_model(tiny_checkpoint(tmp_path, "TamingVQGAN"))
    frames = still_clip(12, 16, 16)
    one = read_header(compress(codec, frames, 25.0, key_interval=12))[0]
    three = read_header(compress(codec, frames, 25.0, key_interval=4))[0]
    assert one.groups == 1 and three.groups == 3 and three.key_interval == 4
    assert three.levels[0].words > one.levels[0].words  # each key frame costs what random access costs


def test_key_interval_covers_whole_model_calls(tmp_path):
    codec = load_codec_model(tiny_checkpoint(tmp_path, "TamingVQGAN"))  # 4 frames per model call
    header = read_header(compress(codec, clip(9, 16, 16), 25.0, key_interval=3))[0]
    assert header.key_interval == 4 and header.groups == 3
    header, indices = decode_indices(codec, compress(codec, clip(9, 16, 16), 25.0, key_interval=3))
    assert indices[0].shape[0] == 9


def test_large_alphabet_model_round_trips_digit_by_digit(tmp_path):
    from tests.codec_helpers import TINY

    TINY["FakeResidual"]["model_args"] = {"factors": [16, 16, 16, 16], "num_quantizers": 1}
    try:
        codec = load_codec_model(tiny_checkpoint(tmp_path, "FakeResidual"))
    finally:
        TINY["FakeResidual"]["model_args"] = {"factors": [4, 4], "num_quantizers": 3}
    assert codec.model.vocab_sizes == [2 ** 16]
    frames = still_clip(8, 32, 32)
    data = compress(codec, frames, 25.0)
    header, indices = decode_indices(codec, data)
    assert header.levels[0].factors == (16, 16, 16, 16) and header.levels[0].vocab_size == 2 ** 16
    assert header.levels[0].costs["context"] < 16 and header.levels[0].coder != "uniform"
    assert indices[0].max() > 4096  # values beyond any one digit's alphabet came back
    np.testing.assert_array_equal(decompress(codec, data)[0], decompress(codec, compress(codec, frames, 25.0,
                                                                                          coder="uniform"))[0])
