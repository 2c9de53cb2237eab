"""VQVAE2_OptVQ: the hierarchical VQ-VAE-2 whose codes are assigned by Sinkhorn optimal transport."""
from models.quantizers import SinkhornQuantizer, normalize_cost, sinkhorn
from models.vqvae2_optvq.vqvae import VQVAE

__all__ = ["VQVAE", "SinkhornQuantizer", "sinkhorn", "normalize_cost"]
