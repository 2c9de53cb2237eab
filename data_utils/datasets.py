"""Clip datasets: every sample ``k`` of the training stream is a pure function of ``(seed, part, k)``.

Which file, which start frame and which crop sample ``k`` uses depends on nothing else
(see ``stream_plan``), so the order is reproducible, resumable at any step, independent
of the number of loader workers, and different in every part (shard x DDP rank).
"""
import logging
import os
from typing import Optional

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from core.config_schema import ConfigError
from data_utils.files import shard_files, shard_starts
from data_utils.frame_reader import CachedVideoReader, count_decodable, probe_video, read_image
from data_utils.geometry import crop_clip, describe_geometry
from data_utils.stream_plan import StreamPlan, sample_rng

logger = logging.getLogger(__name__)

CROP_KEY = 2  # sample_rng(seed, part, CROP_KEY, k): where sample k is cropped


class VideoDataset(Dataset):
    """Clips of ``sequence_length`` consecutive frames, uint8 RGB ``(d, h, w, c)``.

    Training (``clips_per_file=None``): sample ``k`` is a uniformly random clip of this
    ``part`` = (index, count) of all clip starts, placed by a ``StreamPlan``. Validation
    (``clips_per_file=n``): a fixed list of ``n`` evenly spaced clips per file, so every
    evaluation sees the same frames. ``resize_mode``: see ``geometry``.
    """

    def __init__(self, filenames: list, sequence_length: int, size: tuple, seed: int = 0,
                 cache_frames: int = 2048, clips_per_file: Optional[int] = None, folder: str = "data",
                 part: tuple = (0, 1), resize_mode: str = "crop"):
        self.sequence_length = sequence_length
        self.size = tuple(size)
        self.seed = seed
        self.part = tuple(part)
        self.resize_mode = resize_mode
        self.files, self.frame_counts, self.fps = [], [], []
        skipped, shape = 0, None
        for path in filenames:
            count, fps, frame_shape = probe_video(path)
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
                shape = shape or frame_shape
        logger.info("%s: %d videos usable, %d skipped", folder, len(self.files), skipped)
        if not self.files:
            raise ConfigError(f"{folder}: no usable video with at least {sequence_length} frames "
                              f"({len(filenames)} files, {skipped} skipped)")
        self.skipped = skipped
        self.declared_counts = list(self.frame_counts)  # the containers' word; frame_counts is corrected
        self.clips, self.plan = None, None
        cache_frames = max(cache_frames, 4 * sequence_length + 64)
        if clips_per_file is not None:
            self.clips = [
                (i, int(start))
                for i, count in enumerate(self.frame_counts)
                for start in np.unique(np.linspace(0, count - sequence_length, clips_per_file).round())
            ]
        else:
            starts = [count - sequence_length + 1 for count in self.frame_counts]
            segments = shard_starts(starts, *self.part)
            if not segments:
                raise ConfigError(f"{folder}: {sum(starts)} clip starts in {len(self.files)} files cannot be "
                                  f"shared among {self.part[1]} shards x ranks")
            self.plan = StreamPlan(segments, sequence_length, cache_frames, key=(seed, self.part[0]))
        logger.info("%s: %s", folder, describe_geometry(shape, self.size, resize_mode, self.clips is None))
        self.reader = CachedVideoReader(self.size, cache_frames=cache_frames, mode=resize_mode)

    def __len__(self) -> int:
        return len(self.clips) if self.clips is not None else len(self.files)

    def locate(self, k: int) -> tuple:
        """(file index, start frame) of sample ``k``."""
        return self._locate(k)[:2]

    def _locate(self, k: int) -> tuple:
        if self.clips is None:
            return self.plan.locate(k)
        i, start = self.clips[k]
        declared, count = self.declared_counts[i], self.frame_counts[i]
        if count < declared:  # evenly spaced over the frames that really decode
            if count < self.sequence_length:
                raise RuntimeError(f"{self.files[i]}: only {count} frames decode, "
                                   f"fewer than sequence_length {self.sequence_length}")
            start = round(start * (count - self.sequence_length) / max(1, declared - self.sequence_length))
        return i, start, None

    def __getitem__(self, k: int):
        while True:
            i, start, span = self._locate(k)
            clip = self.reader.clip(self.files[i], start, self.sequence_length, span)
            if clip is None:  # once more on its own, from a fresh seek, before doubting the file
                clip = self.reader.clip(self.files[i], start, self.sequence_length)
            if clip is not None:
                break
            self._correct_count(i, start)
        place = None
        if self.clips is None:
            place = tuple(sample_rng(self.seed, self.part[0], CROP_KEY, k).random(2))
        return torch.from_numpy(crop_clip(clip, self.size, place)), self.files[i]

    def _correct_count(self, i: int, start: int) -> None:
        """The clip at ``start`` of file ``i`` did not decode: its container overstates the frame count.

        Count the frames that do decode (once per file), sample only those from now on, warn once.
        """
        path = self.files[i]
        first = self.frame_counts[i] == self.declared_counts[i]
        # at most up to the failed clip, so the same clip is never asked for again
        count = min(count_decodable(path) if first else self.frame_counts[i], start + self.sequence_length - 1)
        if first:
            logger.warning("%s: the container says %d frames but only %d decode; using those (warned once)",
                           path, self.declared_counts[i], count)
        self.frame_counts[i] = count
        if self.plan is not None:
            self.plan.limit(i, count)


