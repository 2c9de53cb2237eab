"""``fsq``, ``lfq``, ``simvq``, ``residual_vq``: vector-quantize-pytorch's quantizers behind this package's contract.

The wrappers only adapt shapes (rows in, rows out), the result type, ``vocab_size`` and
``code_factors``; the math is the library's. None of these restarts codes (FSQ and LFQ
have no codebook to die, SimVQ's codes move together through one linear map, the
residual layers are EMA codebooks without restarts), so none keeps a usage statistic.
"""
import contextlib
import math
import random

import torch
from vector_quantize_pytorch import FSQ as LibraryFSQ
from vector_quantize_pytorch import LFQ as LibraryLFQ
from vector_quantize_pytorch import ResidualVQ as LibraryResidualVQ
from vector_quantize_pytorch import SimVQ as LibrarySimVQ

from models.quantizers.base import Quantizer
from core.distributed import is_distributed


class FSQ(Quantizer):
    """Finite scalar quantization (Mentzer et al. 2023): each of ``len(levels)`` channels rounded to its levels.

    ``vocab_size = prod(levels)``; an index's mixed-radix digits are the per-channel
    levels, first channel least significant (the library's basis), so ``code_factors`` is
    ``levels``. No auxiliary loss, no codebook state.
    """

    def __init__(self, dim: int, levels: list):
        super().__init__()
        self.levels, self.dim = list(levels), dim
        self.vocab_size = math.prod(levels)
        # the library reads its codebook size with .item(): built on the CPU, also when the model is
        # built on the meta device for the memory estimate (models.footprint); it is small (levels,
        # and projections only when dim != len(levels)), and .to(device) moves it with the model
        with torch.device("cpu"):
            self.inner = LibraryFSQ(levels=list(levels), dim=dim)

    @property
    def code_factors(self) -> list:
        return list(self.levels)

    def describe(self) -> str:
        return f"fsq(levels={self.levels}, vocab_size={self.vocab_size}, dim={self.dim})"

    def quantize_rows(self, rows, updating):
        quantized, indices = self.inner(rows[None])
        return quantized[0], rows.new_zeros(()), indices[0].long(), {}

    @torch.no_grad()
    def assign(self, rows):
        return self.inner(rows[None])[1][0].long()

    def embed(self, indices):
        return self.inner.indices_to_codes(indices[None])[0]


class LFQ(Quantizer):
    """Lookup-free quantization (Yu et al. 2023, MAGVIT-v2): the signs of ``bits`` projected channels.

    ``vocab_size = 2 ** bits``; ``code_factors = [2] * bits``. The loss is the library's
    entropy term (``entropy_loss_weight``) plus its commitment term (``commitment_loss_weight``).

    ``spherical`` (the default) puts the projected vector on the unit sphere before taking
    its signs, so the codes are ``±1/sqrt(bits)``: binary spherical quantization (BSQ, Zhao
    et al. 2024), the library's ``spherical`` option. LFQ assumes normalised inputs (its
    authors put a norm layer right before it); on raw encoder outputs a channel can grow
    until the entropy term's sharp softmax (temperature 0.01) no longer reaches it, and its
    bit then stays constant for good. Indices are the same signs either way.
    """

    def __init__(self, dim: int, bits: int, entropy_loss_weight: float = 0.1, commitment_loss_weight: float = 0.25,
                 spherical: bool = True):
        super().__init__()
        self.bits, self.dim, self.spherical = bits, dim, spherical
        self.vocab_size = 2**bits
        self.entropy_loss_weight, self.commitment_loss_weight = entropy_loss_weight, commitment_loss_weight
        self.inner = LibraryLFQ(dim=dim, codebook_size=2**bits, entropy_loss_weight=entropy_loss_weight,
                                commitment_loss_weight=commitment_loss_weight, spherical=spherical)

    @property
    def code_factors(self) -> list:
        return [2] * self.bits

    def describe(self) -> str:
        return (f"lfq(bits={self.bits}, vocab_size={self.vocab_size}, dim={self.dim}, spherical={self.spherical}, "
                f"entropy_loss_weight={self.entropy_loss_weight}, commitment_loss_weight={self.commitment_loss_weight})")

    def quantize_rows(self, rows, updating):
        quantized, indices, aux_loss = self.inner(rows[None])
        return quantized[0], aux_loss, indices[0].long(), {}

    @torch.no_grad()
    def assign(self, rows):
        return self.inner(rows[None])[1][0].long()

    def embed(self, indices):
        return self.inner.indices_to_codes(indices[None])[0]


