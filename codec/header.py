"""The ``.vqv`` header: what the bitstream says about itself, every field bound-checked on reading.

A header is trusted only after ``Header.from_json`` has checked each field's type and range
and their agreement (frames against clips, clips against groups, factors against the
alphabet, shapes against sizes); the payload size is checked against the groups' word
counts by ``codec.bitstream``, and the checkpoint against the rest by ``codec.codec``.
What a crafted header could still change is caught by the CRC32 of every group's
decoded indices, before any frame is decoded from them.
"""
import math
import re
from typing import Optional

import attrs

from codec.context import KINDS, PRIOR_KINDS

MAX_SIDE = 1 << 15  # frame height / width
MAX_FRAMES = 1 << 31
MAX_FRAMES_PER_CLIP = 1024
MAX_CHUNK_FRAMES = 1 << 14
MAX_KEY_INTERVAL = 1024  # clips per group
MAX_LEVELS = 16
MAX_GROUP_INDICES = 1 << 26  # indices of one level in one group (decoded in memory at once)
MAX_FPS = 1000.0
_HASH = re.compile(r"^[0-9a-f]{64}$")


class CodecError(ValueError):
    """What the codec refuses, in one line: an unreadable input, a foreign, truncated, corrupted or
    crafted bitstream, or a checkpoint that is not the one the bitstream was coded with."""


@attrs.frozen
class LevelInfo:
    """One level of code indices: its alphabet, its index shape per clip, its coded groups."""

    vocab_size: int
    factors: tuple  # mixed-radix digits of an index (the model's code_factors)
    clip_shape: tuple  # index-tensor shape for one clip, as coded (``depth`` residual levels kept)
    depth: int  # residual quantizers coded (the axis after the batch axis); 0: the level has none
    coder: str  # the kind chosen (``codec.context.KINDS``)
    costs: dict  # kind -> bits per index, for every kind tried (``info`` shows them)
    entropy_bits: float  # empirical entropy of the indices, bits per index
    groups: tuple  # (words, crc32 of the decoded indices) per group

    @property
    def indices_per_clip(self) -> int:
        return math.prod(self.clip_shape)

    @property
    def words(self) -> int:
        return sum(words for words, _ in self.groups)


@attrs.frozen
class Header:
    model_type: str
    model_hash: str  # sha256 of the model weights (``codec.codec.model_identity``)
    prior_hash: Optional[str]  # sha256 of the code prior, when a level is coded with it
    frames: int  # frames of the original clip
    fps: float
    size: tuple  # (height, width) of the original frames
    padded_size: tuple  # (height, width) the model saw: multiples of its spatial factor
    frames_per_clip: int  # frames the model codes together
    chunk_frames: int  # frames per model call (the config's sequence_length, in whole clips)
    clips: int  # clips coded, the last one padded by repeating the final frame
    key_interval: int  # clips per group; each group decodes on its own
    levels: tuple  # LevelInfo per level, bottom level first
    checkpoint_hint: Optional[str] = None  # the checkpoint path given at compression time

    @property
    def groups(self) -> int:
        return len(self.levels[0].groups)

    def group_clips(self, group: int) -> range:
        return range(group * self.key_interval, min((group + 1) * self.key_interval, self.clips))

    @property
    def payload_bytes(self) -> int:
        return 4 * sum(level.words for level in self.levels)

    def to_json(self) -> dict:
        return attrs.asdict(self, recurse=True)

    @classmethod
    def from_json(cls, data, name: str = "input") -> "Header":
        """A header from parsed JSON, every field checked; ``CodecError`` naming the first bad one."""
        return _Reader(name).header(data)