class ImageDataset(Dataset):
    """Sequences of ``sequence_length`` independent images (uint8 RGB ``(d, h, w, c)``)."""

    def __init__(self, filenames: list, sequence_length: int, size: tuple, seed: int = 0,
                 clips_per_file: Optional[int] = None, folder: str = "data", part: tuple = (0, 1),
                 resize_mode: str = "crop"):
        self.sequence_length = sequence_length
        self.size = tuple(size)
        self.seed = seed
        self.part = tuple(part)
        self.resize_mode = resize_mode
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
        if not self.fixed:
            self.files = shard_files(self.files, *self.part)
            if not self.files:
                raise ConfigError(f"{folder}: {len(filenames) - skipped} images cannot be shared among "
                                  f"{self.part[1]} shards x ranks")
        logger.info("%s: %s", folder, describe_geometry(None, self.size, resize_mode, not self.fixed))

    def __len__(self) -> int:
        return max(1, len(self.files) // self.sequence_length) if self.fixed else len(self.files)

    def _choose(self, k: int) -> list:
        if self.fixed:
            n = len(self.files)
            return [(k * self.sequence_length + j) % n for j in range(self.sequence_length)]
        rng = sample_rng(self.seed, self.part[0], 1, k)
        return [int(v) for v in rng.integers(len(self.files), size=self.sequence_length)]

    def __getitem__(self, k: int):
        frames, paths = [], []
        places = [None] * self.sequence_length
        if not self.fixed:  # every image of a training sequence cropped at its own place
            places = sample_rng(self.seed, self.part[0], CROP_KEY, k).random((self.sequence_length, 2))
        for offset, i in enumerate(self._choose(k)):
            image = None
            for attempt in range(len(self.files)):
                path = self.files[(i + attempt) % len(self.files)]
                if path in self._bad:
                    continue
                image = read_image(path, self.size, self.resize_mode)
                if image is not None:
                    break
                self._bad.add(path)
                logger.warning("skipping %s: not a readable image (%d unreadable so far)", path, len(self._bad))
            if image is None:
                raise ConfigError(f"{self.folder}: no readable image among {len(self.files)} files")
            place = None if places[offset] is None else tuple(places[offset])
            frames.append(crop_clip(image, self.size, place))
            paths.append(path)
        return torch.from_numpy(np.stack(frames)), paths[0]
