"""CausalVideoVQ: clips -> causal encoder -> quantizer -> causal decoder -> clips.

A clip of ``1 + k*t`` frames has ``1 + k`` latent frames, the first of them computed from
the first frame alone (an image is a one-frame clip). Clips of other lengths are padded
by repeating their last frame and the reconstruction is trimmed back.
"""
import math
from typing import Optional

import torch
from torch import nn

from models.causal_video.causal_conv import CausalConv3d
from models.causal_video.decoder import CausalDecoder
from models.causal_video.encoder import CausalEncoder
from models.quantizers import Quantizer


class CausalVideoVQ(nn.Module):
    """Clips ``(b, C, T, H, W)`` in [-1, 1]; ``quantizer`` is a ``models.quantizers.Quantizer`` whose
    latents have ``code_dim`` channels (it takes any number of spatial axes: here ``(t, h, w)``).

    Keys follow taming-transformers' VQModel: ``encoder.*``, ``quant_conv``, ``quantize``,
    ``post_quant_conv``, ``decoder.*``.
    """

    def __init__(self, *, ch: int, ch_mult: list, num_res_blocks: int, z_channels: int, in_channels: int,
                 temporal_compression: int, attention: bool, quantizer: Quantizer, code_dim: int,
                 dropout: float = 0.0, num_groups: int = 32):
        super().__init__()
        self.in_channels = in_channels
        self.temporal_compression = temporal_compression
        self.spatial_compression = 2 ** (len(ch_mult) - 1)
        shared = dict(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks, z_channels=z_channels,
                      temporal_levels=int(math.log2(temporal_compression)), attention=attention,
                      dropout=dropout, num_groups=num_groups)
        self.encoder = CausalEncoder(**shared, in_channels=in_channels)
        self.quant_conv = CausalConv3d(z_channels, code_dim, kernel_size=1)
        self.quantize = quantizer
        self.post_quant_conv = CausalConv3d(code_dim, z_channels, kernel_size=1)
        self.decoder = CausalDecoder(**shared, out_channels=in_channels)

    # -- clip lengths ---------------------------------------------------------------------
    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of ``frames`` frames: ``1 + ceil((frames - 1) / t)``."""
        return 1 + math.ceil((frames - 1) / self.temporal_compression)

    def coded_frames(self, frames: int) -> int:
        """The clip length actually coded: ``frames`` rounded up to ``1 + k*t``."""
        return 1 + (self.latent_frames(frames) - 1) * self.temporal_compression

    def pad(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips padded to ``coded_frames`` by repeating their last frame."""
        self._check(clips)
        extra = self.coded_frames(clips.shape[2]) - clips.shape[2]
        if extra == 0:
            return clips
        return torch.cat([clips, clips[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)

    # -- the codec's halves -----------------------------------------------------------------
    def encode_latents(self, clips: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latents ``(b, code_dim, 1 + k, H/s, W/s)``."""
        return self.quant_conv(self.encoder(self.pad(clips)))

    def decode_latents(self, quantized: torch.Tensor, frames: Optional[int] = None) -> torch.Tensor:
        """Clips from quantized latents, trimmed to ``frames`` when given."""
        clips = self.decoder(self.post_quant_conv(quantized))
        return clips if frames is None else clips[:, :, :frames]

    def forward(self, clips: torch.Tensor) -> tuple:
        """``(reconstruction like clips, the quantizer's QuantizerResult)``; indices ``(b, 1 + k, h, w)``."""
        result = self.quantize(self.encode_latents(clips))
        return self.decode_latents(result.quantized, clips.shape[2]), result

    @torch.no_grad()
    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        """Code indices ``(b, 1 + k, h, w)`` (``(b, depth, 1 + k, h, w)`` for residual VQ); never changes state."""
        return self.quantize.encode(self.encode_latents(clips))

    def decode(self, indices: torch.Tensor, frames: Optional[int] = None) -> torch.Tensor:
        """Clips ``(b, C, 1 + k*t, H, W)`` of indices as ``encode`` gives them, trimmed to ``frames`` when given."""
        return self.decode_latents(self.quantize.decode(indices), frames)

    def _check(self, clips: torch.Tensor) -> None:
        if clips.ndim != 5 or clips.shape[1] != self.in_channels:
            raise ValueError(f"CausalVideoVQ expects clips shaped (batch, {self.in_channels}, frames, H, W), "
                             f"got {tuple(clips.shape)}")
        height, width = clips.shape[-2:]
        factor = self.spatial_compression
        if height % factor or width % factor:
            raise ValueError(f"CausalVideoVQ: frame size {height}x{width} is not a multiple of "
                             f"spatial_compression {factor}")
