"""VQVAE2: the hierarchical VQ-VAE-2 (one EMA codebook per level, top-down decoding)."""
from models.quantizers import VectorQuantizerEMA
from models.vqvae2.vqvae import VQVAE

__all__ = ["VQVAE", "VectorQuantizerEMA"]
