"""The code prior: what a model knows about its code indices, as counts, for the codec's entropy coder.

Per level, per stream (residual quantizer) and per digit (see ``models.code_streams``):

- ``intra``: how often each digit value occurs (codes a latent frame on its own);
- ``flags``: per context, how often a digit repeats the co-located digit of the previous
  latent frame (a copy) or not;
- ``fresh``: how often each value occurs where the digit did not copy;
- ``moves``: how often value ``a`` in the previous latent frame became ``b`` (``b != a``),
  kept for alphabets up to ``MOVES_LIMIT``.

``StreamCounts`` is also the state of the codec's adaptive models: the coder counts what
it has coded with the very same ``observe_*`` calls that fit the prior. Counts are held as
float64 integers (exact), so the probabilities the coder derives from them are the same
on every machine. The checkpoint stores them as int64 tensors under ``code_prior``::

    {"version": 2, "source": str, "num_indices": int,
     "levels": [[[{"radix", "intra", "flags", "fresh", "moves_index", "moves_count"} per digit] per stream] per level]}

Checkpoints of the first format (``{"counts": [per level]}``, frequencies only) still load.
"""
import hashlib
from typing import Optional

import attrs
import numpy as np
import torch

from core.checkpoint import CheckpointError
from models.code_streams import FLAG_CONTEXTS, UNKNOWN, coding_radices, flag_contexts, latent_frames, split_digits

MOVES_LIMIT = 1024  # largest digit alphabet whose value-to-value table is kept (1024^2 counts)
PRIOR_VERSION = 2


@attrs.define
class DigitCounts:
    radix: int
    intra: np.ndarray  # (radix,)
    flags: np.ndarray  # (FLAG_CONTEXTS, 2): [not copied, copied]
    fresh: np.ndarray  # (radix,)
    moves: Optional[np.ndarray]  # (radix, radix), or None for large alphabets

    @classmethod
    def zeros(cls, radix: int) -> "DigitCounts":
        moves = np.zeros((radix, radix)) if radix <= MOVES_LIMIT else None
        return cls(radix, np.zeros(radix), np.zeros((FLAG_CONTEXTS, 2)), np.zeros(radix), moves)

    def copy(self) -> "DigitCounts":
        return DigitCounts(self.radix, self.intra.copy(), self.flags.copy(), self.fresh.copy(),
                           None if self.moves is None else self.moves.copy())

    def add(self, other: "DigitCounts") -> None:
        self.intra += other.intra
        self.flags += other.flags
        self.fresh += other.fresh
        if self.moves is not None:
            self.moves += other.moves

    @property
    def has_context(self) -> bool:
        return bool(self.flags.sum() > 0)


class StreamCounts:
    """Counts of one stream of latent frames, every digit; observes frames in coding order."""

    def __init__(self, digits: list):
        self.digits = digits
        self.last_flags = None  # per digit: the previous inter frame's copy flags

    @classmethod
    def zeros(cls, radices: list) -> "StreamCounts":
        return cls([DigitCounts.zeros(r) for r in radices])

    @property
    def radices(self) -> list:
        return [d.radix for d in self.digits]

    def copy(self) -> "StreamCounts":
        """A fresh state from these counts (a key frame: no previous flags)."""
        return StreamCounts([d.copy() for d in self.digits])

    def last(self, digit: int, shape: tuple) -> np.ndarray:
        if self.last_flags is None:
            return np.full(shape, UNKNOWN, dtype=np.int8)
        return self.last_flags[digit]

    def observe_intra(self, digit: int, values: np.ndarray) -> None:
        counts = self.digits[digit]
        counts.intra += np.bincount(values.reshape(-1), minlength=counts.radix)

    def observe_inter(self, previous: list, current: list) -> None:
        """Count one inter latent frame (``previous`` and ``current``: digit arrays ``(h, w)``)."""
        chain = np.ones(current[0].shape, dtype=bool)
        last_flags = []
        for j, counts in enumerate(self.digits):
            flags = current[j] == previous[j]
            contexts = flag_contexts(self.last(j, flags.shape), flags, chain)
            counts.flags += np.bincount((contexts * 2 + flags).reshape(-1),
                                        minlength=2 * FLAG_CONTEXTS).reshape(FLAG_CONTEXTS, 2)
            fresh = ~flags
            new, old = current[j][fresh].astype(np.int64), previous[j][fresh].astype(np.int64)
            counts.fresh += np.bincount(new, minlength=counts.radix)
            if counts.moves is not None:
                counts.moves += np.bincount(old * counts.radix + new,
                                            minlength=counts.radix ** 2).reshape(counts.radix, counts.radix)
            chain &= flags
            last_flags.append(flags.astype(np.int8))
        self.last_flags = last_flags

    def observe_sequence(self, frames: np.ndarray) -> None:
        """Count a whole stream ``(frames, h, w)`` of indices, as the prior is fitted."""
        digits = split_digits(frames, self.radices)
        self.last_flags = None
        for t in range(frames.shape[0]):
            for j in range(len(digits)):
                self.observe_intra(j, digits[j][t])
            if t:
                self.observe_inter([d[t - 1] for d in digits], [d[t] for d in digits])
        self.last_flags = None


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise CheckpointError(f"{name}: code_prior {message}")


