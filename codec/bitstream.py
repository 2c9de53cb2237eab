"""The ``.vqv`` file format: what a compressed video looks like on disk.

Layout (integers little-endian)::

    b"VQVC"  version:u8  header_len:u32  header (UTF-8 JSON)  header_crc32:u32
    payload (one range-coded uint32 word stream per level, back to back)  payload_crc32:u32

The header is JSON so ``info`` can show it with no model at hand; it says how many
words each level's stream has, so the payload needs no framing of its own. Both CRCs
are checked before anything is decoded: a damaged file is refused, never half-decoded.
"""
import json
import struct
import zlib
from typing import Optional

import attrs
import numpy as np

MAGIC = b"VQVC"
VERSION = 1
_PREFIX = struct.Struct("<4sBI")  # magic, version, header length
_CRC = struct.Struct("<I")


class CodecError(ValueError):
    """What the codec refuses, in one line: an unreadable input, a foreign, truncated or
    corrupted bitstream, or a checkpoint that is not the one the bitstream was coded with."""


@attrs.frozen
class LevelInfo:
    """One level of code indices: its codebook, its index shape per clip, its coded stream."""

    vocab_size: int
    clip_shape: tuple  # index-tensor shape for one clip of ``frames_per_clip`` frames
    words: int  # length of the coded stream in uint32 words
    entropy_bits: float  # empirical entropy of the indices, bits per index (for ``info``)

    @property
    def indices_per_clip(self) -> int:
        return int(np.prod(self.clip_shape))


@attrs.frozen
class Header:
    model_type: str
    model_hash: str  # sha256 of the model weights (see ``codec.codec.model_identity``)
    frames: int  # frames of the original clip
    fps: float
    size: tuple  # (height, width) of the original frames
    padded_size: tuple  # (height, width) the model saw: multiples of its spatial factor
    frames_per_clip: int  # frames the model codes together
    chunk_frames: int  # frames per model call (the config's sequence_length, in whole clips)
    clips: int  # clips coded, the last one padded by repeating the final frame
    levels: tuple  # LevelInfo per level, bottom level first
    coder: dict  # entropy coder and its parameters: {"kind": "prior" | "adaptive" | "uniform", ...}
    indices_as_list: bool  # the model's encode returns a list per level (its decode wants one)
    checkpoint_hint: Optional[str] = None  # the checkpoint path given at compression time

    @property
    def padded_frames(self) -> int:
        return self.clips * self.frames_per_clip

    @property
    def payload_bytes(self) -> int:
        return 4 * sum(level.words for level in self.levels)

    def to_json(self) -> dict:
        return attrs.asdict(self, recurse=True)

    @classmethod
    def from_json(cls, data: dict) -> "Header":
        fields = dict(data)
        fields["levels"] = tuple(
            LevelInfo(int(lv["vocab_size"]), tuple(lv["clip_shape"]), int(lv["words"]), float(lv["entropy_bits"]))
            for lv in data["levels"]
        )
        fields["size"] = tuple(data["size"])
        fields["padded_size"] = tuple(data["padded_size"])
        return cls(**fields)


def pack(header: Header, streams: list) -> bytes:
    """The file bytes for ``header`` and one uint32 word array per level."""
    if [len(s) for s in streams] != [level.words for level in header.levels]:
        raise ValueError("stream lengths disagree with the header's word counts")
    header_bytes = json.dumps(header.to_json(), separators=(",", ":"), sort_keys=True).encode("utf-8")
    payload = b"".join(np.asarray(s, dtype="<u4").tobytes() for s in streams)
    return b"".join([
        _PREFIX.pack(MAGIC, VERSION, len(header_bytes)), header_bytes, _CRC.pack(zlib.crc32(header_bytes)),
        payload, _CRC.pack(zlib.crc32(payload)),
    ])


def read_header(data: bytes, name: str = "input") -> tuple:
    """``(header, payload offset)``, with the header's CRC checked; ``CodecError`` otherwise."""
    head = bytes(data[: len(MAGIC)])
    if head != MAGIC[: len(head)] or not head:
        raise CodecError(f"{name}: not a vqvc bitstream (starts with {head!r}, expected {MAGIC!r})")
    if len(data) < _PREFIX.size:
        raise CodecError(f"{name}: truncated: {len(data)} bytes, shorter than the {_PREFIX.size}-byte prefix")
    _, version, header_len = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise CodecError(f"{name}: bitstream format version {version}; this vqvc reads version {VERSION}")
    header_end = _PREFIX.size + header_len
    if len(data) < header_end + _CRC.size:
        raise CodecError(f"{name}: truncated: {len(data)} bytes, the header alone needs {header_end + _CRC.size}")
    header_bytes = data[_PREFIX.size:header_end]
    if _CRC.unpack_from(data, header_end)[0] != zlib.crc32(header_bytes):
        raise CodecError(f"{name}: header is corrupted (CRC32 mismatch)")
    try:
        header = Header.from_json(json.loads(header_bytes.decode("utf-8")))
    except (ValueError, KeyError, TypeError) as err:
        raise CodecError(f"{name}: header is malformed ({err})") from None
    return header, header_end + _CRC.size


def unpack(data: bytes, name: str = "input") -> tuple:
    """``(header, streams)`` of a complete, intact file; ``CodecError`` naming what is wrong."""
    header, start = read_header(data, name)
    end = start + header.payload_bytes
    expected = end + _CRC.size
    if len(data) < expected:
        raise CodecError(f"{name}: truncated: {len(data)} bytes, expected {expected}")
    if len(data) > expected:
        raise CodecError(f"{name}: {len(data) - expected} unexpected bytes after the payload")
    payload = data[start:end]
    if _CRC.unpack_from(data, end)[0] != zlib.crc32(payload):
        raise CodecError(f"{name}: payload is corrupted (CRC32 mismatch)")
    streams, offset = [], 0
    for level in header.levels:
        streams.append(np.frombuffer(payload, dtype="<u4", count=level.words, offset=offset).astype(np.uint32))
        offset += 4 * level.words
    return header, streams