class _Reader:
    def __init__(self, name: str):
        self.name = name

    def fail(self, key: str, value, expected: str):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise CodecError(f"{self.name}: header field {key} = {shown}: expected {expected}")

    def fields(self, data, key: str, names: tuple) -> dict:
        if not isinstance(data, dict):
            self.fail(key, data, "an object")
        if set(data) != set(names):
            missing, extra = sorted(set(names) - set(data)), sorted(set(data) - set(names))
            self.fail(key, sorted(data), f"the fields {list(names)} (missing {missing}, unknown {extra})")
        return data

    def int(self, value, key: str, low: int, high: int) -> int:
        if type(value) is not int or not low <= value <= high:
            self.fail(key, value, f"an integer in [{low}, {high}]")
        return value

    def float(self, value, key: str, low: float, high: float, low_open: bool = False) -> float:
        ok = type(value) in (int, float) and math.isfinite(value) and (low < value if low_open else low <= value)
        if not ok or value > high:
            self.fail(key, value, f"a number in {'(' if low_open else '['}{low}, {high}]")
        return float(value)

    def text(self, value, key: str, pattern: Optional[re.Pattern] = None, optional: bool = False):
        if value is None and optional:
            return None
        if not isinstance(value, str) or not 0 < len(value) <= 4096 or (pattern and not pattern.match(value)):
            self.fail(key, value, "a sha256 hex digest" if pattern else "a short text")
        return value

    def ints(self, value, key: str, count: tuple, low: int, high: int) -> tuple:
        if not isinstance(value, list) or not count[0] <= len(value) <= count[1]:
            self.fail(key, value, f"a list of {count[0]} to {count[1]} integers")
        return tuple(self.int(v, f"{key}[{i}]", low, high) for i, v in enumerate(value))

    def header(self, data) -> Header:
        d = self.fields(data, "header", tuple(attrs.fields_dict(Header)))
        frames = self.int(d["frames"], "frames", 1, MAX_FRAMES)
        size = self.ints(d["size"], "size", (2, 2), 1, MAX_SIDE)
        padded = self.ints(d["padded_size"], "padded_size", (2, 2), 1, MAX_SIDE)
        if any(p < s for p, s in zip(padded, size)):
            self.fail("padded_size", list(padded), f"at least size {list(size)}")
        per_clip = self.int(d["frames_per_clip"], "frames_per_clip", 1, MAX_FRAMES_PER_CLIP)
        chunk = self.int(d["chunk_frames"], "chunk_frames", per_clip, MAX_CHUNK_FRAMES)
        if chunk % per_clip:
            self.fail("chunk_frames", chunk, f"a multiple of frames_per_clip ({per_clip})")
        clips = -(-frames // per_clip)
        self.int(d["clips"], "clips", clips, clips)
        key_interval = self.int(d["key_interval"], "key_interval", 1, MAX_KEY_INTERVAL)
        if key_interval % (chunk // per_clip):
            self.fail("key_interval", key_interval, f"a multiple of the clips per model call ({chunk // per_clip})")
        if not isinstance(d["levels"], list) or not 1 <= len(d["levels"]) <= MAX_LEVELS:
            self.fail("levels", d["levels"], f"a list of 1 to {MAX_LEVELS} levels")
        groups = -(-clips // key_interval)
        levels = tuple(self.level(v, f"levels[{i}]", padded, key_interval, groups) for i, v in enumerate(d["levels"]))
        prior_hash = self.text(d["prior_hash"], "prior_hash", _HASH, optional=True)
        if prior_hash is None and any(level.coder in PRIOR_KINDS for level in levels):
            self.fail("prior_hash", None, "the code prior's digest (a level is coded with the prior)")
        return Header(
            model_type=self.text(d["model_type"], "model_type"),
            model_hash=self.text(d["model_hash"], "model_hash", _HASH),
            prior_hash=prior_hash, frames=frames, fps=self.float(d["fps"], "fps", 0.0, MAX_FPS, low_open=True),
            size=size, padded_size=padded, frames_per_clip=per_clip, chunk_frames=chunk, clips=clips,
            key_interval=key_interval, levels=levels,
            checkpoint_hint=self.text(d["checkpoint_hint"], "checkpoint_hint", optional=True))

    def level(self, data, key: str, padded: tuple, key_interval: int, groups: int) -> LevelInfo:
        d = self.fields(data, key, tuple(attrs.fields_dict(LevelInfo)))
        vocab = self.int(d["vocab_size"], f"{key}.vocab_size", 2, 2 ** 31)
        factors = self.ints(d["factors"], f"{key}.factors", (1, 64), 2, 2 ** 24)
        if math.prod(factors) != vocab:
            self.fail(f"{key}.factors", list(factors), f"digits whose product is vocab_size ({vocab})")
        shape = self.ints(d["clip_shape"], f"{key}.clip_shape", (3, 8), 1, MAX_SIDE)
        if shape[-2] > padded[0] or shape[-1] > padded[1]:
            self.fail(f"{key}.clip_shape", list(shape), f"a latent no larger than the padded frame {list(padded)}")
        if math.prod(shape) * key_interval > MAX_GROUP_INDICES:
            self.fail(f"{key}.clip_shape", list(shape), f"at most {MAX_GROUP_INDICES} indices per group")
        depth = self.int(d["depth"], f"{key}.depth", 0, MAX_SIDE)
        if depth and (len(shape) < 4 or shape[1] != depth):
            self.fail(f"{key}.depth", depth, f"the clip shape's axis after the batch axis ({list(shape)})")
        coder = d["coder"]
        if coder not in KINDS:
            self.fail(f"{key}.coder", coder, f"one of {list(KINDS)}")
        costs = d["costs"]
        if not isinstance(costs, dict) or not costs or not set(costs) <= set(KINDS):
            self.fail(f"{key}.costs", costs, f"bits per index of coders among {list(KINDS)}")
        costs = {k: self.float(v, f"{key}.costs.{k}", 0.0, 1e4) for k, v in costs.items()}
        if coder not in costs:
            self.fail(f"{key}.costs", sorted(costs), f"the chosen coder {coder!r} among them")
        entropy = self.float(d["entropy_bits"], f"{key}.entropy_bits", 0.0, math.log2(vocab) + 1e-6)
        if not isinstance(d["groups"], list) or len(d["groups"]) != groups:
            self.fail(f"{key}.groups", d["groups"], f"{groups} groups (clips / key_interval)")
        coded = tuple(self.ints(g, f"{key}.groups[{i}]", (2, 2), 0, 2 ** 32 - 1) for i, g in enumerate(d["groups"]))
        for i, (words, _) in enumerate(coded):
            self.int(words, f"{key}.groups[{i}] words", 1, 2 ** 31)
        return LevelInfo(vocab, factors, shape, depth, coder, costs, entropy, coded)
