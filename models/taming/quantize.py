"""Taming's codebook classes under their upstream module path (they live in ``models.quantizers.taming``)."""
from models.quantizers.taming import EMAVectorQuantizer, EmbeddingEMA, VectorQuantizer

__all__ = ["VectorQuantizer", "EMAVectorQuantizer", "EmbeddingEMA"]
