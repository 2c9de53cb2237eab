"""The loader: batches of uint8 clips ``(b, d, h, w, c)`` and their paths, endless for training."""
from typing import Iterable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from data_utils.datasets import ImageDataset, VideoDataset


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


def build_loader(files: list, data_args, use_images: bool, *, shard_id: int = 0, num_shards: int = 1,
                 seed: Optional[int] = None, validation: bool = False, clips_per_file: int = 8,
                 folder: str = "data", start_sample: int = 0) -> DataLoaderWrapper:
    """A loader over ``files`` (videos, or images when ``use_images``) as ``data_args`` describes.

    Training (``validation=False``): from sample ``start_sample``, the endless random stream
    of part ``shard_id`` of ``num_shards`` equal shares of all clips (``compose_shards``
    makes the part of a configured shard and a DDP rank); its seed is ``(seed, shard_id)``.
    Validation: a finite, fixed pass of ``clips_per_file`` clips per file, all files.
    ``data_args.initial_prefetch_size`` bounds the decoded-frame cache (frames per worker).
    """
    seed = data_args.seed if seed is None else seed
    size, length = data_args.frame_size, data_args.sequence_length
    fixed = clips_per_file if validation else None
    part = (0, 1) if validation else (shard_id, num_shards)
    common = dict(seed=seed, clips_per_file=fixed, folder=folder, part=part, resize_mode=data_args.resize_mode)
    if use_images:
        dataset = ImageDataset(list(files), length, size, **common)
    else:
        dataset = VideoDataset(list(files), length, size, cache_frames=data_args.initial_prefetch_size, **common)
    workers = data_args.num_threads
    extra = {}
    if workers > 0:
        extra = dict(prefetch_factor=data_args.prefetch_factor, persistent_workers=data_args.persistent_workers)
    pin = data_args.pin_memory if data_args.pin_memory != "auto" else torch.cuda.is_available()
    sampler = None if validation else StreamSampler(start_sample)
    # A private generator: creating iterators must not consume the global torch RNG,
    # or a resumed run would diverge from a straight one.
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=data_args.batch_size, sampler=sampler, shuffle=False,
                        num_workers=workers, collate_fn=collate_fn, pin_memory=bool(pin), drop_last=False,
                        generator=generator, worker_init_fn=_seed_worker, **extra)
    return DataLoaderWrapper(loader, infinite=not validation, start_sample=start_sample)
