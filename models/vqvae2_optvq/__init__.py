"""VQVAE2_OptVQ: the hierarchical VQ-VAE-2 whose codes are assigned by Sinkhorn optimal transport."""
from models.vqvae2_optvq.quantizer_sinkhorn import SinkhornQuantizer
from models.vqvae2_optvq.sinkhorn import normalize_cost, sinkhorn
from models.vqvae2_optvq.vqvae import VQVAE

__all__ = ["VQVAE", "SinkhornQuantizer", "sinkhorn", "normalize_cost"]
