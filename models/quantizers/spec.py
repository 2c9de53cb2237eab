"""``model_args.quantizer``: which quantizer a family uses, validated, resolved and built.

The config value is a name (``"fsq"``) or an object (``{"type": "fsq", "levels": [8, 8, 8]}``),
or, for multi-level families, a list with one of those per level. Options left out are
resolved from the family's ``vocab_size`` and code dimension ``n_init``: FSQ levels whose
product is closest to ``vocab_size``, LFQ ``log2(vocab_size)`` bits on the unit sphere, and
the family's own commitment weight, EMA decay and dead-code threshold.
"""
import itertools
import math
from typing import Literal, Optional, Union

import attrs

from core.config_schema import ConfigError, Invalid, check, non_negative, positive, structure

NAMES = ("vq", "ema", "sinkhorn", "fsq", "lfq", "residual_vq", "simvq")

#: the options each quantizer understands (besides ``type``)
OPTIONS = {
    "vq": {"rotation_trick", "kmeans_init", "l2_normalize", "codebook_dim", "commitment_loss_weight",
           "dead_code_threshold"},
    "ema": {"rotation_trick", "kmeans_init", "l2_normalize", "codebook_dim", "commitment_loss_weight",
            "dead_code_threshold"},
    "sinkhorn": {"commitment_loss_weight", "dead_code_threshold"},
    "fsq": {"levels"},
    "lfq": {"entropy_loss_weight", "commitment_loss_weight", "spherical"},
    "residual_vq": {"num_quantizers", "quantize_dropout", "rotation_trick", "kmeans_init", "l2_normalize",
                    "codebook_dim", "commitment_loss_weight"},
    "simvq": {"rotation_trick", "commitment_loss_weight"},
}

# 2 is left out: the library bounds a 2-level channel only in its symmetric mode (use lfq for bits)
_LEVELS = check(lambda v: 1 <= len(v) <= 16 and all(3 <= level <= 64 for level in v),
                "a list of 1 to 16 integers in [3, 64] (for 2 levels per channel use lfq)")


@attrs.frozen
class QuantizerSpec:
    """One quantizer as the config names it; ``None`` options are resolved from the family."""

    type: Literal["vq", "ema", "sinkhorn", "fsq", "lfq", "residual_vq", "simvq"]
    rotation_trick: Optional[bool] = None
    kmeans_init: Optional[bool] = None
    l2_normalize: Optional[bool] = None
    codebook_dim: Optional[int] = attrs.field(default=None, validator=positive)
    num_quantizers: Optional[int] = attrs.field(default=None, validator=check(lambda v: 1 <= v <= 64, "in [1, 64]"))
    quantize_dropout: Optional[bool] = None
    levels: Optional[list[int]] = attrs.field(default=None, validator=_LEVELS)
    entropy_loss_weight: Optional[float] = attrs.field(default=None, validator=non_negative)
    spherical: Optional[bool] = None
    commitment_loss_weight: Optional[float] = attrs.field(default=None, validator=non_negative)
    dead_code_threshold: Optional[float] = attrs.field(default=None, validator=non_negative)

    def __attrs_post_init__(self):
        for name in attrs.fields_dict(type(self)):
            value = getattr(self, name)
            if name != "type" and value is not None and name not in OPTIONS[self.type]:
                valid = ", ".join(sorted(OPTIONS[self.type])) or "none"
                raise Invalid(f"{name} = {value!r}: not an option of {self.type!r} (its options: {valid})")


def parse_spec(value, path: str = "quantizer") -> Union[None, QuantizerSpec, list]:
    """The config value as a ``QuantizerSpec`` (or a list of them); ``ConfigError`` naming ``path.<key>``."""
    if value is None or isinstance(value, QuantizerSpec):
        return value
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{path} = []: expected a quantizer name, an object with 'type', or one per level")
        return [parse_spec(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, str):
        value = {"type": value}
    return structure(QuantizerSpec, value, path)


def spec_field(value):
    """attrs converter for a family's ``quantizer`` field: errors become ``Invalid`` so the path gains ``model_args.``."""
    try:
        return parse_spec(value)
    except ConfigError as err:
        raise Invalid(str(err)) from None


def per_level(spec, levels: int, default: QuantizerSpec, path: str = "quantizer") -> list:
    """One spec per level: ``spec`` repeated, or its list (which must have one per level)."""
    if spec is None:
        return [default] * levels
    if not isinstance(spec, list):
        return [spec] * levels
    if len(spec) != levels:
        raise Invalid(f"{path}: {len(spec)} quantizers for {levels} levels; expected one, or one per level")
    return list(spec)


def fsq_levels(vocab_size: int) -> list:
    """FSQ levels (each in 3..8, as the FSQ paper recommends) whose product is closest to ``vocab_size``.

    Ties go to fewer channels, then to the most even levels: 4096 -> [8, 8, 8, 8], 512 -> [8, 8, 8].
    """
    best = None
    for count in range(1, 9):
        for levels in itertools.combinations_with_replacement(range(8, 2, -1), count):
            key = (abs(math.log(math.prod(levels) / vocab_size)), count, max(levels) - min(levels))
            if best is None or key < best[0]:
                best = (key, list(levels))
    return best[1]


def lfq_bits(vocab_size: int) -> int:
    return max(1, round(math.log2(vocab_size)))
