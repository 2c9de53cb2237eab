"""The ``.vqv`` file format: what a compressed video looks like on disk.

Layout (integers little-endian)::

    b"VQVC"  version:u8  header_len:u32  header (UTF-8 JSON)  header_crc32:u32
    payload: for each group, for each level, its range-coded uint32 words   payload_crc32:u32

The header is JSON so ``info`` can show it with no model at hand; it lists every group's
word count, so the payload needs no framing of its own, and a group is a contiguous run of
bytes: ``cut`` keeps whole groups. Both CRCs and every header field are checked before
anything is decoded: a damaged or crafted file is refused, never half-decoded.
"""
import json
import struct
import zlib

import attrs
import numpy as np

from codec.header import CodecError, Header

MAGIC = b"VQVC"
VERSION = 2
MAX_HEADER_BYTES = 1 << 24
_PREFIX = struct.Struct("<4sBI")  # magic, version, header length
_CRC = struct.Struct("<I")

__all__ = ["CodecError", "Header", "MAGIC", "VERSION", "cut", "pack", "read_header", "unpack"]


def pack(header: Header, streams: list) -> bytes:
    """The file bytes for ``header`` and its words: ``streams[group][level]``, uint32 arrays."""
    lengths = [[len(s) for s in group] for group in streams]
    if lengths != [[level.groups[g][0] for level in header.levels] for g in range(header.groups)]:
        raise ValueError("stream lengths disagree with the header's word counts")
    header_bytes = json.dumps(header.to_json(), separators=(",", ":"), sort_keys=True).encode("utf-8")
    Header.from_json(json.loads(header_bytes), "the bitstream being written")  # never write what reading refuses
    payload = b"".join(np.asarray(s, dtype="<u4").tobytes() for group in streams for s in group)
    return b"".join([
        _PREFIX.pack(MAGIC, VERSION, len(header_bytes)), header_bytes, _CRC.pack(zlib.crc32(header_bytes)),
        payload, _CRC.pack(zlib.crc32(payload)),
    ])


def read_header(data: bytes, name: str = "input") -> tuple:
    """``(header, payload offset)``, with the header's CRC and every field checked; ``CodecError`` otherwise."""
    head = bytes(data[: len(MAGIC)])
    if head != MAGIC[: len(head)] or not head:
        raise CodecError(f"{name}: not a vqvc bitstream (starts with {head!r}, expected {MAGIC!r})")
    if len(data) < _PREFIX.size:
        raise CodecError(f"{name}: truncated: {len(data)} bytes, shorter than the {_PREFIX.size}-byte prefix")
    _, version, header_len = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise CodecError(f"{name}: bitstream format version {version}; this vqvc reads version {VERSION}")
    if header_len > MAX_HEADER_BYTES:
        raise CodecError(f"{name}: header of {header_len} bytes, more than the {MAX_HEADER_BYTES} allowed")
    header_end = _PREFIX.size + header_len
    if len(data) < header_end + _CRC.size:
        raise CodecError(f"{name}: truncated: {len(data)} bytes, the header alone needs {header_end + _CRC.size}")
    header_bytes = bytes(data[_PREFIX.size:header_end])
    if _CRC.unpack_from(data, header_end)[0] != zlib.crc32(header_bytes):
        raise CodecError(f"{name}: header is corrupted (CRC32 mismatch)")
    try:
        fields = json.loads(header_bytes.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise CodecError(f"{name}: header is not valid JSON ({err})") from None
    return Header.from_json(fields, name), header_end + _CRC.size


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


def unpack(data: bytes, name: str = "input") -> tuple:
    """``(header, streams[group][level])`` of a complete, intact file; ``CodecError`` naming what is wrong."""
    header, start = read_header(data, name)
    end = start + header.payload_bytes
    expected = end + _CRC.size
    if len(data) < expected:
        raise CodecError(f"{name}: truncated: {len(data)} bytes, the header's groups need {expected}")
    if len(data) > expected:
        raise CodecError(f"{name}: {len(data) - expected} unexpected bytes after the payload")
    payload = data[start:end]
    if _CRC.unpack_from(data, end)[0] != zlib.crc32(payload):
        raise CodecError(f"{name}: payload is corrupted (CRC32 mismatch)")
    streams, offset = [], 0
    for g in range(header.groups):
        group = []
        for level in header.levels:
            words = level.groups[g][0]
            group.append(np.frombuffer(payload, dtype="<u4", count=words, offset=offset).astype(np.uint32))
            offset += 4 * words
        streams.append(group)
    return header, streams


def cut(data: bytes, first_frame: int, end_frame: int, name: str = "input") -> tuple:
    """The groups holding frames ``[first_frame, end_frame)`` as a file of their own, with no re-coding.

    Returns ``(bytes, first frame kept, end frame kept)``: whole groups, so the range grows to
    their boundaries.
    """
    header, streams = unpack(data, name)
    if not 0 <= first_frame < end_frame:
        raise CodecError(f"{name}: cut from frame {first_frame} to {end_frame}: expected 0 <= from < to")
    if first_frame >= header.frames:
        raise CodecError(f"{name}: cut from frame {first_frame}, but the video has {header.frames} frames")
    frames_per_group = header.key_interval * header.frames_per_clip
    first_group, end_group = first_frame // frames_per_group, min(-(-end_frame // frames_per_group), header.groups)
    first_kept = first_group * frames_per_group
    end_kept = min(end_group * frames_per_group, header.frames)
    clips = header.group_clips(first_group).start, header.group_clips(end_group - 1).stop
    levels = []
    for level in header.levels:
        kept = level.groups[first_group:end_group]
        bits = 32.0 * sum(w for w, _ in kept) / ((clips[1] - clips[0]) * level.indices_per_clip)
        levels.append(attrs.evolve(level, groups=kept, costs={level.coder: bits}))
    cut_header = attrs.evolve(header, frames=end_kept - first_kept, clips=clips[1] - clips[0], levels=tuple(levels))
    return pack(cut_header, streams[first_group:end_group]), first_kept, end_kept
