"""Fitting a model's code prior on video: ``python -m codec fit-prior``, and the trainer at the end of a run.

The prior is measured at the scale the codec codes at: runs of consecutive frames read at
their own resolution (or resized to ``size``, the size of use), cropped to at most ``crop``
pixels a side at positions spread over the frame. Never at the training resolution: the
resizing that makes training crops changes what the codes look like (a prior fitted on
64x64 resized frames cost more than fixed-length coding on full-size video). The model
counts its codes itself (``update_code_prior``, CompressAI's ``update()``).
"""
import logging
import math
from typing import Iterator, Optional

import numpy as np
import torch
from einops import rearrange
from tqdm import tqdm

from codec.codec import pad_chunk
from codec.header import CodecError
from codec.video_io import frame_count, iter_frames
from core.checkpoint import save_checkpoint
from data_utils.files import resolve_data_files
from models.code_prior import CodePrior
from models.loaders import model_from_checkpoint

logger = logging.getLogger(__name__)

SEQUENCES = 32  # runs of consecutive frames, spread over the files
CLIPS_PER_SEQUENCE = 8  # clips (latent frames) per run: 7 transitions to count
CROP = 128  # largest crop side, in pixels of the frames as coded


def _spread(index: int) -> tuple:
    """Low-discrepancy fractions (y, x) for crop positions: the golden-ratio sequence."""
    return (index * 0.6180339887) % 1.0, (index * 0.7548776662) % 1.0


def _crop(frames: np.ndarray, crop: int, factor: int, index: int) -> np.ndarray:
    height, width = frames.shape[1:3]
    side_y, side_x = (max(factor, min(crop, s) // factor * factor) for s in (height, width))
    if side_y > height or side_x > width:  # smaller than one latent position: pad like the codec does
        return pad_chunk(frames, (max(side_y, height), max(side_x, width)), 1)[:, :side_y, :side_x]
    fy, fx = _spread(index)
    top, left = round((height - side_y) * fy), round((width - side_x) * fx)
    return frames[:, top:top + side_y, left:left + side_x]


def prior_sequences(files: list, model, sequences: Optional[int] = None, clips: Optional[int] = None,
                    crop: Optional[int] = None, size: Optional[tuple] = None) -> Iterator[torch.Tensor]:
    """``sequences`` runs of ``clips`` clips of consecutive frames ``(T, 3, h, w)`` in [0, 1], evenly
    spread over ``files`` (videos, images or folders of frames), each file read once, sequentially."""
    sequences, clips, crop = sequences or SEQUENCES, clips or CLIPS_PER_SEQUENCE, crop or CROP
    length = clips * model.frames_per_clip
    files = list(files)
    if len(files) > sequences:  # one run from each of ``sequences`` files spread over the list
        files = [files[round(i * (len(files) - 1) / max(sequences - 1, 1))] for i in range(sequences)]
    per_file = math.ceil(sequences / len(files))
    number = 0
    for path in files:
        count = frame_count(path)
        starts = sorted(set(np.linspace(0, max(count - length, 0), per_file).round().astype(int).tolist()))
        windows, frames = {}, iter_frames(path, size)
        for position, frame in enumerate(frames):
            for start in starts:
                if start <= position < start + length:
                    windows.setdefault(start, []).append(frame)
            if position >= starts[-1] + length - 1:
                break
        for start in starts:
            if windows.get(start):
                run = _crop(np.stack(windows.pop(start)), crop, model.spatial_factor, number)
                number += 1
                yield rearrange(torch.from_numpy(run), "t h w c -> t c h w").float() / 255.0


def fit_prior(model, files: list, source: str, progress: bool = False, **options) -> CodePrior:
    """Refit ``model``'s code prior on ``files`` (see ``prior_sequences`` for ``options``)."""
    runs = tqdm(prior_sequences(files, model, **options), desc="fit prior", unit="run", disable=not progress)
    try:
        prior = model.update_code_prior(runs, source=source)
    except ValueError as err:
        raise CodecError(str(err)) from None
    logger.info("code prior: %d indices over %d level(s) from %s", prior.num_indices, len(prior.levels), source)
    return prior


def fit_prior_into_checkpoint(checkpoint: str, data: str, device="cpu", progress: bool = False,
                              **options) -> CodePrior:
    """Fit the prior of ``checkpoint``'s model on ``data`` (a folder of videos or images, or
    ``builtin:train``) and rewrite the checkpoint with it, atomically."""
    model, config, ckpt = model_from_checkpoint(checkpoint, device)
    files = resolve_data_files(data, config.use_images, "--data")
    prior = fit_prior(model, files, source=data, progress=progress, **options)
    ckpt["code_prior"] = model.code_prior_state()
    save_checkpoint(ckpt, checkpoint)
    return prior
