"""Pretrained weights without a network.

Users with internet get the usual torchvision / pytorch-fid downloads into the torch hub
cache. Offline, a config key may point at a local file; when neither exists the program
stops at start-up with one line naming the file, where it goes and which key to set.
"""
import importlib.util
import logging
import os
from typing import Optional

import torch

from core.checkpoint import CheckpointError, UnsafeCheckpointError, load_checkpoint
from core.config_schema import ConfigError

logger = logging.getLogger(__name__)

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16 (LPIPS backbone)
FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's Inception


class WeightsMissingError(ConfigError):
    """A pretrained weights file is needed but cannot be found (and cannot be downloaded)."""


def hub_checkpoint_path(filename: str) -> str:
    """Where torch.hub (and so torchvision / pytorch-fid) caches ``filename``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def find_weights(filename: str, explicit: Optional[str]) -> Optional[str]:
    """The explicit path if given (it must exist), else the hub cache copy, else None."""
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    cached = hub_checkpoint_path(filename)
    return cached if os.path.isfile(cached) else None


def missing_message(what: str, filename: str, key: str, explicit: Optional[str]) -> str:
    if explicit:
        return f"{what} weights not found at {key} = {explicit!r}: point {key} at the file {filename}"
    return (
        f"{what} needs the weights file {filename}, which is not in {hub_checkpoint_path(filename)} "
        f"and cannot be downloaded here: put it there or set {key} to its path"
    )


def require_weights(what: str, filename: str, key: str, explicit: Optional[str]) -> str:
    """Path of the weights file, or ``WeightsMissingError`` with the one-line fix."""
    path = find_weights(filename, explicit)
    if path is None:
        raise WeightsMissingError(missing_message(what, filename, key, explicit))
    return path


def load_state_dict_file(path: str) -> dict:
    """A plain tensor state dict from ``path``, read by the one checkpoint reader (no pickled code runs)."""
    try:
        state = load_checkpoint(path)
    except UnsafeCheckpointError as err:
        names = ", ".join(err.names[:3]) or "classes or functions"
        raise CheckpointError(f"{path}: not a plain weights file: it pickles {names}, which could run code; "
                              "expected a state dict of tensors (torch.save(model.state_dict(), path))") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


# LPIPS cuts torchvision's vgg16.features into five slices, keeping the layer indices.
_VGG_SLICES = ((1, range(0, 4)), (2, range(4, 9)), (3, range(9, 16)), (4, range(16, 23)), (5, range(23, 30)))


def vgg16_features_to_slices(state: dict) -> dict:
    """torchvision ``features.{i}.*`` keys -> LPIPS ``slice{k}.{i}.*`` keys."""
    slice_of = {i: k for k, layers in _VGG_SLICES for i in layers}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "features" and int(parts[1]) in slice_of:
            out[f"slice{slice_of[int(parts[1])]}.{'.'.join(parts[1:])}"] = value
    return out


def load_vgg16_slices(slices: torch.nn.Module, path: str) -> None:
    """Load a torchvision VGG16 weights file into an LPIPS-style sliced VGG16 module."""
    mapped = vgg16_features_to_slices(load_state_dict_file(path))
    missing, unexpected = slices.load_state_dict(mapped, strict=False)
    if missing:
        raise ConfigError(f"{path}: not a torchvision VGG16 weights file (missing {missing[:3]}...)")


def lpips_linear_weights_path(net: str = "vgg") -> str:
    """The LPIPS linear-layer weights shipped inside the ``lpips`` package (found without importing it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("LPIPS needs the 'lpips' package (pip install -r requirements.txt)")
    return os.path.join(list(spec.submodule_search_locations)[0], "weights", "v0.1", f"{net}.pth")
