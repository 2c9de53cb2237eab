"""The code-frequency prior: how often each code of each level occurs on the training data.

Fitted once (at the end of training, or by ``python -m codec fit-prior`` for older
checkpoints) and stored in the checkpoint under ``code_prior`` as plain tensors, so a
``weights_only`` load reads it::

    {"counts": [LongTensor(vocab_size) per level], "source": str, "num_indices": int}

The static entropy coder turns the counts into probabilities (``counts + smoothing``, so
a code never seen in training still costs a bounded number of bits).
"""
import hashlib
import logging
from typing import Callable, Optional

import attrs
import numpy as np
import torch
from einops import rearrange
from tqdm import tqdm

from codec.bitstream import CodecError
from core.checkpoint import save_checkpoint
from core.indices import as_level_list
from data_utils.files import resolve_data_files
from data_utils.loader import build_loader
from models.loaders import model_from_checkpoint

logger = logging.getLogger(__name__)

CODE_PRIOR_KEY = "code_prior"


@attrs.frozen
class CodePrior:
    counts: tuple  # int64 numpy array per level, bottom level first
    source: str
    num_indices: int

    def weights(self, level: int, smoothing: float) -> np.ndarray:
        return self.counts[level].astype(np.float64) + smoothing

    @property
    def digest(self) -> str:
        """sha256 of the counts: the bitstream records which prior coded it."""
        sha = hashlib.sha256()
        for level in self.counts:
            sha.update(np.ascontiguousarray(level, dtype="<i8").tobytes())
        return sha.hexdigest()

    def to_checkpoint(self) -> dict:
        return {"counts": [torch.from_numpy(c.astype(np.int64)) for c in self.counts],
                "source": self.source, "num_indices": int(self.num_indices)}

    @classmethod
    def from_checkpoint(cls, entry: dict, vocab_sizes: list, name: str) -> "CodePrior":
        """The checkpoint's ``code_prior``, checked against the model's codebooks."""
        try:
            counts = tuple(np.asarray(torch.as_tensor(c), dtype=np.int64).reshape(-1) for c in entry["counts"])
            prior = cls(counts, str(entry.get("source", "")), int(entry.get("num_indices", 0)))
        except (KeyError, TypeError, ValueError) as err:
            raise CodecError(f"{name}: {CODE_PRIOR_KEY} is malformed ({err})") from None
        sizes = [len(c) for c in counts]
        if sizes != list(vocab_sizes):
            raise CodecError(f"{name}: {CODE_PRIOR_KEY} has codebook sizes {sizes}, the model has {list(vocab_sizes)}")
        if any((c < 0).any() for c in counts):
            raise CodecError(f"{name}: {CODE_PRIOR_KEY} has negative counts")
        return prior


@torch.no_grad()
def fit_code_prior(model, loader, device, normalize: Callable, max_batches: Optional[int] = None,
                   source: str = "training data", progress: bool = False) -> dict:
    """Count the codes ``model.encode`` picks over ``loader``; the checkpoint's ``code_prior`` entry.

    ``loader`` yields ``(uint8 (b, d, h, w, c), paths)``; ``normalize`` maps [0, 1] floats
    to the model's input range.
    """
    was_training = model.training
    model.eval()
    counts = [torch.zeros(v, dtype=torch.long, device=device) for v in model.vocab_sizes]
    try:
        total = len(loader)
    except TypeError:  # an endless training stream
        total = None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    try:
        for step, (clips, _) in enumerate(tqdm(loader, total=total, desc="fit prior", disable=not progress)):
            if max_batches is not None and step >= max_batches:
                break
            frames = rearrange(clips.to(device), "b d h w c -> (b d) c h w").float() / 255.0
            for level, indices in enumerate(as_level_list(model.encode(normalize(frames)))):
                counts[level] += torch.bincount(indices.reshape(-1).long(), minlength=len(counts[level]))
    finally:
        model.train(was_training)
    num_indices = int(sum(c.sum() for c in counts))
    if num_indices == 0:
        raise CodecError(f"{source}: no clips to fit the code prior on")
    logger.info("code prior: %d indices over %d level(s) from %s", num_indices, len(counts), source)
    prior = CodePrior(tuple(c.cpu().numpy() for c in counts), source, num_indices)
    return prior.to_checkpoint()


def fit_prior_into_checkpoint(checkpoint: str, data: str, device="cpu", max_batches: Optional[int] = None,
                              clips_per_file: int = 32, progress: bool = False) -> dict:
    """Fit the prior of ``checkpoint``'s model on ``data`` (a folder of clips or ``builtin:train``)
    and rewrite the checkpoint with it, atomically. Returns the ``code_prior`` entry."""
    model, config, ckpt = model_from_checkpoint(checkpoint, device)
    files = resolve_data_files(data, config.use_images, "--data")
    loader = build_loader(files, config.data_args, config.use_images, validation=True,
                          clips_per_file=clips_per_file, folder=data)
    entry = fit_code_prior(model, loader, device, lambda x: (x - 0.5) / 0.5, max_batches, source=data,
                           progress=progress)
    ckpt[CODE_PRIOR_KEY] = entry
    save_checkpoint(ckpt, checkpoint)
    return entry
