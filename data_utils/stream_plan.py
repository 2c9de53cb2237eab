"""Which clip, (file, start), sample ``k`` of the training stream is: a pure function of ``(key, k)``.

Decoding is the cost: a seek decodes from the previous keyframe, so clips cut one by one
from random places would arrive at a fraction of the sequential decode rate. The plan
therefore tiles every file's clip starts into chunks whose frames the reader decodes in
one sequential pass, and keeps ``slots`` chunks in flight at once, their frames all in the
reader's cache. Each group of samples draws ``slots`` chunks at random (with probability
proportional to their starts) and takes its samples from them in turn, each at a uniformly
random start within its chunk: consecutive samples come from ``slots`` different places of
the data set, every clip start is exactly as likely as under uniform sampling, and the
chunk's frames are used about once on average. The reader converts and resizes only the
frames the group's clips use, and merely decodes the others.
"""
import numpy as np

SLOTS = 24  # chunks in flight: consecutive samples come from this many places
MAX_REDRAWS = 64  # redraws among the chunks in flight before one from the whole plan


def sample_rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(key) for key in keys])


class StreamPlan:
    """Sample ``k`` -> (file index, start frame, span): span = (first, end, needed) frames of its
    chunk, ``needed`` those that the group's clips use (None: unknown), for the reader.

    ``segments`` lists the clip starts this process owns as ``(file, lo, hi)`` (``hi``
    excluded); ``key`` (seed, part) makes each process's stream its own. A file found to
    decode fewer frames than its container says is ``limit``-ed: samples that would start
    past its end are redrawn, deterministically, so the stream still depends only on
    ``(key, k)`` and on the files themselves.
    """

    def __init__(self, segments: list, sequence_length: int, cache_frames: int, key: tuple):
        self.key = tuple(key)
        self.sequence_length = sequence_length
        self.slots = max(1, min(SLOTS, cache_frames // (4 * sequence_length)))
        chunk_starts = max(1, cache_frames // self.slots - sequence_length + 1)  # all slots fit in the cache
        self.chunks = [(i, start, min(start + chunk_starts, hi))
                       for i, lo, hi in segments for start in range(lo, hi, chunk_starts)]
        sizes = np.array([hi - lo for _, lo, hi in self.chunks], dtype=np.float64)
        self.cumulative = np.cumsum(sizes) / sizes.sum()
        # each chunk gives about as many clips as it has frames / sequence_length
        self.group = self.slots * max(1, -(-(chunk_starts + sequence_length - 1) // sequence_length))
        self.limits = {}  # file -> first start that does not decode
        self._last = (None, None)  # the group plan last used

    def _group_plan(self, g: int) -> tuple:
        """(chunk of each slot, start of each sample, frames each slot's samples need) of group ``g``."""
        if self._last[0] != g:
            rng = sample_rng(*self.key, 0, g)
            chunks = np.minimum(np.searchsorted(self.cumulative, rng.random(self.slots), side="right"),
                                len(self.chunks) - 1)
            bounds = np.array([self.chunks[c][1:] for c in chunks])[np.arange(self.group) % self.slots]
            starts = bounds[:, 0] + (rng.random(self.group) * (bounds[:, 1] - bounds[:, 0])).astype(np.int64)
            clip_frames = np.arange(self.sequence_length)
            needed = [frozenset((starts[slot::self.slots, None] + clip_frames).ravel().tolist())
                      for slot in range(self.slots)]
            self._last = (g, (chunks, starts, needed))
        return self._last[1]

    def limit(self, file: int, decodable_frames: int) -> None:
        """``file`` decodes only ``decodable_frames`` frames: never start a clip past them."""
        self.limits[file] = decodable_frames - self.sequence_length + 1

    def locate(self, k: int) -> tuple:
        g, r = divmod(k, self.group)
        chunks, starts, needed = self._group_plan(g)
        slot, start = r % self.slots, int(starts[r])
        i, lo, hi = self.chunks[chunks[slot]]
        if start < self.limits.get(i, hi):
            return i, start, (lo, hi + self.sequence_length - 1, needed[slot])
        rng = sample_rng(*self.key, 1, k)
        for _ in range(MAX_REDRAWS):  # past a file's real end: another clip in flight
            i, lo, hi = self.chunks[chunks[int(rng.integers(self.slots))]]
            start = lo + int(rng.integers(hi - lo))
            if start < self.limits.get(i, hi):
                return i, start, (lo, hi + self.sequence_length - 1, None)
        return self._redraw_anywhere(rng)

    def _redraw_anywhere(self, rng: np.random.Generator) -> tuple:
        valid = np.array([max(0, min(hi, self.limits.get(i, hi)) - lo) for i, lo, hi in self.chunks], np.float64)
        if valid.sum() == 0:
            raise RuntimeError("no clip of the data set decodes: every file ends before its first clip")
        i, lo, hi = self.chunks[rng.choice(len(self.chunks), p=valid / valid.sum())]
        start = lo + int(rng.integers(min(hi, self.limits.get(i, hi)) - lo))
        return i, start, (lo, hi + self.sequence_length - 1, None)
