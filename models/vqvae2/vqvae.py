"""VQVAE: the hierarchical VQ-VAE-2 with any number of levels (Razavi et al. 2019).

Level 0 is the bottom (finest) level. Encoders run bottom-up, each downsampling its
input by its level's rate; then, top-down, each level is quantized and decoded, and
its decoder output conditions the quantization of the level below. Every decoder
also sees the codes of all levels above it, brought to its resolution by code
upsamplers. Indices are always a list ordered like the levels: bottom first, in
``forward``, ``encode`` and ``decode`` alike.
"""
import math
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from models.adapter_base import VQOutput
from models.quantizers import FamilySettings, QuantizerSpec, build_quantizers, parse_spec, per_level
from models.vqvae2.layers import CodeUpsampler, Decoder, Encoder, resampling_steps


class VQVAE(nn.Module):
    """Frames ``(b, in_channels, H, W)`` -> per-level codes -> frames ``(b, out_channels, H, W)``.

    Level ``l`` codes ``(b, H / f_l, W / f_l)`` with ``f_l = prod(scaling_rates[:l + 1])``
    into ``nb_entries`` codes of ``embed_dim`` channels. ``quantizer`` is a ``models.quantizers``
    spec for every level, or a list of one per level (default: ``default_quantizer``).
    """

    default_quantizer = QuantizerSpec("ema")

    def quantizer_settings(self, decay: float, commitment_cost: float, dead_code_threshold: float) -> FamilySettings:
        return FamilySettings(commitment_cost=commitment_cost, decay=decay, dead_code_threshold=dead_code_threshold)

    def __init__(self, in_channels: int = 3, hidden_channels: int = 128, res_channels: int = 32,
                 nb_res_layers: int = 2, nb_levels: int = 2, embed_dim: int = 64, nb_entries: int = 512,
                 scaling_rates: Sequence[int] = (4, 2), decay: float = 0.99, commitment_cost: float = 0.25,
                 dead_code_threshold: float = 0.0, out_channels: Optional[int] = None,
                 quantizer=None):
        super().__init__()
        if len(scaling_rates) != nb_levels:
            raise ValueError(
                f"VQVAE: {len(scaling_rates)} scaling_rates for nb_levels = {nb_levels}; expected one per level"
            )
        for rate in scaling_rates:
            resampling_steps(rate)  # raises unless a power of 2
        self.in_channels = in_channels
        self.nb_levels = nb_levels
        self.nb_entries = nb_entries
        self.scaling_rates = list(scaling_rates)
        self.spatial_factor = math.prod(scaling_rates)
        out_channels = in_channels if out_channels is None else out_channels
        self.encoders = nn.ModuleList(
            Encoder(in_channels if level == 0 else hidden_channels, hidden_channels, res_channels, nb_res_layers, rate)
            for level, rate in enumerate(scaling_rates)
        )
        self.quant_convs = nn.ModuleList(
            nn.Conv2d(hidden_channels + (embed_dim if level < nb_levels - 1 else 0), embed_dim, 1)
            for level in range(nb_levels)
        )
        specs = per_level(parse_spec(quantizer), nb_levels, self.default_quantizer)
        settings = self.quantizer_settings(decay, commitment_cost, dead_code_threshold)
        self.quantizers = nn.ModuleList(build_quantizers(specs, embed_dim, nb_entries, settings))
        # the decoder of level l reads its own codes and those of the nb_levels - 1 - l levels above;
        # the bottom one makes frames, the others condition the quantization of the level below
        self.decoders = nn.ModuleList(
            Decoder(embed_dim * (nb_levels - level), hidden_channels, out_channels if level == 0 else embed_dim,
                    res_channels, nb_res_layers, rate)
            for level, rate in enumerate(scaling_rates)
        )
        # upsamplers[l - 1][k]: the codes of level nb_levels - 1 - k (top first), from level l to l - 1
        self.upsamplers = nn.ModuleList(
            nn.ModuleList(CodeUpsampler(embed_dim, scaling_rates[level]) for _ in range(nb_levels - level))
            for level in range(1, nb_levels)
        )

    # -- public ------------------------------------------------------------------
    def forward(self, frames: torch.Tensor) -> VQOutput:
        """``VQOutput(vq_loss summed over levels, recon, mean per-level perplexity, indices)``."""
        perplexities = []

        def quantize(level, z):
            quantized, loss, indices, stats = self.quantizers[level](z)
            perplexities.append(stats["perplexity"])
            return quantized, loss, indices

        levels, codes_above = self._quantize_top_down(frames, quantize)
        quantized, losses, indices = (list(column) for column in zip(*levels))
        recon = self.decoders[0](torch.cat([quantized[0], *codes_above], dim=1))
        return VQOutput(torch.stack(losses).sum(), recon, torch.stack(perplexities).mean(), indices)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> list:
        """Per-level code indices, bottom first (no state change)."""

        def encode(level, z):
            indices = self.quantizers[level].encode(z)
            return self.quantizers[level].decode(indices), None, indices

        levels, _ = self._quantize_top_down(frames, encode)
        return [indices for _, _, indices in levels]

    def decode(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Frames from per-level code indices, bottom first (what ``encode`` returns)."""
        self._check_indices(indices)
        codes_above = []
        for level in reversed(range(1, self.nb_levels)):
            _, codes_above = self._decode_level(level, self.quantizers[level].decode(indices[level]), codes_above)
        return self.decoders[0](torch.cat([self.quantizers[0].decode(indices[0]), *codes_above], dim=1))

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoders[0].out.weight

    # -- the top-down pass ---------------------------------------------------------
    def _quantize_top_down(self, frames: torch.Tensor, quantize: Callable):
        """Quantize every level, top first, each conditioned on the decoded levels above.

        ``quantize(level, z)`` returns ``(quantized, loss, indices)``. Returns that triple
        per level (bottom first) and the upper levels' codes at the bottom resolution.
        """
        self._check_frames(frames)
        features, h = [], frames
        for encoder in self.encoders:  # bottom-up, each level downsampling the one below
            h = encoder(h)
            features.append(h)
        levels, codes_above, condition = [], [], None
        for level in reversed(range(self.nb_levels)):
            inputs = features[level] if condition is None else torch.cat([features[level], condition], dim=1)
            quantized, loss, indices = quantize(level, self.quant_convs[level](inputs))
            levels.insert(0, (quantized, loss, indices))
            if level > 0:
                condition, codes_above = self._decode_level(level, quantized, codes_above)
        return levels, codes_above

    def _decode_level(self, level: int, quantized: torch.Tensor, codes_above: list):
        """Decode ``level`` (> 0) into the conditioning of ``level - 1``; upsample all codes so far."""
        condition = self.decoders[level](torch.cat([quantized, *codes_above], dim=1))
        codes = [*codes_above, quantized]
        return condition, [up(code) for up, code in zip(self.upsamplers[level - 1], codes)]

    def _check_indices(self, indices: Sequence[torch.Tensor]) -> None:
        sizes = [tuple(level_indices.shape[-2:]) for level_indices in indices]
        consistent = len(sizes) == self.nb_levels and all(
            sizes[level - 1] == (sizes[level][0] * rate, sizes[level][1] * rate)
            for level, rate in enumerate(self.scaling_rates[1:], start=1)
        )
        if not consistent:
            raise ValueError(
                f"VQVAE.decode: index maps sized {sizes} do not fit scaling_rates {self.scaling_rates}; "
                f"expected {self.nb_levels} levels, bottom level first"
            )

    def _check_frames(self, frames: torch.Tensor) -> None:
        if frames.ndim != 4 or frames.shape[1] != self.in_channels:
            raise ValueError(
                f"VQVAE expects frames shaped (batch, {self.in_channels}, H, W), got {tuple(frames.shape)}"
            )
        height, width = frames.shape[-2:]
        if height % self.spatial_factor or width % self.spatial_factor:
            raise ValueError(
                f"VQVAE: frame size {height}x{width} is not a multiple of {self.spatial_factor} "
                f"(the product of scaling_rates {self.scaling_rates})"
            )
