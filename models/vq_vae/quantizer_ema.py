"""Codebook updated by exponential moving averages of its assignments (VQ-VAE appendix, VQ-VAE-2)."""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models.codebook_utils import (
    all_reduce_sum_,
    code_histogram,
    ema_inplace,
    flatten_channels_last,
    l2_distances,
    laplace_smoothing,
    restart_dead_codes,
)


class VectorQuantizerEMA(nn.Module):
    """Nearest-code quantizer whose codes are EMA means of the encoder outputs assigned to them.

    The codebook and its statistics are buffers, not parameters: the optimizer never
    sees them. ``cluster_size`` (ones) and ``embed_avg`` (the codebook) start consistent,
    so the first update does not pull every code towards zero. Batch counts and sums
    are all-reduced across DDP ranks before the update, so every rank keeps the same
    codebook. Codes whose EMA cluster size falls below ``dead_code_threshold`` are
    restarted from this batch's encoder outputs (0 turns it off). The math runs in fp32
    even under autocast; only ``loss = commitment_cost * |z - sg(e)|^2`` reaches the encoder.
    """

    def __init__(self, vocab_size: int, dim: int, commitment_cost: float = 0.25, decay: float = 0.99,
                 dead_code_threshold: float = 1.0, eps: float = 1e-5):
        super().__init__()
        self.vocab_size = vocab_size
        self.commitment_cost = commitment_cost
        self.decay = decay
        self.dead_code_threshold = dead_code_threshold
        self.eps = eps
        # small codes near the origin, where a freshly initialised encoder's outputs lie
        codebook = torch.empty(vocab_size, dim).uniform_(-1 / vocab_size, 1 / vocab_size)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(vocab_size))
        self.register_buffer("embed_avg", codebook.clone())

    def forward(self, z: torch.Tensor):
        """``z`` ``(b, dim, h, w)`` -> ``(quantized, vq_loss, indices (b, h, w))``."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            flat = flatten_channels_last(z)
            indices = l2_distances(flat.detach(), self.codebook).argmin(dim=1)
            b, _, h, w = z.shape
            quantized = rearrange(F.embedding(indices, self.codebook), "(b h w) d -> b d h w", b=b, h=h, w=w)
            vq_loss = self.commitment_cost * F.mse_loss(z, quantized)
            if self.training and torch.is_grad_enabled():
                self._update(flat.detach(), indices)
            quantized = z + (quantized - z).detach()  # straight-through
        return quantized, vq_loss, rearrange(indices, "(b h w) -> b h w", b=b, h=h)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors ``(b, dim, h, w)`` of ``indices`` ``(b, h, w)``."""
        return rearrange(F.embedding(indices.long(), self.codebook), "b h w d -> b d h w")

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        counts = all_reduce_sum_(code_histogram(indices, self.vocab_size))
        sums = all_reduce_sum_(torch.zeros_like(self.embed_avg).index_add_(0, indices, flat))
        ema_inplace(self.cluster_size, counts, self.decay)
        ema_inplace(self.embed_avg, sums, self.decay)
        sizes = laplace_smoothing(self.cluster_size, self.vocab_size, self.eps)
        self.codebook.copy_(self.embed_avg / sizes[:, None])
        if self.dead_code_threshold > 0:
            dead = self.cluster_size < self.dead_code_threshold
            if restart_dead_codes(self.codebook, self.cluster_size, flat, self.dead_code_threshold):
                # restarted codes start as if just assigned dead_code_threshold vectors
                self.cluster_size[dead] = self.dead_code_threshold
                self.embed_avg[dead] = self.codebook[dead] * self.dead_code_threshold
