"""OptVQ's quantizer: codes assigned by optimal transport (Zhang et al. 2024, "Preventing Local
Pitfalls in Vector Quantization via Optimal Transport")."""
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models.codebook_utils import all_reduce_sum_, code_histogram, ema_inplace, restart_dead_codes
from models.vqvae2_optvq.sinkhorn import NORMALIZE_MODES, normalize_cost, sinkhorn

LOSS_TYPES = ("l2", "l1", "ce")


class SinkhornQuantizer(nn.Module):
    """Learnable codebook whose training-time assignment is a Sinkhorn transport plan.

    In training mode the vectors of the batch are matched to the codes by entropic
    optimal transport with uniform marginals (``epsilon`` the inverse temperature of
    ``exp(-cost * epsilon)``, ``n_iters`` Sinkhorn iterations on the distance matrix
    normalised by ``normalize_mode``); each vector takes its plan's most likely code
    (``use_prob``: a code sampled from its plan row). Every code is thus used, which is
    how OptVQ avoids dead codes. In eval mode and in ``nearest`` each vector takes its
    nearest code, so the indices of a frame never depend on the rest of the batch.

    The ``dim`` channels split into ``num_head`` heads of ``dim / num_head`` that share one
    codebook of ``nb_entries`` codes, seen through a learned linear map (``use_proj``).
    Loss: ``l2``/``l1``: ``commitment_cost * d(z, sg(e)) + beta * d(e, sg(z))`` (OptVQ
    uses commitment 1); ``ce``: cross-entropy of the negative distances towards the
    assigned codes. A running usage count (EMA with ``decay``, all-reduced across DDP
    ranks) restarts codes used fewer than ``dead_code_threshold`` times per batch
    (0: never). The math runs in fp32, also under autocast.

    Indices are ``(b, h, w)`` with one head, ``(b, num_head, h, w)`` with several.
    """

    def __init__(self, nb_entries: int, dim: int, decay: float = 0.99, commitment_cost: float = 1.0,
                 dead_code_threshold: float = 0.0, epsilon: float = 10.0, n_iters: int = 5,
                 normalize_mode: Literal["all", "dim", "null"] = "all", use_prob: bool = False,
                 num_head: int = 1, use_proj: bool = True, loss_q_type: Literal["l2", "l1", "ce"] = "l2",
                 beta: float = 0.25):
        super().__init__()
        if dim % num_head:
            raise ValueError(f"SinkhornQuantizer: dim {dim} is not divisible by num_head {num_head}")
        if loss_q_type not in LOSS_TYPES:
            raise ValueError(f"loss_q_type = {loss_q_type!r}: expected one of {', '.join(LOSS_TYPES)}")
        if normalize_mode not in NORMALIZE_MODES:
            raise ValueError(f"normalize_mode = {normalize_mode!r}: expected one of {', '.join(NORMALIZE_MODES)}")
        self.nb_entries = nb_entries
        self.num_head = num_head
        self.decay = decay
        self.commitment_cost = commitment_cost
        self.dead_code_threshold = dead_code_threshold
        self.epsilon = epsilon
        self.n_iters = n_iters
        self.normalize_mode = normalize_mode
        self.use_prob = use_prob
        self.loss_q_type = loss_q_type
        self.beta = beta
        code_dim = dim // num_head
        self.embedding = nn.Embedding(nb_entries, code_dim)
        self.proj = nn.Linear(code_dim, code_dim) if use_proj else None
        if use_proj:
            nn.init.normal_(self.proj.weight, std=code_dim**-0.5)
        self.register_buffer("usage", torch.ones(nb_entries))

    def codebook(self) -> torch.Tensor:
        """The codes ``(nb_entries, dim / num_head)`` as the vectors see them."""
        weight = self.embedding.weight
        return self.proj(weight) if self.proj is not None else weight

    def forward(self, z: torch.Tensor):
        """``z`` ``(b, dim, h, w)`` -> ``(quantized (fp32), loss, indices)``."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            flat = self._split_heads(z)
            if self.training and self.dead_code_threshold > 0:  # before the codebook enters the graph
                self._restart_dead_codes(flat.detach())
            codebook = self.codebook()
            distances = torch.cdist(flat, codebook)
            if self.training:
                indices = self._assign(distances.detach(), codebook.shape[1])
            else:
                indices = distances.detach().argmin(dim=1)
            codes = codebook[indices]
            loss = self._loss(flat, codes, distances, indices)
            if self.training:
                self._track_usage(indices)
            quantized = self._merge_heads(flat + (codes - flat).detach(), z.shape)  # straight-through
        return quantized, loss, self._shape_indices(indices, z.shape)

    @torch.no_grad()
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices of the nearest codes; never changes any state, never looks at the batch."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            indices = torch.cdist(self._split_heads(z.float()), self.codebook()).argmin(dim=1)
        return self._shape_indices(indices, z.shape)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors ``(b, dim, h, w)`` of ``indices`` (as ``forward`` returns them)."""
        if self.num_head == 1:
            indices = indices.unsqueeze(1)
        codes = F.embedding(indices.long(), self.codebook())
        return rearrange(codes, "b n h w d -> b (n d) h w")

    # -- pieces of forward ---------------------------------------------------------
    def _split_heads(self, z: torch.Tensor) -> torch.Tensor:
        return rearrange(z, "b (n d) h w -> (b h w n) d", n=self.num_head)

    def _merge_heads(self, flat: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        b, _, h, w = shape
        return rearrange(flat, "(b h w n) d -> b (n d) h w", b=b, h=h, w=w)

    def _shape_indices(self, indices: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        b, _, h, w = shape
        indices = rearrange(indices, "(b h w n) -> b n h w", b=b, h=h, w=w)
        return indices.squeeze(1) if self.num_head == 1 else indices

    @torch.no_grad()
    def _assign(self, distances: torch.Tensor, code_dim: int) -> torch.Tensor:
        plan = sinkhorn(normalize_cost(distances, self.normalize_mode, code_dim), self.n_iters, self.epsilon)
        if self.use_prob:
            return torch.multinomial(plan, num_samples=1).squeeze(1)
        return plan.argmax(dim=1)

    def _loss(self, flat, codes, distances, indices) -> torch.Tensor:
        if self.loss_q_type == "ce":
            return F.cross_entropy(-distances, indices)
        distance = F.mse_loss if self.loss_q_type == "l2" else F.l1_loss
        return self.commitment_cost * distance(flat, codes.detach()) + self.beta * distance(codes, flat.detach())

    @torch.no_grad()
    def _track_usage(self, indices: torch.Tensor) -> None:
        ema_inplace(self.usage, all_reduce_sum_(code_histogram(indices, self.nb_entries)), self.decay)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        dead = self.usage < self.dead_code_threshold
        codebook = self.codebook().clone()
        if restart_dead_codes(codebook, self.usage, flat, self.dead_code_threshold):
            # write the raw embedding so that its projection is the restarted code
            targets = codebook[dead]
            if self.proj is not None:
                targets = torch.linalg.solve(self.proj.weight, (targets - self.proj.bias).T).T
            self.embedding.weight[dead] = targets
            self.usage[dead] = self.dead_code_threshold
