"""Checkpoints that a crash cannot corrupt, damage that cannot go unnoticed, and loading that runs no code.

A save writes a temporary file in the same folder, stores a SHA-256 of it inside it
(``core.checksum``), fsyncs it and renames it over the target: readers only ever see a
complete file, and ``load_checkpoint`` refuses one whose bytes changed since.

``load_checkpoint`` is the one reader of every checkpoint and weights file (vqvc's own,
upstream Lightning ``.ckpt`` releases, torchvision / pytorch-fid weights). It uses
``torch.load(weights_only=True)``, which runs no code from the file; with
``metadata_placeholders`` the classes a Lightning file pickles beside its weights are read
as inert placeholders; full unpickling happens only with ``allow_unsafe``.
"""
import logging
import os
import pickle
import random
import re
from typing import Optional

import numpy as np
import torch

from core.atomic_files import atomic_path, storage_error
from core.checksum import ChecksumMismatch, add_checksum, verify_checksum
from core.config_schema import ConfigError

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"checkpoint_step(\d+)\.pth\.tar$")
REQUIRED_KEYS = ("steps", "state_dict", "config")
RUN_FILES_KEY = "run_files"  # the step checkpoints of this run not yet pruned, oldest first


class CheckpointError(ConfigError):
    """A checkpoint or weights file is missing, damaged, foreign, or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """The file pickles classes or functions; reading it fully could run code from it."""

    def __init__(self, message: str, names: list):
        super().__init__(message)
        self.names = names


class InertObject:
    """Stands in for a non-weight class found in a checkpoint; accepts and ignores everything."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def checkpoint_name(step: int) -> str:
    return f"checkpoint_step{step:08d}.pth.tar"


def save_checkpoint(payload: dict, path: str) -> str:
    """Write ``payload`` to ``path`` atomically, with its checksum inside; returns ``path``.

    A full disk or a read-only folder is a ``StorageError`` naming ``path``; the previous file stays.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            try:
                torch.save(payload, fh)
            except RuntimeError as err:  # torch's writer hides the OSError (e.g. ENOSPC) it hit
                if isinstance(err.__context__, OSError):
                    raise storage_error(path, err.__context__) from None
                raise
        add_checksum(tmp)
    return path


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _torch_load(path: str, map_location, weights_only: bool):
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as err:
        if weights_only and "GLOBAL" in str(err):
            raise  # pickled classes or functions: the caller decides
        detail = next((line.split("error:", 1)[1].strip() for line in str(err).splitlines()
                       if "WeightsUnpickler error:" in line), "")
        raise CheckpointError(f"{path}: damaged or not a checkpoint (cannot unpickle{': ' + detail if detail else ''})"
                              ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({_first_line(err)})") from None


def _foreign_globals(path: str) -> list:
    """Classes/functions the file pickles that a weights-only load refuses ([] for the legacy format)."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except (ValueError, RuntimeError, pickle.UnpicklingError):  # legacy format or unreadable: cannot be inspected
        return []


def load_checkpoint(path: str, map_location="cpu", allow_unsafe: bool = False,
                    metadata_placeholders: bool = False) -> dict:
    """The unpickled file, its checksum verified (if it has one), without running code from it.

    ``metadata_placeholders``: read the classes a foreign (Lightning) file pickles beside its
    weights as inert placeholders. ``allow_unsafe``: permit full unpickling of what is left.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        verify_checksum(path)
    except ChecksumMismatch as err:
        raise CheckpointError(f"{path}: damaged checkpoint: {err}") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return _torch_load(path, map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refusal = _first_line(err)
    foreign = _foreign_globals(path)
    if metadata_placeholders and foreign:
        try:
            with torch.serialization.safe_globals([(InertObject, name) for name in foreign]):
                ckpt = _torch_load(path, map_location, weights_only=True)
            logger.info("%s: read %s as inert placeholders (metadata beside the weights; no code run)",
                        path, ", ".join(foreign))
            return ckpt
        except pickle.UnpicklingError as err:
            refusal = _first_line(err)
    if not allow_unsafe:
        raise UnsafeCheckpointError(
            f"{path}: holds Python objects that need full unpickling, which can run arbitrary code "
            f"({refusal}); if you trust the file, set train_args.allow_unsafe_load to true", foreign)
    logger.warning("%s: loading with full unpickling, which can run code from the file (allow_unsafe_load is set)",
                   path)
    return _torch_load(path, map_location, weights_only=False)


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


def find_resumable(directory: str, map_location="cpu") -> Optional[tuple]:
    """``(path, checkpoint)`` of the newest checkpoint that loads and verifies, else None.

    A damaged newer file (truncated, or failing its checksum) is passed over with a warning naming it.
    """
    for path in list_checkpoints(directory):
        try:
            return path, verify_checkpoint(load_checkpoint(path, map_location), path)
        except CheckpointError as err:
            logger.warning("skipping damaged checkpoint: %s", err)
    return None


class RunCheckpoints:
    """The step checkpoints of one run, pruned to the newest ``keep_last``.

    Pruning looks only at the files this run wrote -- never at other files in the folder --
    and never removes the one just written. The list travels inside every checkpoint, so a
    resumed run goes on pruning what its earlier processes wrote.
    """

    def __init__(self, directory: str, keep_last: int):
        self.directory = directory
        self.keep_last = keep_last
        self.files = []  # names in this folder, oldest first

    def adopt(self, path: str, ckpt: dict) -> None:
        """Continue the run of ``ckpt`` (read from ``path``): its files in this folder become ours."""
        if os.path.dirname(os.path.abspath(path)) != os.path.abspath(self.directory):
            return  # a checkpoint of another folder: its files are not ours to prune
        names = ckpt.get(RUN_FILES_KEY) or [os.path.basename(path)]
        self.files = [name for name in names if isinstance(name, str) and CHECKPOINT_PATTERN.match(name)]

    def save(self, payload: dict, step: int) -> str:
        """Write the checkpoint of ``step``, then remove this run's files beyond the newest ``keep_last``."""
        name = checkpoint_name(step)
        files = [f for f in self.files if f != name] + [name]
        path = save_checkpoint({**payload, RUN_FILES_KEY: files}, os.path.join(self.directory, name))
        for old in files[:-self.keep_last]:
            try:
                os.remove(os.path.join(self.directory, old))
            except FileNotFoundError:
                pass
        self.files = files[-self.keep_last:]
        return path


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
