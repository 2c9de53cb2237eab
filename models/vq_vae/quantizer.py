"""Learned codebook trained by the VQ-VAE codebook loss, with a straight-through gradient."""
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
    restart_dead_codes,
)


class VectorQuantizer(nn.Module):
    """Nearest-code quantizer whose codebook is a parameter (van den Oord et al. 2017).

    ``vq_loss = |sg(z) - e|^2 + commitment_cost * |z - sg(e)|^2``. A running usage count
    (an EMA of the codes' per-batch counts, all-reduced across DDP ranks) lets codes used
    less than ``dead_code_threshold`` times per batch be restarted from this batch's
    encoder outputs; 0 turns restarts off. The math runs in fp32 even under autocast.
    """

    def __init__(self, vocab_size: int, dim: int, commitment_cost: float = 0.25,
                 dead_code_threshold: float = 1.0, usage_decay: float = 0.99):
        super().__init__()
        self.vocab_size = vocab_size
        self.commitment_cost = commitment_cost
        self.dead_code_threshold = dead_code_threshold
        self.usage_decay = usage_decay
        # small codes near the origin, where a freshly initialised encoder's outputs lie
        self.codebook = nn.Parameter(torch.empty(vocab_size, dim).uniform_(-1 / vocab_size, 1 / vocab_size))
        # starts at one use per batch, so codes the first batches never pick are restarted
        self.register_buffer("usage", torch.ones(vocab_size))

    def forward(self, z: torch.Tensor):
        """``z`` ``(b, dim, h, w)`` -> ``(quantized, vq_loss, indices (b, h, w))``."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            flat = flatten_channels_last(z)
            with torch.no_grad():
                indices = l2_distances(flat, self.codebook).argmin(dim=1)
            b, _, h, w = z.shape
            quantized = rearrange(F.embedding(indices, self.codebook), "(b h w) d -> b d h w", b=b, h=h, w=w)
            vq_loss = F.mse_loss(quantized, z.detach()) + self.commitment_cost * F.mse_loss(z, quantized.detach())
            if self.training and torch.is_grad_enabled():
                self._track_usage(flat.detach(), indices)
            quantized = z + (quantized - z).detach()  # straight-through
        return quantized, vq_loss, rearrange(indices, "(b h w) -> b h w", b=b, h=h)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors ``(b, dim, h, w)`` of ``indices`` ``(b, h, w)``."""
        return rearrange(F.embedding(indices.long(), self.codebook), "b h w d -> b d h w")

    @torch.no_grad()
    def _track_usage(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        counts = all_reduce_sum_(code_histogram(indices, self.vocab_size))
        ema_inplace(self.usage, counts, self.usage_decay)
        if self.dead_code_threshold > 0:
            dead = self.usage < self.dead_code_threshold
            if restart_dead_codes(self.codebook.data, self.usage, flat, self.dead_code_threshold):
                self.usage[dead] = self.dead_code_threshold  # one batch of grace
