"""VqVae2: a DALL-E style per-frame encoder whose clips are folded into one code map."""
from models.quantizers import VectorQuantizer, VectorQuantizerEMA
from models.vq_vae.vq_vae import VqVae2

__all__ = ["VqVae2", "VectorQuantizer", "VectorQuantizerEMA"]
