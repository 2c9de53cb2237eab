"""Clip datasets: every sample ``k`` of the training stream is a pure function of ``(seed, k)``.

Which file and which start frame sample ``k`` uses depends on nothing else, so the order
is reproducible, resumable at any step, and independent of the number of loader workers.
"""
import logging
import os
from typing import Optional

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from core.config_schema import ConfigError
from data_utils.frame_reader import CachedVideoReader, probe_video, read_image

logger = logging.getLogger(__name__)


def _sample_rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


# Training clips are cut from chunks of consecutive frames, each decoded once in one
# sequential pass: a seek decodes from the previous keyframe, so independent random
# clips would cost several times the sequential decode rate.
CHUNK_STARTS = 512  # clip starts per chunk (fewer when the frame cache is small)
INTERLEAVE = 2  # chunks in use at once: consecutive samples come from different places


class ChunkPlan:
    """Which chunk, and which start in it, sample ``k`` of the training stream uses.

    Every file's valid clip starts are tiled into chunks of ``chunk_starts``. Each group
    of samples draws ``INTERLEAVE`` chunks with probability proportional to their number
    of starts, and each sample a uniformly random start within its chunk — so every
    clip start is exactly as likely as in plain uniform sampling.
    """

    def __init__(self, frame_counts: list, sequence_length: int, cache_frames: int, seed: int):
        self.seed = seed
        self.sequence_length = sequence_length
        chunk_starts = max(1, min(CHUNK_STARTS, cache_frames // INTERLEAVE - sequence_length + 1))
        self.chunks = [(i, lo, min(lo + chunk_starts, count - sequence_length + 1))
                       for i, count in enumerate(frame_counts)
                       for lo in range(0, count - sequence_length + 1, chunk_starts)]
        sizes = np.array([hi - lo for _, lo, hi in self.chunks], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        # about one pass over a chunk's frames per chunk: its frames are used once on average
        self.group = INTERLEAVE * max(1, -(-(chunk_starts + sequence_length - 1) // sequence_length))
        self._last = (None, None)

    def _group_chunks(self, g: int) -> np.ndarray:
        if self._last[0] != g:
            self._last = (g, _sample_rng(self.seed, g, 1).choice(len(self.chunks), INTERLEAVE, p=self.weights))
        return self._last[1]

    def locate(self, k: int) -> tuple:
        """(file index, start frame, (first, end) frames of the chunk)."""
        g, r = divmod(k, self.group)
        i, lo, hi = self.chunks[self._group_chunks(g)[r % INTERLEAVE]]
        start = lo + int(_sample_rng(self.seed, k).integers(hi - lo))
        return i, start, (lo, hi + self.sequence_length - 1)


class VideoDataset(Dataset):
    """Clips of ``sequence_length`` consecutive frames, uint8 RGB ``(d, h, w, c)``.

    Training (``clips_per_file=None``): sample ``k`` picks a file and a uniformly random
    start from ``(seed, k)``. Validation (``clips_per_file=n``): a fixed list of ``n``
    evenly spaced clips per file, so every evaluation sees the same frames.
    """

    def __init__(self, filenames: list, sequence_length: int, size: tuple, seed: int = 0,
                 cache_frames: int = 2048, clips_per_file: Optional[int] = None, folder: str = "data"):
        self.sequence_length = sequence_length
        self.size = size
        self.seed = seed
        self.files, self.frame_counts, self.fps = [], [], []
        skipped = 0
        for path in filenames:
            count, fps = probe_video(path)
            if count == 0:
                logger.warning("skipping %s: not a readable video", path)
                skipped += 1
            elif count < sequence_length:
                logger.warning("skipping %s: %d frames, fewer than sequence_length %d", path, count, sequence_length)
                skipped += 1
            else:
                self.files.append(path)
                self.frame_counts.append(count)
                self.fps.append(fps)
        logger.info("%s: %d videos usable, %d skipped", folder, len(self.files), skipped)
        if not self.files:
            raise ConfigError(f"{folder}: no usable video with at least {sequence_length} frames "
                              f"({len(filenames)} files, {skipped} skipped)")
        self.skipped = skipped
        self.clips = None
        if clips_per_file is not None:
            self.clips = [
                (i, int(start))
                for i, count in enumerate(self.frame_counts)
                for start in np.unique(np.linspace(0, count - sequence_length, clips_per_file).round())
            ]
        cache_frames = max(cache_frames, 4 * sequence_length + 64)
        self.reader = CachedVideoReader(size, cache_frames=cache_frames)
        self.plan = ChunkPlan(self.frame_counts, sequence_length, cache_frames, seed)

    def __len__(self) -> int:
        return len(self.clips) if self.clips is not None else len(self.files)

    def locate(self, k: int) -> tuple:
        """(file index, start frame) of sample ``k``."""
        return self._locate(k)[:2]

    def _locate(self, k: int) -> tuple:
        if self.clips is not None:
            return (*self.clips[k], None)
        return self.plan.locate(k)

    def __getitem__(self, k: int):
        i, start, span = self._locate(k)
        clip = self.reader.clip(self.files[i], start, self.sequence_length, span)
        if clip is None:
            # Frame counts in containers can overstate: fall back to the last readable clip.
            clip = self._readable_clip(i, start)
        return torch.from_numpy(clip), self.files[i]

    def _readable_clip(self, i: int, start: int) -> np.ndarray:
        path = self.files[i]
        for earlier in range(start - 1, -1, -max(1, self.sequence_length)):
            clip = self.reader.clip(path, earlier, self.sequence_length)
            if clip is not None:
                self.frame_counts[i] = min(self.frame_counts[i], earlier + 2 * self.sequence_length)
                logger.warning("%s: frames from %d on cannot be decoded; using frames %d..", path, start, earlier)
                return clip
        raise RuntimeError(f"{path}: no {self.sequence_length} consecutive frames can be decoded")


class ImageDataset(Dataset):
    """Sequences of ``sequence_length`` independent images (uint8 RGB ``(d, h, w, c)``)."""

    def __init__(self, filenames: list, sequence_length: int, size: tuple, seed: int = 0,
                 clips_per_file: Optional[int] = None, folder: str = "data"):
        self.sequence_length = sequence_length
        self.size = size
        self.seed = seed
        self.files = []
        skipped = 0
        for path in filenames:
            # haveImageReader reads only the file's signature: a cheap check at start, not a decode
            if os.path.isfile(path) and os.path.getsize(path) > 0 and cv2.haveImageReader(path):
                self.files.append(path)
            else:
                logger.warning("skipping %s: empty, missing or not an image file", path)
                skipped += 1
        self.skipped = skipped
        self.folder = folder
        self._bad = set()
        if not self.files:
            raise ConfigError(f"{folder}: no usable image files ({len(filenames)} files, {skipped} skipped)")
        logger.info("%s: %d images, %d skipped", folder, len(self.files), skipped)
        # Validation: each image once, in order, grouped into sequences.
        self.fixed = clips_per_file is not None

    def __len__(self) -> int:
        return max(1, len(self.files) // self.sequence_length) if self.fixed else len(self.files)

    def _choose(self, k: int) -> list:
        if self.fixed:
            n = len(self.files)
            return [(k * self.sequence_length + j) % n for j in range(self.sequence_length)]
        rng = _sample_rng(self.seed, k)
        return [int(v) for v in rng.integers(len(self.files), size=self.sequence_length)]

    def __getitem__(self, k: int):
        frames, paths = [], []
        for offset, i in enumerate(self._choose(k)):
            image = None
            for attempt in range(len(self.files)):
                path = self.files[(i + attempt) % len(self.files)]
                if path in self._bad:
                    continue
                image = read_image(path, self.size)
                if image is not None:
                    break
                self._bad.add(path)
                logger.warning("skipping %s: not a readable image (%d unreadable so far)", path, len(self._bad))
            if image is None:
                raise ConfigError(f"{self.folder}: no readable image among {len(self.files)} files")
            frames.append(image)
            paths.append(path)
        return torch.from_numpy(np.stack(frames)), paths[0]
