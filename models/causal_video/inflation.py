"""2D -> 3D: a taming-transformers VQGAN's weights as CausalVideoVQ's starting point.

Every 2D kernel ``(out, in, kh, kw)`` becomes ``(out, in, kt, kh, kw)`` with the 2D weights
on the newest time tap and zeros on the past ones, so each output frame is the 2D layer
applied to its own frame. On a one-frame clip the inflated model therefore computes what
the 2D model computes (the causal padding repeats that frame, which the zero taps ignore;
norms and attention run per frame already). Both sides use taming-transformers' names.

The 2D model's codebook (``quantize.*``) is not carried over: the quantizers differ.
``quant_conv`` / ``post_quant_conv`` (and any ``quantize.*`` keys) load where their shapes
fit and keep their fresh initialisation otherwise; encoder and decoder must fit exactly.
"""
import logging

import torch

from core.config_schema import ConfigError

logger = logging.getLogger(__name__)

#: keys that may keep their fresh values: the quantizer and the convs around it
QUANTIZER_SIDE = ("quantize.", "quant_conv.", "post_quant_conv.")
_SHOWN = 5


def inflate_kernel(weight: torch.Tensor, time_taps: int) -> torch.Tensor:
    """A 2D kernel ``(o, i, kh, kw)`` as a causal 3D one ``(o, i, time_taps, kh, kw)``: newest tap only."""
    inflated = weight.new_zeros((weight.shape[0], weight.shape[1], time_taps, *weight.shape[2:]))
    inflated[:, :, -1] = weight
    return inflated


def _fitted(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``source`` inflated where it is a 2D kernel of a 3D one; as it is otherwise."""
    if source.ndim == 4 and target.ndim == 5:
        return inflate_kernel(source, target.shape[2]).to(target.dtype)
    return source


def _listing(label: str, keys: list) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return f"{label} {len(keys)} ({shown}{', ...' if len(keys) > _SHOWN else ''})"


def inflate_state_dict(state: dict, target: dict, source: str) -> dict:
    """The model's state dict (``target`` gives names, shapes and fresh values) from a 2D or 3D ``state``.

    ``ConfigError`` naming the keys when the encoder or decoder does not fit (missing,
    unexpected or wrongly shaped: another width, depth or attention layout).
    """
    result, missing, reshaped, fresh = {}, [], [], []
    for key, value in target.items():
        optional = key.startswith(QUANTIZER_SIDE)
        candidate = _fitted(state[key], value) if key in state else None
        if candidate is not None and tuple(candidate.shape) == tuple(value.shape):
            result[key] = candidate
        elif optional:
            result[key] = value
            fresh.append(key)
        elif candidate is None:
            missing.append(key)
        else:
            reshaped.append(f"{key} {tuple(state[key].shape)} -> {tuple(value.shape)}")
    unexpected = [k for k in state if k not in target and not k.startswith(QUANTIZER_SIDE)]
    problems = [_listing(label, keys) for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped)) if keys]
    if problems:
        raise ConfigError(f"{source}: does not inflate into the configured CausalVideoVQ (same ch, ch_mult, "
                          f"num_res_blocks, z_channels and attention needed): " + "; ".join(problems))
    dropped = [k for k in state if k not in target]
    if fresh or dropped:
        logger.info("%s: %d keys kept fresh (%s), %d not used (%s): the quantizer differs", source, len(fresh),
                    ", ".join(fresh[:_SHOWN]), len(dropped), ", ".join(dropped[:_SHOWN]))
    return result
