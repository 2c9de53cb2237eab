"""``ema``: a codebook learned by exponential moving averages of its assignments (VQ-VAE appendix, VQ-VAE-2)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch.vector_quantize_pytorch import rotate_to

from models.quantizers.base import Quantizer
from core.distributed import all_reduce_sum_
from models.quantizers.functional import ema_inplace, l2_distances, l2norm, laplace_smoothing, straight_through
from models.quantizers.initialization import InitFromData
from models.quantizers.usage import global_counts, initial_usage, restart_dead_codes, update_usage_, write_rows_


class VectorQuantizerEMA(InitFromData, Quantizer):
    """Nearest-code quantizer whose codes are running means of the vectors assigned to them.

    The codebook ``(vocab_size, dim)`` and its statistics are buffers: the optimizer never
    sees them, and only ``commitment_cost * |z - sg(e)|^2`` reaches the encoder. With
    ``init_from_data`` the codes start as vectors of the first training batch (rank 0's,
    or k-means on it with ``kmeans_init``): a random codebook far from the encoder's
    outputs would code them all with one code. ``cluster_size`` starts at ones and
    ``embed_avg`` at the codebook, as if every code had been assigned itself once.
    Batch counts and sums are all-reduced across DDP ranks before the update. Dead codes
    restart by the package's one rule (``models.quantizers.usage``); a restarted code
    starts with the cluster size of an average code.
    """

    statistics = ("usage",)
    usage_key = "usage"

    def __init__(self, vocab_size: int, dim: int, commitment_cost: float = 0.25, decay: float = 0.99,
                 dead_code_threshold: float = 0.0, eps: float = 1e-5, init_from_data: bool = True,
                 kmeans_init: bool = False, l2_normalize: bool = False, codebook_dim: Optional[int] = None,
                 rotation_trick: bool = False):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        self.commitment_cost, self.decay, self.eps = commitment_cost, decay, eps
        self.dead_code_threshold = dead_code_threshold
        self.kmeans_init, self.l2_normalize, self.rotation_trick = kmeans_init, l2_normalize, rotation_trick
        code_dim = codebook_dim or dim
        self.create_state(torch.randn(vocab_size, code_dim))
        self.setup_data_init(init_from_data or kmeans_init)
        if dead_code_threshold > 0:  # a statistic that decides restarts: saved with the model
            self.register_buffer(self.usage_key, initial_usage(vocab_size, dead_code_threshold))
        self.project_in = nn.Linear(dim, code_dim) if codebook_dim else None
        self.project_out = nn.Linear(code_dim, dim) if codebook_dim else None

    def describe(self) -> str:
        return (f"ema(vocab_size={self.vocab_size}, dim={self.dim}, commitment_cost={self.commitment_cost}, "
                f"decay={self.decay}, dead_code_threshold={self.dead_code_threshold}, kmeans_init={self.kmeans_init}, "
                f"l2_normalize={self.l2_normalize}, rotation_trick={self.rotation_trick}, "
                f"codebook_dim={self.project_in.out_features if self.project_in else None})")

    # -- where the statistics live (Taming keeps them under ``embedding.``) -------------
    def create_state(self, weight: torch.Tensor) -> None:
        self.register_buffer("codebook", weight)
        self.register_buffer("cluster_size", torch.ones(weight.shape[0]))
        self.register_buffer("embed_avg", weight.clone())

    def state_tensors(self) -> tuple:
        """``(codebook, cluster_size, embed_avg)``."""
        return self.codebook, self.cluster_size, self.embed_avg

    def set_initial_codes(self, codes: torch.Tensor) -> None:
        codebook, _, embed_avg = self.state_tensors()
        codebook.copy_(codes)
        embed_avg.copy_(codes)

    # -- the contract ------------------------------------------------------------------
    def quantize_rows(self, rows, updating):
        x = self.project_in(rows) if self.project_in is not None else rows
        if self.l2_normalize:
            x = l2norm(x)
        if updating:
            self.maybe_initialize(x.detach(), use_kmeans=self.kmeans_init, cosine=self.l2_normalize)
        indices = self._nearest(x.detach())
        quantized = F.embedding(indices, self.state_tensors()[0])
        restarts = torch.zeros((), device=rows.device)
        if updating:  # after the lookup: this batch is coded with the codebook it was assigned to
            restarts = self._update(x.detach(), indices)
        loss = self.commitment_cost * F.mse_loss(x, quantized)  # a buffer lookup: no gradient to the codes
        quantized = rotate_to(x, quantized) if self.rotation_trick else straight_through(quantized, x)
        if self.project_out is not None:
            quantized = self.project_out(quantized)
        return quantized, loss, indices, {"restarts": restarts}

    @torch.no_grad()
    def assign(self, rows):
        x = self.project_in(rows) if self.project_in is not None else rows
        return self._nearest(l2norm(x) if self.l2_normalize else x)

    def embed(self, indices):
        vectors = F.embedding(indices.long(), self.state_tensors()[0])
        return self.project_out(vectors) if self.project_out is not None else vectors

    @torch.no_grad()
    def _nearest(self, x: torch.Tensor) -> torch.Tensor:
        return l2_distances(x, self.state_tensors()[0]).argmin(dim=1)

    @torch.no_grad()
    def _update(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        codebook, cluster_size, embed_avg = self.state_tensors()
        counts = global_counts(indices, self.vocab_size)
        sums = all_reduce_sum_(torch.zeros_like(embed_avg).index_add_(0, indices, x))
        ema_inplace(cluster_size, counts, self.decay)
        ema_inplace(embed_avg, sums, self.decay)
        sizes = laplace_smoothing(cluster_size, self.vocab_size, self.eps)
        means = embed_avg / sizes[:, None]
        codebook.copy_(l2norm(means) if self.l2_normalize else means)
        if self.dead_code_threshold <= 0:
            return torch.zeros((), device=x.device)
        usage = self._buffers[self.usage_key]
        update_usage_(usage, counts, self.decay)
        restart = restart_dead_codes(usage, x, self.dead_code_threshold)
        average_size = cluster_size.mean().expand_as(cluster_size)
        write_rows_(codebook, restart.codes, restart.vectors)
        write_rows_(embed_avg, restart.codes, restart.vectors * average_size[:, None])
        write_rows_(cluster_size, restart.codes, average_size)
        return restart.codes.sum().float()
