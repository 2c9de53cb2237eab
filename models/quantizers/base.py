"""The contract every quantizer keeps: ``forward``, ``encode``, ``decode`` on channel-first latents.

A latent is ``(b, dim, *spatial)`` with any number of spatial axes (2-D frames, 3-D
``(t, h, w)`` video latents). Subclasses see it as rows ``(N, dim)`` and implement
``quantize_rows`` (training and eval forward), ``assign`` (indices, pure) and ``embed``
(vectors of indices). Indices come back as ``(b, *spatial)``, or ``(b, depth, *spatial)``
for quantizers with several indices per vector (residual VQ).
"""
import abc
from typing import ClassVar, NamedTuple

import torch
from einops import pack, rearrange, unpack
from torch import nn

from models.quantizers.usage import code_statistics


class QuantizerResult(NamedTuple):
    """What ``forward`` returns."""

    quantized: torch.Tensor  # like the input, fp32, with the straight-through (or rotation) gradient
    loss: torch.Tensor  # scalar auxiliary loss (commitment, codebook, entropy terms)
    indices: torch.Tensor  # integer indices, (b, *spatial) or (b, depth, *spatial)
    stats: dict  # scalar device tensors: perplexity, codes_used, restarts


class Quantizer(nn.Module, metaclass=abc.ABCMeta):
    """Base of every quantizer. The math runs in fp32, also under bf16/fp16 autocast.

    Only a training-mode forward with autograd on changes state (codebook statistics,
    restarts, initialisation); ``encode`` and ``decode`` never do.
    """

    #: buffers that only count (usage): a state dict with or without them loads (missing ones start afresh)
    statistics: ClassVar[tuple] = ()
    vocab_size: int
    #: residual levels on the axis after the batch axis that decoding may drop (a lower rate); 0: none
    residual_depth: int = 0

    @property
    def code_factors(self) -> list:
        """Mixed-radix digits of an index: ``index = sum(digit_i * prod(code_factors[:i]))``."""
        return [self.vocab_size]

    def describe(self) -> str:
        """One line: the quantizer and its resolved options (for the log and the architecture report)."""
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"

    # -- what subclasses implement ---------------------------------------------------
    @abc.abstractmethod
    def quantize_rows(self, rows: torch.Tensor, updating: bool) -> tuple:
        """``rows`` ``(N, dim)`` -> ``(quantized (N, dim), loss, indices (N,) or (N, depth), extra stats)``."""

    @abc.abstractmethod
    def assign(self, rows: torch.Tensor) -> torch.Tensor:
        """Indices of ``rows``; changes no state."""

    @abc.abstractmethod
    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Vectors ``(N, dim)`` of indices ``(N,)`` or ``(N, depth)``."""

    # -- the contract ----------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> QuantizerResult:
        with torch.autocast(device_type=z.device.type, enabled=False):
            rows, layout = to_rows(z.float())
            updating = self.training and torch.is_grad_enabled()
            quantized, loss, indices, extra = self.quantize_rows(rows, updating)
            stats = {**code_statistics(indices.detach(), self.vocab_size), **extra}
            return QuantizerResult(from_rows(quantized, layout), loss, indices_from_rows(indices, layout), stats)

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Indices of latents ``(b, dim, *spatial)``."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            rows, layout = to_rows(z.float())
            return indices_from_rows(self.assign(rows), layout)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Latents ``(b, dim, *spatial)`` of indices as ``encode`` returns them."""
        with torch.autocast(device_type=indices.device.type, enabled=False):
            rows, layout = indices_to_rows(indices, self.index_depth)
            return from_rows(self.embed(rows), layout)

    #: indices per vector: 1 (indices (b, *spatial)) or more (indices (b, depth, *spatial))
    index_depth: int = 1

    # the seed's names for the inference pair
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        return self.encode(z)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decode(indices)

    # -- checkpoints -----------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        for name in self.statistics:  # upstream releases, files from before or after restarts were switched on
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)
            if prefix + name in unexpected_keys:
                unexpected_keys.remove(prefix + name)
        self.after_load()

    def after_load(self) -> None:
        """Hook: re-derive Python-side state from loaded buffers."""


def optional_state_keys(module: nn.Module) -> set:
    """State-dict keys of ``module`` that a file may lack or carry (the quantizers' usage statistics).

    Found by identity, so modules that rename their keys (the adapters) are served too.
    """
    statistics = {id(sub._buffers[stat]) for sub in module.modules() if isinstance(sub, Quantizer)
                  for stat in sub.statistics if sub._buffers.get(stat) is not None}
    return {key for key, tensor in module.state_dict(keep_vars=True).items() if id(tensor) in statistics}


class Layout(NamedTuple):
    batch: int
    packed_shape: list  # einops' packed shapes of the spatial axes


def to_rows(z: torch.Tensor) -> tuple:
    """``(b, dim, *spatial)`` -> rows ``(b * prod(spatial), dim)`` and how to undo it."""
    channels_last, packed_shape = pack([rearrange(z, "b d ... -> b ... d")], "b * d")
    return rearrange(channels_last, "b n d -> (b n) d"), Layout(z.shape[0], packed_shape)


def from_rows(rows: torch.Tensor, layout: Layout) -> torch.Tensor:
    (channels_last,) = unpack(rearrange(rows, "(b n) d -> b n d", b=layout.batch), layout.packed_shape, "b * d")
    return rearrange(channels_last, "b ... d -> b d ...")


def indices_from_rows(indices: torch.Tensor, layout: Layout) -> torch.Tensor:
    """``(N,)`` -> ``(b, *spatial)``; ``(N, depth)`` -> ``(b, depth, *spatial)`` (the depth right after the batch)."""
    if indices.ndim == 1:
        (out,) = unpack(rearrange(indices, "(b n) -> b n", b=layout.batch), layout.packed_shape, "b *")
        return out
    (out,) = unpack(rearrange(indices, "(b n) q -> b q n", b=layout.batch), layout.packed_shape, "b q *")
    return out


def indices_to_rows(indices: torch.Tensor, depth: int) -> tuple:
    """The inverse of ``indices_from_rows``: rows of indices and the layout of their vectors."""
    if depth == 1:
        flat, packed_shape = pack([indices], "b *")
        return rearrange(flat, "b n -> (b n)"), Layout(indices.shape[0], packed_shape)
    flat, packed_shape = pack([indices], "b q *")
    return rearrange(flat, "b q n -> (b n) q"), Layout(indices.shape[0], packed_shape)
