"""Build a quantizer from a resolved spec and the family's own settings."""
import logging
from typing import Optional

import attrs

from models.quantizers.base import Quantizer
from models.quantizers.ema import VectorQuantizerEMA
from models.quantizers.learned import VectorQuantizer
from models.quantizers.library import FSQ, LFQ, ResidualVQ, SimVQ
from models.quantizers.sinkhorn import SinkhornQuantizer
from models.quantizers.spec import QuantizerSpec, fsq_levels, lfq_bits
from models.quantizers.taming import EMAVectorQuantizer
from models.quantizers.taming import VectorQuantizer as TamingVectorQuantizer

logger = logging.getLogger(__name__)


@attrs.frozen
class FamilySettings:
    """What a family's ``model_args`` say about quantizing, whichever quantizer is chosen."""

    commitment_cost: float = 0.25
    decay: float = 0.99
    dead_code_threshold: float = 0.0
    sinkhorn: dict = attrs.field(factory=dict)  # SinkhornQuantizer's options (OptVQ's model_args)
    taming: Optional[dict] = None  # {"beta", "legacy"}: vq/ema under upstream's names


def _pick(value, default):
    return default if value is None else value


def build_quantizer(spec: QuantizerSpec, dim: int, vocab_size: int, family: FamilySettings) -> Quantizer:
    """The quantizer ``spec`` names, for latents of ``dim`` channels; unset options from ``vocab_size`` and ``family``."""
    commitment = _pick(spec.commitment_loss_weight, family.commitment_cost)
    threshold = _pick(spec.dead_code_threshold, family.dead_code_threshold)
    codebook = dict(rotation_trick=bool(spec.rotation_trick), l2_normalize=bool(spec.l2_normalize),
                    codebook_dim=spec.codebook_dim, kmeans_init=bool(spec.kmeans_init))
    kind = spec.type
    if kind == "vq" and family.taming is not None:
        beta = _pick(spec.commitment_loss_weight, family.taming["beta"])
        return TamingVectorQuantizer(vocab_size, dim, beta=beta, legacy=family.taming["legacy"],
                                     dead_code_threshold=threshold, **codebook)
    if kind == "vq":
        return VectorQuantizer(vocab_size, dim, commitment_cost=commitment, dead_code_threshold=threshold, **codebook)
    if kind == "ema" and family.taming is not None:
        beta = _pick(spec.commitment_loss_weight, family.taming["beta"])
        return EMAVectorQuantizer(vocab_size, dim, beta=beta, decay=family.decay, dead_code_threshold=threshold,
                                  **codebook)
    if kind == "ema":
        return VectorQuantizerEMA(vocab_size, dim, commitment_cost=commitment, decay=family.decay,
                                  dead_code_threshold=threshold, **codebook)
    if kind == "sinkhorn":
        return SinkhornQuantizer(vocab_size, dim, decay=family.decay, commitment_cost=commitment,
                                 dead_code_threshold=threshold, **family.sinkhorn)
    if kind == "fsq":
        return FSQ(dim, spec.levels or fsq_levels(vocab_size))
    if kind == "lfq":
        return LFQ(dim, lfq_bits(vocab_size), entropy_loss_weight=_pick(spec.entropy_loss_weight, 0.1),
                   commitment_loss_weight=_pick(spec.commitment_loss_weight, 0.25),
                   spherical=_pick(spec.spherical, True))
    if kind == "residual_vq":
        return ResidualVQ(dim, vocab_size, num_quantizers=_pick(spec.num_quantizers, 4),
                          quantize_dropout=bool(spec.quantize_dropout), commitment_cost=commitment,
                          decay=family.decay, **codebook)
    if kind == "simvq":
        return SimVQ(dim, vocab_size, rotation_trick=_pick(spec.rotation_trick, True), commitment_cost=commitment)
    raise ValueError(f"unknown quantizer type {kind!r}")


def build_quantizers(specs: list, dim: int, vocab_size: int, family: FamilySettings) -> list:
    """One quantizer per spec (per level); the resolved options are logged once."""
    quantizers = [build_quantizer(spec, dim, vocab_size, family) for spec in specs]
    for level, description in enumerate(q.describe() for q in quantizers):
        logger.info("quantizer%s: %s", f" level {level}" if len(quantizers) > 1 else "", description)
    return quantizers
