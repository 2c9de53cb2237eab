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

from train.atomic_files import atomic_write

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


def check_compatible(ckpt: dict, model, model_type: str, path: str) -> None:
    """Refuse a checkpoint of another model type or shape, naming both."""
    saved_type = ckpt.get("model_type") or (ckpt.get("config") or {}).get("model_type")
    from models.model_adapter import resolve_adapter

    if saved_type and saved_type != model_type:
        same_family = False
        try:
            same_family = resolve_adapter(saved_type) is resolve_adapter(model_type)
        except ValueError:
            pass
        if not same_family:
            raise CheckpointError(f"{path}: checkpoint is a {saved_type!r} model, the config asks for {model_type!r}")
    expected = model.state_dict()
    state = ckpt["state_dict"]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (checkpoint vs config), e.g. {wrong[:2]}")
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        raise CheckpointError(f"{path}: does not fit the configured {model_type!r} model: " + "; ".join(parts))


def model_from_checkpoint(path: str, device="cpu", allow_unsafe: bool = False) -> tuple:
    """``(model, config, checkpoint)``: the model rebuilt from the config saved in the file."""
    from models.model_adapter import create_model
    from train.config import config_from_dict

    ckpt = verify_checkpoint(load_checkpoint(path, "cpu", allow_unsafe), path)
    config = config_from_dict(ckpt["config"], source=f"{path}[config]")
    model = create_model(config=config)
    check_compatible(ckpt, model, config.model_type, path)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return model, config, ckpt
