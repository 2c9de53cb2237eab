"""``vq``: a codebook learned by gradient (van den Oord et al. 2017; Taming's math)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch.vector_quantize_pytorch import rotate_to

from models.quantizers.base import Quantizer
from models.quantizers.functional import l2_distances, l2norm, straight_through
from models.quantizers.initialization import InitFromData
from models.quantizers.usage import global_counts, initial_usage, restart_dead_codes, update_usage_, write_rows_


class VectorQuantizer(InitFromData, Quantizer):
    """Nearest-code quantizer whose codebook is a parameter.

    ``loss = codebook_weight * |sg(z) - e|^2 + commitment_cost * |z - sg(e)|^2`` (VQ-VAE:
    1 and ``commitment_cost``; Taming's legacy weighting: ``beta`` and 1). Options:
    ``rotation_trick`` (gradient through the quantizer by rotation, Fifty et al. 2024,
    vector-quantize-pytorch's ``rotate_to``), ``l2_normalize`` (cosine codebook: vectors and
    codes on the unit sphere), ``codebook_dim`` (look up in a learned low-dimensional
    projection), ``kmeans_init`` (codes from k-means on the first training batch).
    Dead codes restart by the package's one rule (``models.quantizers.usage``).
    """

    statistics = ("usage",)
    usage_key = "usage"

    def __init__(self, vocab_size: int, dim: int, commitment_cost: float = 0.25, dead_code_threshold: float = 1.0,
                 usage_decay: float = 0.99, codebook_weight: float = 1.0, rotation_trick: bool = False,
                 l2_normalize: bool = False, codebook_dim: Optional[int] = None, kmeans_init: bool = False):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        self.commitment_cost, self.codebook_weight = commitment_cost, codebook_weight
        self.dead_code_threshold, self.usage_decay = dead_code_threshold, usage_decay
        self.rotation_trick, self.l2_normalize, self.kmeans_init = rotation_trick, l2_normalize, kmeans_init
        code_dim = codebook_dim or dim
        # small codes near the origin, where a freshly initialised encoder's outputs lie
        self.create_codebook(torch.empty(vocab_size, code_dim).uniform_(-1 / vocab_size, 1 / vocab_size))
        if dead_code_threshold > 0:  # a statistic that decides restarts: saved with the model
            self.register_buffer(self.usage_key, initial_usage(vocab_size, dead_code_threshold))
        self.project_in = nn.Linear(dim, code_dim) if codebook_dim else None
        self.project_out = nn.Linear(code_dim, dim) if codebook_dim else None
        self.setup_data_init(kmeans_init)

    def describe(self) -> str:
        return (f"vq(vocab_size={self.vocab_size}, dim={self.dim}, commitment_cost={self.commitment_cost}, "
                f"codebook_weight={self.codebook_weight}, dead_code_threshold={self.dead_code_threshold}, "
                f"rotation_trick={self.rotation_trick}, l2_normalize={self.l2_normalize}, "
                f"codebook_dim={self.project_in.out_features if self.project_in else None}, kmeans_init={self.kmeans_init})")

    # -- where the codes live (Taming keeps them in ``embedding.weight``) --------------
    def create_codebook(self, weight: torch.Tensor) -> None:
        self.codebook = nn.Parameter(weight)

    def codes(self) -> torch.Tensor:
        return self.codebook

    def set_initial_codes(self, codes: torch.Tensor) -> None:
        self.codes().data.copy_(codes)

    # -- the contract ------------------------------------------------------------------
    def quantize_rows(self, rows, updating):
        x = self.project_in(rows) if self.project_in is not None else rows
        if updating:
            self.maybe_initialize(x.detach(), use_kmeans=True, cosine=self.l2_normalize)
        codes = self.codes()
        if self.l2_normalize:
            x, codes = l2norm(x), l2norm(codes)
        with torch.no_grad():
            indices = l2_distances(x, codes).argmin(dim=1)
        quantized = F.embedding(indices, codes)
        loss = (self.codebook_weight * F.mse_loss(quantized, x.detach())
                + self.commitment_cost * F.mse_loss(x, quantized.detach()))
        restarts = torch.zeros((), device=rows.device)
        if updating and self.dead_code_threshold > 0:
            restarts = self._track_and_restart(x.detach(), indices)
        quantized = rotate_to(x, quantized) if self.rotation_trick else straight_through(quantized, x)
        if self.project_out is not None:
            quantized = self.project_out(quantized)
        return quantized, loss, indices, {"restarts": restarts}

    @torch.no_grad()
    def assign(self, rows):
        x = self.project_in(rows) if self.project_in is not None else rows
        codes = self.codes()
        if self.l2_normalize:
            x, codes = l2norm(x), l2norm(codes)
        return l2_distances(x, codes).argmin(dim=1)

    def embed(self, indices):
        codes = self.codes()
        vectors = F.embedding(indices.long(), l2norm(codes) if self.l2_normalize else codes)
        return self.project_out(vectors) if self.project_out is not None else vectors

    @torch.no_grad()
    def _track_and_restart(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        usage = self._buffers[self.usage_key]
        update_usage_(usage, global_counts(indices, self.vocab_size), self.usage_decay)
        restart = restart_dead_codes(usage, x, self.dead_code_threshold)
        write_rows_(self.codes(), restart.codes, restart.vectors)
        return restart.codes.sum().float()
