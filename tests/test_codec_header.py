"""Crafted headers with valid CRCs: every one refused in one line, before any frame is decoded from them.

Each case names the stage that must refuse it: ``header`` (the file alone, no model),
``model`` (the header against the checkpoint, before entropy decoding) or ``indices`` (the
CRC32 of a group's decoded indices, before the model decodes a frame).
"""
import copy
import json
import struct
import zlib

import numpy as np
import pytest

from codec.bitstream import CodecError, unpack
from codec.codec import check_model, compress, iter_decoded, load_codec_model
from models.adapter_base import BaseVqVaeAdapter
from tests.codec_helpers import still_clip, tiny_checkpoint

HASH = "ab" * 32


def level(h, key, value, number=0):
    h["levels"][number][key] = value


CASES = {
    # the file alone
    "zero frames": ("header", lambda h: h.update(frames=0)),
    "negative frames": ("header", lambda h: h.update(frames=-5)),
    "a billion frames": ("header", lambda h: h.update(frames=10 ** 9)),
    "frames beyond the clips": ("header", lambda h: h.update(frames=h["clips"] + 1)),
    "ten million clips": ("header", lambda h: h.update(clips=10 ** 7)),
    "zero clips": ("header", lambda h: h.update(clips=0)),
    "clips as text": ("header", lambda h: h.update(clips=str(h["clips"]))),
    "negative size": ("header", lambda h: h.update(size=[-h["size"][0], h["size"][1]])),
    "zero size": ("header", lambda h: h.update(size=[0, h["size"][1]])),
    "one-sided size": ("header", lambda h: h.update(size=h["size"][:1])),
    "fractional size": ("header", lambda h: h.update(size=[h["size"][0] + 0.5, h["size"][1]])),
    "padded smaller than size": ("header", lambda h: h.update(padded_size=[h["size"][0] - 1, h["size"][1]])),
    "zero fps": ("header", lambda h: h.update(fps=0)),
    "NaN fps": ("header", lambda h: h.update(fps=float("nan"))),
    "zero frames per clip": ("header", lambda h: h.update(frames_per_clip=0)),
    "zero chunk": ("header", lambda h: h.update(chunk_frames=0)),
    "zero key interval": ("header", lambda h: h.update(key_interval=0)),
    "huge key interval": ("header", lambda h: h.update(key_interval=10 ** 6)),
    "no levels": ("header", lambda h: h.update(levels=[])),
    "empty clip shape": ("header", lambda h: level(h, "clip_shape", [])),
    "zero in the clip shape": ("header", lambda h: level(h, "clip_shape", [1, 0, 8])),
    "factors off the alphabet": ("header", lambda h: level(h, "factors", [3, 5])),
    "alphabet as a boolean": ("header", lambda h: level(h, "vocab_size", True)),
    "unknown coder": ("header", lambda h: level(h, "coder", "magic")),
    "unknown coder cost": ("header", lambda h: level(h, "costs", {"magic": 1.0})),
    "no groups": ("header", lambda h: level(h, "groups", [])),
    "negative words": ("header", lambda h: h["levels"][0]["groups"][0].__setitem__(0, -1)),
    "words beyond the payload": ("header", lambda h: h["levels"][0]["groups"][0].__setitem__(0, 10 ** 6)),
    "depth without its axis": ("header", lambda h: level(h, "depth", 2)),
    "entropy above the alphabet": ("header", lambda h: level(h, "entropy_bits", 100.0)),
    "unknown field": ("header", lambda h: h.update(extra=1)),
    "missing field": ("header", lambda h: h.pop("fps")),
    "short model hash": ("header", lambda h: h.update(model_hash="abc")),
    "prior coder without its hash": ("header", lambda h: (level(h, "coder", "prior"),
                                                          level(h, "costs", {"prior": 1.0}))),
    # the header against the checkpoint
    "halved clip shape": ("model", lambda h: level(h, "clip_shape", [1, 4, 4])),
    "padded beyond the model's rounding": ("model", lambda h: h.update(padded_size=[h["size"][0] + 8, h["size"][1]])),
    "another model type": ("model", lambda h: h.update(model_type="TamingVQGAN")),
    "another alphabet": ("model", lambda h: (level(h, "vocab_size", 32), level(h, "factors", [32]))),
    "another chunk": ("model", lambda h: h.update(chunk_frames=2)),
    "prior coder, model has none": ("model", lambda h: (h.update(prior_hash=HASH), level(h, "coder", "prior"),
                                                        level(h, "costs", {"prior": 1.0}))),
    # what only the decoded indices can tell
    "changed coder kind": ("indices", lambda h: (level(h, "coder", "uniform"),
                                                 level(h, "costs", {"uniform": 4.0, "adaptive": 1.0}))),
    "changed group CRC": ("indices", lambda h: h["levels"][1]["groups"][0].__setitem__(1, 12345)),
    "fewer frames in the last group": ("indices", lambda h: h.update(frames=h["frames"] - 2,
                                                                     clips=h["clips"] - 2)),
}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    checkpoint = tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "VQVAE2")
    codec = load_codec_model(checkpoint)
    data = compress(codec, still_clip(11, 16, 16), 25.0, coder="adaptive", key_interval=4)
    return checkpoint, data