@attrs.frozen
class CodePrior:
    levels: tuple  # per level: tuple of StreamCounts, one per stream (residual quantizer)
    source: str = ""
    num_indices: int = 0

    def stream(self, level: int, stream: int) -> Optional[StreamCounts]:
        streams = self.levels[level]
        return streams[stream] if stream < len(streams) else None

    def has_context(self, level: int) -> bool:
        return any(d.has_context for s in self.levels[level] for d in s.digits)

    @property
    def digest(self) -> str:
        """sha256 of the counts: the bitstream records which prior coded it."""
        sha = hashlib.sha256()
        for streams in self.levels:
            sha.update(f"level{len(streams)}|".encode())
            for stream in streams:
                for d in stream.digits:
                    sha.update(f"digit{d.radix}|".encode())
                    for array in (d.intra, d.flags, d.fresh) + (() if d.moves is None else (d.moves,)):
                        sha.update(np.ascontiguousarray(array, dtype="<i8").tobytes())
        return sha.hexdigest()

    def to_state(self) -> dict:
        """Plain tensors for the checkpoint (``weights_only`` loads read them)."""
        def digit_state(d: DigitCounts) -> dict:
            state = {"radix": d.radix, **{k: torch.from_numpy(getattr(d, k).astype(np.int64))
                                          for k in ("intra", "flags", "fresh")}}
            if d.moves is not None:
                where = np.flatnonzero(d.moves)  # sparse: most value pairs never occur
                state["moves_index"] = torch.from_numpy(where.astype(np.int64))
                state["moves_count"] = torch.from_numpy(d.moves.reshape(-1)[where].astype(np.int64))
            return state

        return {"version": PRIOR_VERSION, "source": self.source, "num_indices": int(self.num_indices),
                "levels": [[[digit_state(d) for d in s.digits] for s in streams] for streams in self.levels]}

    @classmethod
    def from_state(cls, entry: dict, code_factors: list, name: str = "checkpoint") -> "CodePrior":
        """The checkpoint's ``code_prior``, checked against the model's alphabets; ``CheckpointError`` otherwise."""
        try:
            if "counts" in entry and "levels" not in entry:  # the first format: frequencies per level
                entry = {"source": entry.get("source", ""), "num_indices": entry.get("num_indices", 0),
                         "levels": [[[{"radix": len(c), "intra": c}]] for c in entry["counts"]]}
            levels = tuple(tuple(StreamCounts([_digit(d, name) for d in digits]) for digits in streams)
                           for streams in entry["levels"])
            prior = cls(levels, str(entry.get("source", "")), int(entry.get("num_indices", 0)))
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise CheckpointError(f"{name}: code_prior is malformed ({err})") from None
        _check(len(levels) == len(code_factors), name, f"has {len(levels)} level(s), the model {len(code_factors)}")
        for number, (streams, factors) in enumerate(zip(levels, code_factors)):
            expected = coding_radices(factors)
            _check(len(streams) >= 1, name, f"level {number} has no stream")
            for stream in streams:
                _check(stream.radices == expected, name,
                       f"level {number} has digits of {stream.radices} values, the model's code {expected}")
        return prior


def _digit(state: dict, name: str) -> DigitCounts:
    radix = int(state["radix"])
    _check(2 <= radix <= 2 ** 24, name, f"has a digit of {radix} values")
    counts = DigitCounts.zeros(radix)

    def read(key: str, shape: tuple) -> np.ndarray:
        array = np.asarray(torch.as_tensor(state[key]), dtype=np.float64)
        _check(array.shape == shape, name, f"{key} has shape {array.shape}, expected {shape}")
        _check(bool(np.isfinite(array).all() and (array >= 0).all()), name, f"{key} has negative counts")
        return array

    counts.intra = read("intra", (radix,))
    if "flags" in state:
        counts.flags = read("flags", (FLAG_CONTEXTS, 2))
        counts.fresh = read("fresh", (radix,))
    if counts.moves is not None and "moves_index" in state:
        where = np.asarray(torch.as_tensor(state["moves_index"]), dtype=np.int64).reshape(-1)
        values = read("moves_count", where.shape)
        _check(bool(((where >= 0) & (where < radix * radix)).all()), name, "moves_index is out of range")
        counts.moves.reshape(-1)[where] = values
    return counts


class CodePriorCounter:
    """Accumulates a ``CodePrior`` over sequences of clips, level by level."""

    def __init__(self, code_factors: list, depths: list):
        self.radices = [coding_radices(f) for f in code_factors]
        self.depths = list(depths)
        self.levels = None
        self.num_indices = 0

    def observe(self, levels: list, clips: int) -> None:
        """Count the indices of ``clips`` consecutive clips (numpy arrays per level, as the model gives them)."""
        if self.levels is None:
            self.levels = [[StreamCounts.zeros(r) for _ in range(max(d, 1))] for r, d in zip(self.radices, self.depths)]
        for streams, level, depth in zip(self.levels, levels, self.depths):
            frames = latent_frames(np.asarray(level), clips, depth)
            for stream, sequence in zip(streams, frames):
                stream.observe_sequence(sequence)
            self.num_indices += int(np.asarray(level).size)

    def prior(self, source: str) -> CodePrior:
        if self.levels is None or not self.num_indices:
            raise ValueError(f"{source}: no clips to fit the code prior on")
        return CodePrior(tuple(tuple(s) for s in self.levels), source, self.num_indices)
