"""Codebook learned by exponential moving averages of its assignments (VQ-VAE appendix, VQ-VAE-2)."""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models.codebook_utils import (
    all_reduce_sum_,
    broadcast_,
    code_histogram,
    ema_inplace,
    flatten_channels_last,
    l2_distances,
    laplace_smoothing,
    restart_dead_codes,
    sample_vectors,
)


class VectorQuantizerEMA(nn.Module):
    """Nearest-code quantizer whose codes are running means of the vectors assigned to them.

    The codebook ``(vocab_size, dim)`` and its statistics are buffers: the optimizer
    never sees them, and only ``commitment_cost * |z - sg(e)|^2`` reaches the encoder.
    The codes start as vectors of the first training batch (rank 0's under DDP): a
    random codebook far from the encoder's outputs would code them all with one code.
    ``cluster_size`` starts at ones and ``embed_avg`` at the codebook, as if every code
    had been assigned itself once, so the first updates do not pull the codes to zero.
    Batch counts and sums are all-reduced across DDP ranks before the update, so every
    rank keeps the same codebook. Codes whose running cluster size falls below
    ``dead_code_threshold`` are restarted from this batch's vectors (0: never).
    The math runs in fp32, also under autocast.

    Only a training-mode forward with autograd on changes state; ``nearest`` never does.
    ``forward(z) -> (quantized, loss, indices)``, ``nearest(z) -> indices`` and
    ``lookup(indices) -> vectors`` are the interface every level quantizer of
    ``models.vqvae2.VQVAE`` shares.
    """

    def __init__(self, vocab_size: int, dim: int, commitment_cost: float = 0.25, decay: float = 0.99,
                 dead_code_threshold: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.vocab_size = vocab_size
        self.commitment_cost = commitment_cost
        self.decay = decay
        self.dead_code_threshold = dead_code_threshold
        self.eps = eps
        codebook = torch.randn(vocab_size, dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(vocab_size))
        self.register_buffer("embed_avg", codebook.clone())
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, z: torch.Tensor):
        """``z`` ``(b, dim, h, w)`` -> ``(quantized (fp32), loss, indices (b, h, w))``."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            flat = flatten_channels_last(z.detach())
            updating = self.training and torch.is_grad_enabled()  # encoding under no_grad stays pure
            if updating and not self.initialized:
                self._initialize(flat)
            indices = self.nearest(z)
            quantized = self.lookup(indices)
            if updating:  # after the lookup: this batch is coded with the codebook it was assigned to
                self._update(flat, indices.flatten())
            loss = self.commitment_cost * F.mse_loss(z, quantized)
            quantized = z + (quantized - z).detach()  # straight-through gradient to the encoder
        return quantized, loss, indices

    @torch.no_grad()
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices ``(b, h, w)`` of the nearest codes; never changes any state."""
        b, _, h, w = z.shape
        indices = l2_distances(flatten_channels_last(z.float()), self.codebook).argmin(dim=1)
        return rearrange(indices, "(b h w) -> b h w", b=b, h=h, w=w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors ``(b, dim, h, w)`` of ``indices`` ``(b, h, w)``."""
        return rearrange(F.embedding(indices.long(), self.codebook), "b h w d -> b d h w")

    @torch.no_grad()
    def _initialize(self, flat: torch.Tensor) -> None:
        self.codebook.copy_(broadcast_(sample_vectors(flat, self.vocab_size)))
        self.embed_avg.copy_(self.codebook)
        self.initialized.fill_(True)

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
                # a restarted code starts as if just assigned dead_code_threshold vectors
                self.cluster_size[dead] = self.dead_code_threshold
                self.embed_avg[dead] = self.codebook[dead] * self.dead_code_threshold
