"""Down- and up-sampling by 2 in space, and optionally in time, keeping the first frame on its own.

Time: ``1 + 2k`` frames become ``1 + k`` (a causal stride-2 conv: output ``i`` sees frames
up to ``2i``) and back (each latent frame after the first is repeated twice, the first
once). Space: taming-transformers' stride-2 conv with right/bottom padding, and
nearest-neighbour x2 then a conv.
"""
import torch
import torch.nn.functional as F
from torch import nn

from models.causal_video.causal_conv import CausalConv3d


class CausalDownsample(nn.Module):
    """A stride-2 (and stride-2 in time when ``temporal``) causal 3x3x3 conv."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, kernel_size=3, stride=(2 if temporal else 1, 2, 2),
                                 spatial_padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class CausalUpsample(nn.Module):
    """Nearest-neighbour x2 in space (and time when ``temporal``, less the first frame's copy), then a causal conv."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(2.0 if self.temporal else 1.0, 2.0, 2.0), mode="nearest")
        if self.temporal:
            x = x[:, :, 1:]  # the first frame stands alone: 1 + k latent frames -> 1 + 2k frames
        return self.conv(x)
