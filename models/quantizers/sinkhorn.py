"""``sinkhorn``: OptVQ's quantizer, codes assigned by optimal transport (Zhang et al. 2024,
"Preventing Local Pitfalls in Vector Quantization via Optimal Transport").

vector-quantize-pytorch has no Sinkhorn assignment, so this is the project's own code.
"""
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models.quantizers.base import Quantizer
from models.quantizers.optimal_transport import NORMALIZE_MODES, normalize_cost, sinkhorn
from models.quantizers.usage import global_counts, initial_usage, restart_dead_codes, update_usage_, write_rows_

LOSS_TYPES = ("l2", "l1", "ce")


class SinkhornQuantizer(Quantizer):
    """Learnable codebook whose assignment is a Sinkhorn transport plan, in training and inference alike.

    The vectors of a batch are matched to the codes by entropic optimal transport with
    uniform marginals (``epsilon`` the inverse temperature of ``exp(-cost * epsilon)``,
    ``n_iters`` Sinkhorn iterations on the distance matrix normalised by
    ``normalize_mode``); each vector takes its plan's most likely code. Every code is thus
    used, which is how OptVQ avoids dead codes. As upstream OptVQ, ``encode`` and eval use
    the same rule as training, so validation, codebook usage and the codec see the codes
    the model was trained with; the plan is solved over the vectors given (a clip, a
    batch), over all DDP ranks only in training. ``use_prob`` samples each training code
    from its plan row instead (inference keeps the argmax, so ``encode`` is deterministic).

    The ``dim`` channels split into ``num_head`` heads of ``dim / num_head`` that share one
    codebook of ``nb_entries`` codes, seen through a learned linear map (``use_proj``).
    Loss: ``l2``/``l1``: ``commitment_cost * d(z, sg(e)) + beta * d(e, sg(z))`` (OptVQ
    uses commitment 1); ``ce``: cross-entropy of the negative distances towards the
    assigned codes. Dead codes restart by the package's one rule (``models.quantizers.usage``,
    off by default: optimal transport already spreads the codes). Indices are
    ``(b, *spatial)`` with one head, ``(b, num_head, *spatial)`` with several.
    """

    statistics = ("usage",)

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
        self.nb_entries = self.vocab_size = nb_entries
        self.num_head = self.index_depth = num_head
        self.decay, self.commitment_cost, self.beta = decay, commitment_cost, beta
        self.dead_code_threshold = dead_code_threshold
        self.epsilon, self.n_iters, self.normalize_mode = epsilon, n_iters, normalize_mode
        self.use_prob, self.loss_q_type = use_prob, loss_q_type
        code_dim = dim // num_head
        self.embedding = nn.Embedding(nb_entries, code_dim)
        self.proj = nn.Linear(code_dim, code_dim) if use_proj else None
        if use_proj:
            nn.init.normal_(self.proj.weight, std=code_dim**-0.5)
        self.register_buffer("usage", initial_usage(nb_entries, dead_code_threshold))

    def describe(self) -> str:
        return (f"sinkhorn(vocab_size={self.vocab_size}, heads={self.num_head}, epsilon={self.epsilon}, "
                f"n_iters={self.n_iters}, normalize_mode={self.normalize_mode}, use_prob={self.use_prob}, "
                f"use_proj={self.proj is not None}, loss_q_type={self.loss_q_type}, beta={self.beta}, "
                f"commitment_cost={self.commitment_cost}, dead_code_threshold={self.dead_code_threshold})")

    def codebook(self) -> torch.Tensor:
        """The codes ``(nb_entries, dim / num_head)`` as the vectors see them."""
        weight = self.embedding.weight
        return self.proj(weight) if self.proj is not None else weight

    # -- the contract ------------------------------------------------------------------
    def quantize_rows(self, rows, updating):
        flat = self._split_heads(rows)
        restarts = torch.zeros((), device=rows.device)
        if updating and self.dead_code_threshold > 0:  # before the codebook enters the graph
            restarts = self._restart_dead_codes(flat.detach())
        codebook = self.codebook()
        distances = torch.cdist(flat, codebook)
        indices = self._assign(distances.detach(), codebook.shape[1], training=updating)
        codes = codebook[indices]
        loss = self._loss(flat, codes, distances, indices)
        if updating and self.dead_code_threshold > 0:
            update_usage_(self.usage, global_counts(indices, self.nb_entries), self.decay)
        quantized = self._merge_heads(flat + (codes - flat).detach())  # straight-through
        return quantized, loss, self._head_indices(indices), {"restarts": restarts}

    @torch.no_grad()
    def assign(self, rows):
        flat = self._split_heads(rows)
        codebook = self.codebook()
        return self._head_indices(self._assign(torch.cdist(flat, codebook), codebook.shape[1], training=False))

    def embed(self, indices):
        heads = indices if indices.ndim == 2 else indices[:, None]
        return rearrange(F.embedding(heads.long(), self.codebook()), "n h d -> n (h d)")

    # -- pieces ------------------------------------------------------------------------
    def _split_heads(self, rows: torch.Tensor) -> torch.Tensor:
        return rearrange(rows, "n (h d) -> (n h) d", h=self.num_head)

    def _merge_heads(self, flat: torch.Tensor) -> torch.Tensor:
        return rearrange(flat, "(n h) d -> n (h d)", h=self.num_head)

    def _head_indices(self, indices: torch.Tensor) -> torch.Tensor:
        indices = rearrange(indices, "(n h) -> n h", h=self.num_head)
        return indices[:, 0] if self.num_head == 1 else indices

    @torch.no_grad()
    def _assign(self, distances: torch.Tensor, code_dim: int, training: bool) -> torch.Tensor:
        cost = normalize_cost(distances, self.normalize_mode, code_dim, distributed=training)
        plan = sinkhorn(cost, self.n_iters, self.epsilon, distributed=training)
        if self.use_prob and training:
            return torch.multinomial(plan, num_samples=1).squeeze(1)
        return plan.argmax(dim=1)

    def _loss(self, flat, codes, distances, indices) -> torch.Tensor:
        if self.loss_q_type == "ce":
            return F.cross_entropy(-distances, indices)
        distance = F.mse_loss if self.loss_q_type == "l2" else F.l1_loss
        return self.commitment_cost * distance(flat, codes.detach()) + self.beta * distance(codes, flat.detach())

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> torch.Tensor:
        restart = restart_dead_codes(self.usage, flat, self.dead_code_threshold)
        targets = restart.vectors
        if self.proj is not None:  # write the raw embedding so that its projection is the restarted code
            targets = torch.linalg.solve(self.proj.weight, (targets - self.proj.bias).T).T
        write_rows_(self.embedding.weight, restart.codes, targets)
        return restart.codes.sum().float()
