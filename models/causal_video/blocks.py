"""The residual block of the causal encoder and decoder (taming-transformers' ResnetBlock, in 3D)."""
import torch
import torch.nn.functional as F
from torch import nn

from models.causal_video.causal_conv import CausalConv3d, FrameGroupNorm


class CausalResnetBlock(nn.Module):
    """Two stages of per-frame GroupNorm, swish and a causal 3x3x3 conv, and a residual.

    A 1x1x1 ``nin_shortcut`` when widths differ. Swish is ``F.silu`` (taming-transformers'
    ``x * sigmoid(x)`` in one op, which keeps one tensor for backward instead of two).
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, num_groups: int = 32):
        super().__init__()
        self.norm1 = FrameGroupNorm(in_channels, num_groups)
        self.conv1 = CausalConv3d(in_channels, out_channels, kernel_size=3)
        self.norm2 = FrameGroupNorm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_channels, out_channels, kernel_size=3)
        if in_channels != out_channels:
            self.nin_shortcut = CausalConv3d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h