def crafted(data: bytes, mutate) -> bytes:
    """``data`` with its header JSON changed by ``mutate`` and both CRCs valid."""
    length = struct.unpack_from("<I", data, 5)[0]
    header = json.loads(data[9:9 + length])
    changed = copy.deepcopy(header)
    mutate(changed)
    assert changed != header
    text = json.dumps(changed).encode()
    return data[:5] + struct.pack("<I", len(text)) + text + struct.pack("<I", zlib.crc32(text)) + data[13 + length:]


def test_the_case_list_is_long_enough():
    assert len(CASES) >= 26


@pytest.mark.parametrize("name", list(CASES))
def test_crafted_header_is_refused_at_its_stage(original, name, monkeypatch):
    checkpoint, data = original
    stage, mutate = CASES[name]
    bad = crafted(data, mutate)
    if stage == "header":
        with pytest.raises(CodecError):
            unpack(bad)
        return
    header, _ = unpack(bad)
    codec = load_codec_model(checkpoint)
    if stage == "model":
        with pytest.raises(CodecError, match="checkpoint|code prior"):
            check_model(header, codec, "bad.vqv")
        return
    check_model(header, codec, "bad.vqv")
    decoded_groups = []
    real_decode = BaseVqVaeAdapter.decode_clips
    monkeypatch.setattr(BaseVqVaeAdapter, "decode_clips",
                        lambda self, *a: decoded_groups.append(a) or real_decode(self, *a))
    with pytest.raises(CodecError, match="CRC32"):
        list(iter_decoded(codec, bad, "bad.vqv")[1])
    assert len(decoded_groups) < header.groups  # frames only from the groups before the bad one


def test_every_crafted_header_is_one_error_line_and_no_output(original, tmp_path, capsys):
    from codec.cli import main

    checkpoint, data = original
    for number, (name, (_, mutate)) in enumerate(CASES.items()):
        path, out = tmp_path / f"case{number}.vqv", tmp_path / f"case{number}.mp4"
        path.write_bytes(crafted(data, mutate))
        assert main(["decompress", str(path), str(out), "--checkpoint", checkpoint, "--quiet"]) == 1, name
        assert main(["info", str(path)]) in (0, 1)
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert 1 <= len(err) <= 2 and "Traceback" not in "".join(err), name
        assert not out.exists()


def test_a_crafted_payload_with_valid_crcs_is_refused_in_one_line(original):
    checkpoint, data = original
    codec = load_codec_model(checkpoint)
    length = struct.unpack_from("<I", data, 5)[0]
    start = 13 + length
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(20):
        payload = rng.integers(0, 256, size=len(data) - start - 4, dtype=np.uint8).tobytes()
        bad = data[:start] + payload + struct.pack("<I", zlib.crc32(payload))
        with pytest.raises(CodecError) as err:
            list(iter_decoded(codec, bad, "bad.vqv")[1])
        assert len(str(err.value).splitlines()) == 1
        refused += 1
    assert refused == 20
