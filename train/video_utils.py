"""Data: file listing, clip datasets, and the ``video_pipe`` loader factory.

Every sample ``k`` of the training stream is a pure function of ``(seed, k)`` — which
file, which start frame — so the order is reproducible, resumable at any step
(``start_sample``), and independent of the number of DataLoader workers.
"""
import logging
import os
from typing import Iterable, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from train.config_schema import ConfigError
from train.frame_reader import CachedVideoReader, probe_video, read_image
from train.sample_data import builtin_files, is_builtin

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".y4m")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _list_files(directory: str, extensions: tuple) -> list:
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(extensions))
    return sorted(found)


def list_videos(directory: str) -> list:
    """Video files under ``directory`` (recursive, by extension, sorted)."""
    return _list_files(directory, VIDEO_EXTENSIONS)


def list_images(directory: str) -> list:
    """Image files under ``directory`` (recursive, by extension, sorted)."""
    return _list_files(directory, IMAGE_EXTENSIONS)


def resolve_data_files(spec: Union[str, list, None], use_images: bool, key: str) -> list:
    """Files named by a ``data_process`` entry: ``builtin:train|valid``, folders or files."""
    if spec is None:
        return []
    files = []
    for item in [spec] if isinstance(spec, str) else spec:
        if is_builtin(item):
            files.extend(builtin_files(item, use_images))
        elif os.path.isdir(item):
            found = list_images(item) if use_images else list_videos(item)
            if not found:
                kind = "image" if use_images else "video"
                raise ConfigError(f"{key}: no {kind} files in folder {item!r}")
            files.extend(found)
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise ConfigError(f"{key} = {item!r}: no such file or folder")
    return files


def shard_files(files: list, shard_id: int, num_shards: int) -> list:
    """A disjoint share of ``files`` for one shard (files ``shard_id, shard_id+n, ...``)."""
    return files[shard_id::num_shards]


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
            if os.path.isfile(path) and os.path.getsize(path) > 0:
                self.files.append(path)
            else:
                logger.warning("skipping %s: empty or missing image file", path)
                skipped += 1
        self.skipped = skipped
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
                raise RuntimeError(f"no readable image among {len(self.files)} files")
            frames.append(image)
            paths.append(path)
        return torch.from_numpy(np.stack(frames)), paths[0]


def collate_fn(batch: list) -> tuple:
    """``[(clip (d,h,w,c) uint8, path)] -> (uint8 tensor (b, d, h, w, c), [paths])``."""
    clips, paths = zip(*batch)
    return torch.stack(clips), list(paths)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


class StreamSampler(Sampler):
    """Sample indices ``start, start+1, ...`` forever (training) — the stream position."""

    def __init__(self, start: int = 0):
        self.start = start

    def __iter__(self) -> Iterable[int]:
        k = self.start
        while True:
            yield k
            k += 1


class DataLoaderWrapper:
    """Iterates the wrapped loader; a training loader never ends.

    ``samples_seen`` is the stream position (saved in checkpoints for exact resume).
    """

    def __init__(self, dataloader: DataLoader, infinite: bool, start_sample: int = 0):
        self.dataloader = dataloader
        self.infinite = infinite
        self.samples_seen = start_sample

    @property
    def dataset(self):
        return self.dataloader.dataset

    def __len__(self) -> int:
        return len(self.dataloader)

    def seek(self, sample: int) -> None:
        """Continue the training stream at sample ``sample`` (for exact resume)."""
        self.dataloader.sampler.start = sample
        self.samples_seen = sample

    def __iter__(self):
        for batch in self.dataloader:
            self.samples_seen += batch[0].shape[0]
            yield batch


def video_pipe(filenames, config_path="param.json", batch_size=4, num_threads=0, device_id=0,
               sequence_length=8, shard_id=0, num_shards=1, initial_prefetch_size=2048, seed=2025,
               random_shuffle=True, config=None, start_sample=0, validation=False,
               clips_per_file=8, folder="data"):
    """A ``DataLoaderWrapper`` over videos (or images when the config says ``use_images``).

    ``random_shuffle=True`` or ``validation=False`` gives the endless random training
    stream starting at ``start_sample``; ``validation=True`` a finite, fixed pass.
    ``initial_prefetch_size`` bounds the decoded-frame cache (frames per worker).
    """
    from train.config import load_config

    config = config or load_config(config_path)
    data_args = config.data_args
    size = data_args.frame_size
    files = shard_files(list(filenames), shard_id or 0, num_shards or 1)
    if not files:
        raise ConfigError(f"{folder}: no files for shard {shard_id} of {num_shards} ({len(filenames)} files in all)")
    fixed = clips_per_file if validation else None
    if config.use_images:
        dataset = ImageDataset(files, sequence_length, size, seed=seed, clips_per_file=fixed, folder=folder)
    else:
        dataset = VideoDataset(files, sequence_length, size, seed=seed, cache_frames=initial_prefetch_size,
                               clips_per_file=fixed, folder=folder)
    workers = num_threads
    extra = {}
    if workers > 0:
        extra = dict(prefetch_factor=data_args.prefetch_factor, persistent_workers=data_args.persistent_workers)
    pin = data_args.pin_memory if data_args.pin_memory != "auto" else torch.cuda.is_available()
    sampler = None if validation else StreamSampler(start_sample)
    # A private generator: creating iterators must not consume the global torch RNG,
    # or a resumed run would diverge from a straight one.
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                        collate_fn=collate_fn, pin_memory=bool(pin), drop_last=False, generator=generator,
                        worker_init_fn=_seed_worker, **extra)
    return DataLoaderWrapper(loader, infinite=not validation, start_sample=start_sample)
