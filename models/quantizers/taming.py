"""Taming's two codebooks under upstream's state-dict names (``quantize.embedding.*``).

vector-quantize-pytorch names its tensors differently (``_codebook.embed``), so official
taming-transformers releases could not load into it: these classes are this package's
``vq`` and ``ema`` with the codes kept where upstream keeps them. The running usage of
dead-code restarts is ``code_usage``, saved only when restarts are on (upstream has none).
"""
import torch
import torch.nn.functional as F
from torch import nn

from models.quantizers.ema import VectorQuantizerEMA
from models.quantizers.learned import VectorQuantizer as LearnedCodebook


class UpstreamLookups:
    """Upstream's public lookups, kept for code written against taming-transformers."""

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, h, w)`` of latents ``(B, D, h, w)``; changes no state."""
        return self.encode(z)

    def get_codebook_entry(self, indices: torch.Tensor, shape=None) -> torch.Tensor:
        """Code vectors of ``indices``; with ``shape`` ``(B, h, w, D)`` laid out as ``(B, D, h, w)``."""
        if shape is None:
            return self.embed(indices.reshape(-1))
        return self.decode(indices.reshape(shape[:-1]))


class VectorQuantizer(UpstreamLookups, LearnedCodebook):
    """Upstream's ``VectorQuantizer2``: ``legacy=True`` (every release) weighs the commitment
    term 1 and the codebook term ``beta``; ``legacy=False`` swaps them, as in the VQ-VAE paper."""

    statistics = ("code_usage",)
    usage_key = "code_usage"

    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25, legacy: bool = True,
                 dead_code_threshold: float = 0.0, usage_decay: float = 0.99, **options):
        commitment, codebook = (1.0, beta) if legacy else (beta, 1.0)
        super().__init__(n_e, e_dim, commitment_cost=commitment, codebook_weight=codebook,
                         dead_code_threshold=dead_code_threshold, usage_decay=usage_decay, **options)
        self.n_e, self.e_dim, self.beta, self.legacy = n_e, e_dim, beta, legacy

    def create_codebook(self, weight: torch.Tensor) -> None:
        self.embedding = nn.Embedding(*weight.shape)
        self.embedding.weight.data.copy_(weight)

    def codes(self) -> torch.Tensor:
        return self.embedding.weight


class EmbeddingEMA(nn.Module):
    """A codebook kept as running averages: ``weight = embed_avg / smoothed(cluster_size)``.

    The three tensors are buffers under upstream's names. ``cluster_size`` starts at one
    (upstream: zero) so that the relation above holds from the first step.
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


class EMAVectorQuantizer(UpstreamLookups, VectorQuantizerEMA):
    """Codebook updated by EMA in training mode; only ``beta`` times the commitment term is a loss.

    Upstream's class refers to undefined names and cannot be constructed; this one keeps
    its keys (``embedding.{weight,cluster_size,embed_avg}``) and trains. As upstream, the
    codes start random, not from data.
    """

    statistics = ("code_usage",)
    usage_key = "code_usage"

    def __init__(self, n_embed: int, embedding_dim: int, beta: float = 0.25, decay: float = 0.99,
                 eps: float = 1e-5, dead_code_threshold: float = 0.0, **options):
        self._decay_eps = (decay, eps)
        super().__init__(n_embed, embedding_dim, commitment_cost=beta, decay=decay, eps=eps,
                         dead_code_threshold=dead_code_threshold, init_from_data=False, **options)
        self.n_embed, self.embedding_dim, self.beta = n_embed, embedding_dim, beta

    def create_state(self, weight: torch.Tensor) -> None:
        self.embedding = EmbeddingEMA(*weight.shape, *self._decay_eps)
        self.embedding.weight.copy_(weight)
        self.embedding.embed_avg.copy_(weight)

    def state_tensors(self) -> tuple:
        return self.embedding.weight, self.embedding.cluster_size, self.embedding.embed_avg
