"""One level's code indices, group by group, under every coder kind that applies; the cheapest is kept.

Coding every kind and keeping the smallest makes the choice exact: a level never costs
more than ``uniform``, i.e. fixed-length coding of its digits. Each group carries the CRC32
of its indices, so a decoder that is handed altered coder parameters notices before any
frame is decoded from wrong indices.
"""
import zlib
from typing import Optional

import numpy as np

from codec.context import KINDS, PRIOR_KINDS, code_group, prior_state
from codec.entropy import Decoding, Encoding, empirical_entropy
from codec.header import CodecError, LevelInfo
from models.code_prior import CodePrior
from models.code_streams import (coding_radices, frames_per_clip, join_digits, latent_frames, level_from_frames,
                                 split_digits)


def available_kinds(prior: Optional[CodePrior], level: int, streams: int) -> list:
    """The kinds a level can be coded with: the prior's need a prior with enough streams."""
    kinds = ["uniform", "adaptive", "context"]
    if prior is not None and len(prior.levels[level]) >= streams:
        kinds.insert(1, "prior")
        if prior.has_context(level):
            kinds.append("context_prior")
    return [k for k in KINDS if k in kinds]


def starting_states(kind: str, prior: Optional[CodePrior], level: int, streams: int) -> list:
    """Per stream, what ``code_group`` starts from for ``kind``."""
    if kind not in PRIOR_KINDS:
        return [None] * streams
    chosen = [prior.stream(level, s) for s in range(streams)]
    return chosen if kind == "prior" else [prior_state(s) for s in chosen]


def group_crc(frames: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(frames, dtype="<i4").tobytes())


class LevelEncoder:
    """Codes one level's groups under every candidate kind; ``finish`` keeps the cheapest."""

    def __init__(self, vocab_size: int, factors: list, depth: int, kinds: list, prior: Optional[CodePrior],
                 level: int):
        self.vocab_size, self.factors, self.depth = vocab_size, list(factors), depth
        self.radices = coding_radices(factors)
        self.streams = max(depth, 1)
        self.starts = {kind: starting_states(kind, prior, level, self.streams) for kind in kinds}
        self.words = {kind: [] for kind in kinds}
        self.crcs, self.counted, self.clip_shape = [], [], None

    def add_group(self, level: np.ndarray, clips: int) -> None:
        """Code ``clips`` clips of indices, shaped as the model gives them."""
        self.clip_shape = (level.shape[0] // clips,) + tuple(level.shape[1:])
        frames = latent_frames(level, clips, self.depth)
        self.crcs.append(group_crc(frames))
        self.counted.append(np.unique(frames, return_counts=True))
        streams = [split_digits(f, self.radices) for f in frames]
        for kind, starts in self.starts.items():
            op = Encoding()
            for digits, start in zip(streams, starts):
                code_group(op, kind, self.radices, frames.shape[1:], start, digits)
            self.words[kind].append(op.words())

    def finish(self) -> tuple:
        """``(LevelInfo, words per group)`` of the cheapest kind (the first listed, on ties)."""
        totals = {kind: sum(len(w) for w in words) for kind, words in self.words.items()}
        chosen = min(totals, key=lambda kind: (totals[kind], KINDS.index(kind)))
        count = sum(int(c.sum()) for _, c in self.counted)
        costs = {kind: 32.0 * total / count for kind, total in totals.items()}
        values, counts = np.unique(np.concatenate([v for v, _ in self.counted]), return_inverse=True)
        histogram = np.bincount(counts, weights=np.concatenate([c for _, c in self.counted]), minlength=len(values))
        groups = tuple((len(w), crc) for w, crc in zip(self.words[chosen], self.crcs))
        info = LevelInfo(self.vocab_size, tuple(self.factors), self.clip_shape, self.depth, chosen, costs,
                         min(empirical_entropy(histogram), float(np.log2(self.vocab_size))), groups)
        return info, self.words[chosen]


def decode_group(level: LevelInfo, words: np.ndarray, clips: int, prior: Optional[CodePrior], number: int,
                 group: int, name: str) -> np.ndarray:
    """The indices of ``clips`` clips of one group, shaped as the model gives them; CRC checked."""
    radices = coding_radices(level.factors)
    streams = max(level.depth, 1)
    shape = (clips * frames_per_clip(level.clip_shape, level.depth),) + tuple(level.clip_shape[-2:])
    op = Decoding(words)
    try:
        frames = np.stack([join_digits(code_group(op, level.coder, radices, shape, start), radices)
                           for start in starting_states(level.coder, prior, number, streams)])
    except AssertionError as err:  # constriction's refusal of words no encoder could have written
        raise CodecError(f"{name}: level {number}, group {group}: the payload does not decode ({err})") from None
    if group_crc(frames) != level.groups[group][1]:
        raise CodecError(f"{name}: level {number}, group {group}: decoded indices fail their CRC32 "
                         f"(the header's coder or shapes were altered, or the checkpoint's prior differs)")
    return level_from_frames(frames, level.clip_shape, clips, level.depth)
