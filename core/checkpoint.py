"""Checkpoints that a crash cannot corrupt, and loading that executes no pickled code.

A save writes a temporary file in the same folder, flushes and fsyncs it, then renames
it over the target: readers only ever see a complete file. Loads use
``torch.load(weights_only=True)``; full unpickling needs ``allow_unsafe=True``.
"""
import logging
import os
import pickle
import random
import re
from typing import Optional

import numpy as np
import torch

from core.atomic_files import atomic_write

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"checkpoint_step(\d+)\.pth\.tar$")
REQUIRED_KEYS = ("steps", "state_dict", "config")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, foreign, or does not fit the model."""


def checkpoint_name(step: int) -> str:
    return f"checkpoint_step{step:08d}.pth.tar"


def save_checkpoint(payload: dict, path: str) -> str:
    """Write ``payload`` to ``path`` atomically; returns ``path``."""
    atomic_write(path, lambda fh: torch.save(payload, fh))
    return path


def load_checkpoint(path: str, map_location="cpu", allow_unsafe: bool = False) -> dict:
    """Read a checkpoint without executing pickled code (unless ``allow_unsafe``)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        if "GLOBAL" not in message:
            raise CheckpointError(f"{path}: damaged or not a checkpoint (cannot unpickle)") from None
        if not allow_unsafe:
            names = [line.strip() for line in message.splitlines() if "GLOBAL" in line]
            raise CheckpointError(
                f"{path}: holds Python objects that need full unpickling, which can run arbitrary code "
                f"({names[0] if names else 'unsupported global'}); if you trust the file, "
                "set train_args.allow_unsafe_load to true"
            ) from None
        logger.warning("%s: loading with full unpickling (allow_unsafe_load is set)", path)
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({str(err).splitlines()[0]})") from None


def verify_checkpoint(ckpt: object, path: str) -> dict:
    """The checkpoint if it has what resuming needs, else ``CheckpointError``."""
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a vqvc training checkpoint (needs keys {', '.join(REQUIRED_KEYS)})")
    return ckpt


def list_checkpoints(directory: str) -> list:
    """Step checkpoints in ``directory``, newest first."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        match = CHECKPOINT_PATTERN.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return [path for _, path in sorted(found, reverse=True)]


def prune_checkpoints(directory: str, keep_last: int) -> None:
    for path in list_checkpoints(directory)[keep_last:]:
        os.remove(path)


def find_resumable(directory: str, map_location="cpu") -> Optional[tuple]:
    """``(path, checkpoint)`` of the newest checkpoint that loads and verifies, else None.

    A damaged newer file is passed over with a warning naming it.
    """
    for path in list_checkpoints(directory):
        try:
            return path, verify_checkpoint(load_checkpoint(path, map_location), path)
        except CheckpointError as err:
            logger.warning("skipping damaged checkpoint: %s", err)
    return None


def capture_rng_state() -> dict:
    """RNG states of Python, NumPy and torch, as plain tensors/lists (weights_only-loadable)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
