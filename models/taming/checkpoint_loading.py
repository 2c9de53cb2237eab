"""Load upstream taming-transformers weights: a Lightning ``.ckpt`` or a plain ``.pth`` state dict.

Files are read by the one checkpoint reader, ``core.checkpoint.load_checkpoint``, which
runs no code from the file. Lightning checkpoints also pickle objects beside the weights
(old ones key ``callbacks`` by the ``ModelCheckpoint`` class itself, ``hyper_parameters``
may hold OmegaConf objects); their classes are read as inert placeholders, since only
``state_dict`` is used. Full unpickling happens only with ``allow_unsafe``.

Keys under ``loss.`` belong to the loss module (``VQLPIPSWithDiscriminator``), the rest
to the model; both must match exactly.
"""
import logging
from typing import NamedTuple, Optional

import torch
from torch import nn

from core.checkpoint import load_checkpoint
from core.config_schema import ConfigError
from models.quantizers import optional_state_keys

module_logger = logging.getLogger(__name__)

LOSS_PREFIX = "loss."
_SHOWN = 5  # keys named in a mismatch message


class LoadedWeights(NamedTuple):
    model_keys: int
    loss_keys: int
    loss_state: dict  # the loss module's share, prefix stripped (for a loss module built later)


def extract_state_dict(ckpt, path: str) -> dict:
    """``ckpt['state_dict']`` if present (Lightning, vqvc), else ``ckpt`` itself; tensors only."""
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a state dict, found {type(state).__name__}")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ConfigError(f"{path}: state dict entries that are not tensors: {', '.join(not_tensors[:_SHOWN])}")
    return state


def split_loss_keys(state: dict) -> tuple:
    """``(model_state, loss_state)``; ``loss.`` stripped from the loss module's keys."""
    model_state = {k: v for k, v in state.items() if not k.startswith(LOSS_PREFIX)}
    loss_state = {k[len(LOSS_PREFIX):]: v for k, v in state.items() if k.startswith(LOSS_PREFIX)}
    return model_state, loss_state


def _listing(keys: list) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > _SHOWN else ''})"


def load_strict(module: nn.Module, state: dict, path: str, what: str) -> None:
    """``module.load_state_dict(state)`` with every key and shape matching, else ``ConfigError`` naming them.

    Only the quantizers' usage statistics may be absent (upstream files have none; they start afresh).
    """
    expected = module.state_dict()
    optional = optional_state_keys(module)
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected and k not in optional]
    reshaped = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
                for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{label} {_listing(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped)) if keys]
    if problems:
        raise ConfigError(f"{path}: does not fit the {what}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def load_upstream_weights(adapter: nn.Module, path: str, loss_module: Optional[nn.Module] = None,
                          allow_unsafe: bool = False, logger: Optional[logging.Logger] = None) -> LoadedWeights:
    """Load an official Taming checkpoint into ``adapter`` (and its ``loss.*`` keys into ``loss_module``).

    Without a loss module the ``loss.*`` keys are returned in ``loss_state`` for later. The
    adapter adopts the file's model weights first (``adopt_weights``: as they are for most
    families; CausalVideoVQ inflates a 2D model's kernels).
    """
    log = logger or module_logger
    state = extract_state_dict(load_checkpoint(path, "cpu", allow_unsafe, metadata_placeholders=True), path)
    model_state, loss_state = split_loss_keys(state)
    model_state = adapter.adopt_weights(model_state, path)
    load_strict(adapter, model_state, path, "model")
    loss_keys = 0
    if loss_module is not None and loss_state:
        # only the parts this training uses (no discriminator without a GAN, no LPIPS without it)
        parts = {name for name, child in loss_module.named_children() if child is not None}
        used = {k: v for k, v in loss_state.items() if k.split(".", 1)[0] in parts}
        load_strict(loss_module, used, path, "loss module (keys loss.*)")
        loss_keys = len(used)
        if len(used) < len(loss_state):
            log.info("%s: %d loss.* keys not loaded (parts of the loss this training does not use)",
                     path, len(loss_state) - len(used))
    log.info("%s: %d keys loaded into the model, %d into the loss module", path, len(model_state), loss_keys)
    if loss_state and loss_module is None:
        log.info("%s: %d loss.* keys not loaded (no loss module given)", path, len(loss_state))
    return LoadedWeights(len(model_state), loss_keys, loss_state)
