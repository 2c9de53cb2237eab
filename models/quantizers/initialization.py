"""Codebooks that start from data: the first training batch's vectors, or k-means on them.

k-means is vector-quantize-pytorch's own (``kmeans``), given this package's DDP hooks:
its starting codes are rank 0's sample broadcast, its counts and means all-reduced, so
every rank starts from the same codebook.
"""
import abc

import torch
from vector_quantize_pytorch.vector_quantize_pytorch import batched_sample_vectors, kmeans

from core.distributed import all_reduce_sum_, broadcast_
from models.quantizers.functional import sample_rows

KMEANS_ITERS = 10


@torch.no_grad()
def initial_codes(vectors: torch.Tensor, vocab_size: int, use_kmeans: bool, cosine: bool = False) -> torch.Tensor:
    """``vocab_size`` codes ``(K, D)`` for ``vectors`` ``(N, D)``, identical on every rank."""
    if not use_kmeans:
        return broadcast_(sample_rows(vectors.float(), vocab_size).contiguous())
    means, _ = kmeans(vectors.float()[None], vocab_size, KMEANS_ITERS, use_cosine_sim=cosine,
                      sample_fn=lambda samples, num: broadcast_(batched_sample_vectors(samples, num).contiguous()),
                      all_reduce_fn=all_reduce_sum_)
    return means[0]


class InitFromData(abc.ABC):
    """Mixin: the codebook starts from the first training batch (``initialized`` says it did).

    Whether that happened is kept on the Python side too, so that a training step reads
    the ``initialized`` buffer only until the codebook is initialised, never afterwards.
    """

    def setup_data_init(self, enabled: bool) -> None:
        self.init_from_data = enabled
        self._init_pending = enabled
        if enabled:
            self.register_buffer("initialized", torch.tensor(False))

    def maybe_initialize(self, vectors: torch.Tensor, use_kmeans: bool, cosine: bool = False) -> None:
        if not self._init_pending:
            return
        self._init_pending = False
        if bool(self.initialized):  # the one host read: on the first step, or the first after a load
            return
        self.set_initial_codes(initial_codes(vectors, self.vocab_size, use_kmeans, cosine))
        self.initialized.fill_(True)

    @abc.abstractmethod
    def set_initial_codes(self, codes: torch.Tensor) -> None:
        """Write ``codes`` ``(K, D)`` as the codebook (and whatever statistics start from it)."""

    def after_load(self) -> None:
        self._init_pending = self.init_from_data
