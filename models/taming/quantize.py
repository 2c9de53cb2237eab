"""Taming's two codebooks: one trained by gradient, one by exponential moving averages.

Both return upstream's triple ``(z_q, loss, (perplexity, min_encodings, indices))`` with
indices shaped ``(B, h, w)``; perplexity and one-hot encodings are left ``None`` (the
adapter derives perplexity from the indices, like every other family). Both can restart
dead codes; their running usage is kept outside the state dict (or, for the EMA codebook,
is its ``cluster_size``), so the checkpoint keys stay upstream's.
"""
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


def straight_through(z_q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Exactly ``z_q``'s values with ``z``'s gradient (``z - z.detach()`` is exactly zero).

    Upstream writes ``z + (z_q - z).detach()``, which is ``z_q`` only up to rounding; this
    form makes ``decode(encode(x))`` reproduce ``forward(x)`` bit for bit.
    """
    return z_q.detach() + (z - z.detach())


def to_image_layout(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B*h*w, D) -> (B, D, h, w)`` for a latent shaped like ``like``."""
    b, _, h, w = like.shape
    return rearrange(flat, "(b h w) d -> b d h w", b=b, h=h, w=w).contiguous()


class CodebookLookup(nn.Module):
    """Nearest-code search and lookup shared by both codebooks (they differ in how they learn)."""

    embedding: nn.Module  # callable on indices, with a ``weight`` of shape (V, D)

    @torch.no_grad()
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the closest code per row; in fp32 even under autocast, where bf16 distances tie."""
        with torch.autocast(device_type=flat.device.type, enabled=False):
            return l2_distances(flat.float(), self.embedding.weight.float()).argmin(dim=1)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, h, w)`` of latents ``(B, D, h, w)``; changes no state."""
        b, _, h, w = z.shape
        return self.nearest(flatten_channels_last(z)).view(b, h, w)

    def get_codebook_entry(self, indices: torch.Tensor, shape=None) -> torch.Tensor:
        """Code vectors of ``indices``; with ``shape`` ``(B, h, w, D)`` laid out as ``(B, D, h, w)``."""
        z_q = self.embedding(indices.reshape(-1))
        if shape is None:
            return z_q
        return rearrange(z_q.view(shape), "b h w d -> b d h w").contiguous()


class VectorQuantizer(CodebookLookup):
    """Nearest-neighbour codebook trained by gradient (upstream's ``VectorQuantizer2``).

    ``legacy=True`` (upstream's default, used by every release) weighs the commitment term
    1 and the codebook term ``beta``; ``legacy=False`` swaps them, as in the VQ-VAE paper.
    """

    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25, legacy: bool = True,
                 dead_code_threshold: float = 0.0, usage_decay: float = 0.99):
        super().__init__()
        self.n_e, self.e_dim, self.beta, self.legacy = n_e, e_dim, beta, legacy
        self.dead_code_threshold, self.usage_decay = dead_code_threshold, usage_decay
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)
        # Running count per code per batch, for dead-code restart; not a checkpoint key.
        self.register_buffer("code_usage", torch.ones(n_e), persistent=False)

    def forward(self, z: torch.Tensor):
        flat = flatten_channels_last(z)
        idx = self.nearest(flat)
        z_q = self.embedding(idx)
        commitment = F.mse_loss(flat, z_q.detach())
        codebook = F.mse_loss(z_q, flat.detach())
        loss = commitment + self.beta * codebook if self.legacy else self.beta * commitment + codebook
        if self.training and self.dead_code_threshold > 0:
            self._track_usage_and_restart(flat, idx)
        z_q = to_image_layout(straight_through(z_q, flat), z)
        return z_q, loss, (None, None, idx.view(z.shape[0], *z.shape[2:]))

    @torch.no_grad()
    def _track_usage_and_restart(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        counts = all_reduce_sum_(code_histogram(idx, self.n_e))
        ema_inplace(self.code_usage, counts, self.usage_decay)
        dead = self.code_usage < self.dead_code_threshold
        if restart_dead_codes(self.embedding.weight.data, self.code_usage, flat, self.dead_code_threshold):
            self.code_usage[dead] = self.dead_code_threshold


class EmbeddingEMA(nn.Module):
    """A codebook kept as running averages: ``weight = embed_avg / smoothed(cluster_size)``.

    The three tensors are buffers (no optimizer touches them) under upstream's names.
    ``cluster_size`` starts at one (upstream: zero) so that the relation above holds
    from the first step instead of inflating unused codes by 1/eps.
    """

    def __init__(self, num_tokens: int, codebook_dim: int, decay: float = 0.99, eps: float = 1e-5):
        super().__init__()
        self.decay, self.eps = decay, eps
        weight = torch.randn(num_tokens, codebook_dim)
        self.register_buffer("weight", weight)
        self.register_buffer("cluster_size", torch.ones(num_tokens))
        self.register_buffer("embed_avg", weight.clone())

    def forward(self, embed_id: torch.Tensor) -> torch.Tensor:
        return F.embedding(embed_id, self.weight)

    @torch.no_grad()
    def update(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """One EMA step from a batch's code ``counts`` ``(V,)`` and summed vectors ``sums`` ``(V, D)``."""
        ema_inplace(self.cluster_size, counts, self.decay)
        ema_inplace(self.embed_avg, sums, self.decay)
        smoothed = laplace_smoothing(self.cluster_size, self.cluster_size.numel(), self.eps)
        self.weight.copy_(self.embed_avg / smoothed.unsqueeze(1))


class EMAVectorQuantizer(CodebookLookup):
    """Codebook updated by EMA in training mode; only the commitment term is a loss.

    Upstream's class refers to undefined names and cannot be constructed; this one keeps
    its keys (``embedding.{weight,cluster_size,embed_avg}``) and trains. Batch statistics
    are summed over DDP ranks before the update so every rank keeps the same codebook.
    """

    def __init__(self, n_embed: int, embedding_dim: int, beta: float = 0.25, decay: float = 0.99,
                 eps: float = 1e-5, dead_code_threshold: float = 0.0):
        super().__init__()
        self.n_embed, self.embedding_dim, self.beta = n_embed, embedding_dim, beta
        self.dead_code_threshold = dead_code_threshold
        self.embedding = EmbeddingEMA(n_embed, embedding_dim, decay, eps)

    def forward(self, z: torch.Tensor):
        flat = flatten_channels_last(z)
        idx = self.nearest(flat)
        z_q = self.embedding(idx)
        if self.training:
            self._update_codebook(flat, idx)
        loss = self.beta * F.mse_loss(z_q, flat)  # z_q is a buffer lookup: no gradient to the codebook
        z_q = to_image_layout(straight_through(z_q, flat), z)
        return z_q, loss, (None, None, idx.view(z.shape[0], *z.shape[2:]))

    @torch.no_grad()
    def _update_codebook(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        flat = flat.detach().float()
        counts = all_reduce_sum_(code_histogram(idx, self.n_embed))
        sums = all_reduce_sum_(torch.zeros_like(self.embedding.embed_avg).index_add_(0, idx, flat))
        self.embedding.update(counts, sums)
        if self.dead_code_threshold > 0:
            dead = self.embedding.cluster_size < self.dead_code_threshold
            if restart_dead_codes(self.embedding.weight, self.embedding.cluster_size, flat, self.dead_code_threshold):
                # A restarted code starts as if it had just been seen `threshold` times at its new place.
                self.embedding.cluster_size[dead] = self.dead_code_threshold
                self.embedding.embed_avg[dead] = self.embedding.weight[dead] * self.dead_code_threshold