class SimVQ(Quantizer):
    """SimVQ (Zhu et al. 2024): a frozen random codebook seen through one learned linear map."""

    def __init__(self, dim: int, vocab_size: int, rotation_trick: bool = True, commitment_cost: float = 0.25):
        super().__init__()
        self.vocab_size, self.dim, self.rotation_trick = vocab_size, dim, rotation_trick
        self.inner = LibrarySimVQ(dim=dim, codebook_size=vocab_size, rotation_trick=rotation_trick,
                                  input_to_quantize_commit_loss_weight=commitment_cost)

    def describe(self) -> str:
        return f"simvq(vocab_size={self.vocab_size}, dim={self.dim}, rotation_trick={self.rotation_trick})"

    def quantize_rows(self, rows, updating):
        quantized, indices, loss = self.inner(rows[None])
        return quantized[0], loss, indices[0].long(), {}

    @torch.no_grad()
    def assign(self, rows):
        return self.inner(rows[None])[1][0].long()

    def embed(self, indices):
        return self.inner.indices_to_codes(indices[None])[0]


class ResidualVQ(Quantizer):
    """Residual VQ (SoundStream, RQ-VAE): ``num_quantizers`` EMA codebooks, each coding the previous residual.

    Indices are ``(b, num_quantizers, *spatial)``; ``decode`` accepts the first ``n <=
    num_quantizers`` of them (a lower rate), which ``quantize_dropout`` trains for (each
    step keeps a random number of levels). ``code_factors`` is ``[vocab_size]``: every
    index is one code of its level's codebook.
    """

    def __init__(self, dim: int, vocab_size: int, num_quantizers: int = 4, quantize_dropout: bool = False,
                 commitment_cost: float = 0.25, decay: float = 0.99, kmeans_init: bool = False,
                 l2_normalize: bool = False, codebook_dim=None, rotation_trick: bool = False):
        super().__init__()
        self.vocab_size, self.dim, self.index_depth = vocab_size, dim, num_quantizers
        self.residual_depth = num_quantizers
        self.options = dict(num_quantizers=num_quantizers, quantize_dropout=quantize_dropout, decay=decay,
                            kmeans_init=kmeans_init, l2_normalize=l2_normalize, codebook_dim=codebook_dim,
                            rotation_trick=rotation_trick, commitment_cost=commitment_cost)
        self.inner = LibraryResidualVQ(
            dim=dim, codebook_size=vocab_size, num_quantizers=num_quantizers, quantize_dropout=quantize_dropout,
            commitment_weight=commitment_cost, decay=decay, kmeans_init=kmeans_init, use_cosine_sim=l2_normalize,
            codebook_dim=codebook_dim, rotation_trick=rotation_trick, threshold_ema_dead_code=0,
            sync_codebook=is_distributed(), sync_kmeans=True)
        # the library draws the dropped levels from a seed it all-reduces and reads each step;
        # the same Python generator on every rank gives the same draws without that read
        self._dropout_rng = random.Random(0)
        self._init_checked = False

    def describe(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"residual_vq(vocab_size={self.vocab_size}, dim={self.dim}, {options})"

    def quantize_rows(self, rows, updating):
        if not updating:  # the library updates its EMA in any training-mode forward
            with self._library_in_eval():
                quantized, indices, losses = self.inner(rows[None])
            return quantized[0], losses.sum(), indices[0].long(), {}
        seed = self._dropout_rng.randrange(10_000)
        quantized, indices, losses = self.inner(rows[None], rand_quantize_dropout_fixed_seed=seed)
        self._skip_init_checks()
        return quantized[0], losses.sum(), indices[0].long(), {}

    @torch.no_grad()
    def assign(self, rows):
        with self._library_in_eval():
            return self.inner(rows[None])[1][0].long()

    @contextlib.contextmanager
    def _library_in_eval(self):
        """No dropout of levels, no EMA update: the library's eval mode, for this call only."""
        was_training = self.inner.training
        self.inner.eval()
        try:
            yield
        finally:
            self.inner.train(was_training)

    def embed(self, indices):
        """Sum of the codes of the first ``indices.shape[1]`` levels, projected out."""
        codebooks = self.inner.codebooks
        codes = sum(codebooks[level][indices[:, level].long()] for level in range(indices.shape[1]))
        return self.inner.project_out(codes)

    def _skip_init_checks(self) -> None:
        """Once the codebooks are initialised, stop the library reading its ``initted`` flag every step."""
        if self._init_checked:
            return
        self._init_checked = True
        for layer in self.inner.layers:
            if bool(layer._codebook.initted):
                layer._codebook.init_embed_ = _no_init

    def after_load(self) -> None:
        self._init_checked = False
        for layer in self.inner.layers:
            layer._codebook.__dict__.pop("init_embed_", None)


def _no_init(*args, **kwargs) -> None:
    """Stands in for an initialised codebook's ``init_embed_``."""


__all__ = ["FSQ", "LFQ", "SimVQ", "ResidualVQ"]
