"""One quantizer package for every model family.

``model_args.quantizer`` picks a quantizer by name or ``{"type": NAME, ...options}``
(``models.quantizers.spec``): ``vq`` (learned codebook, Taming's math), ``ema`` (EMA
codebook), ``sinkhorn`` (OptVQ), ``fsq``, ``lfq``, ``residual_vq``, ``simvq``. The last
four, the rotation trick and k-means are vector-quantize-pytorch's, wrapped; the
project keeps its own code only for Sinkhorn assignment and for the state-dict names of
its families and of Taming releases.

The contract (``models.quantizers.base.Quantizer``):

- ``forward(z)`` takes channel-first latents ``(b, dim, *spatial)`` with any number of
  spatial axes (``(h, w)`` frames, ``(t, h, w)`` video latents) and returns a
  ``QuantizerResult(quantized, loss, indices, stats)``: the quantized latents (fp32,
  also under autocast), the auxiliary loss, integer indices, and statistics
  (``perplexity``, ``codes_used``, ``restarts``) as device tensors, never read to the host.
- ``encode(z) -> indices`` never changes state; ``decode(indices) -> latents``.
- ``vocab_size`` is the size of the index alphabet; ``code_factors`` the mixed-radix
  digits an index splits into, ``index = sum(digit_i * prod(code_factors[:i]))`` (FSQ:
  its levels; LFQ: ``[2] * bits``; a codebook: ``[vocab_size]``), so an entropy coder can
  code a large alphabet digit by digit.
- Indices are ``(b, *spatial)``. Residual VQ (and Sinkhorn with several heads) has
  several indices per vector: ``(b, depth, *spatial)``, the depth axis right after the
  batch axis. ``decode`` of a residual VQ accepts the first ``n <= num_quantizers``
  levels, a lower rate; ``quantize_dropout`` trains the model for that.
- Codebooks that restart dead codes share one usage tracker and one rule
  (``models.quantizers.usage``), decided on the device and identical on every DDP rank;
  the usage they decide by is saved with the model, and files without it still load.
"""
from models.quantizers.base import Quantizer, QuantizerResult, optional_state_keys
from models.quantizers.build import FamilySettings, build_quantizer, build_quantizers
from models.quantizers.ema import VectorQuantizerEMA
from models.quantizers.learned import VectorQuantizer
from models.quantizers.library import FSQ, LFQ, ResidualVQ, SimVQ
from models.quantizers.optimal_transport import normalize_cost, sinkhorn
from models.quantizers.sinkhorn import SinkhornQuantizer
from models.quantizers.spec import NAMES, QuantizerSpec, fsq_levels, lfq_bits, parse_spec, per_level, spec_field

__all__ = [
    "Quantizer", "QuantizerResult", "optional_state_keys", "FamilySettings", "build_quantizer", "build_quantizers",
    "VectorQuantizer", "VectorQuantizerEMA", "SinkhornQuantizer", "FSQ", "LFQ", "ResidualVQ", "SimVQ",
    "normalize_cost", "sinkhorn", "NAMES", "QuantizerSpec", "fsq_levels", "lfq_bits", "parse_spec", "per_level",
    "spec_field",
]
