"""The causal 3D convolution, and 2D layers applied frame by frame.

A causal convolution pads time only on the past (repeating the first frame), so an
output frame never sees a later input frame. Normalisation and attention run per
frame for the same reason: statistics over the whole clip would let later frames leak
into earlier latents.
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models.taming.modules import AttnBlock


def _triple(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value, value)


class CausalConv3d(nn.Conv3d):
    """``nn.Conv3d`` over ``(b, c, t, h, w)`` whose time padding is ``kernel_t - 1`` copies of the first frame.

    Spatial padding is ordinary zero padding (``kernel // 2`` unless ``spatial_padding`` says);
    with temporal stride ``s`` and ``t = 1 + k*s`` input frames there are ``1 + k`` output frames,
    output ``i`` seeing input frames up to ``i*s``. The weights keep ``nn.Conv3d``'s keys.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, spatial_padding=None):
        kernel_t, kernel_h, kernel_w = _triple(kernel_size)
        pad_h, pad_w = (kernel_h // 2, kernel_w // 2) if spatial_padding is None else (spatial_padding,) * 2
        super().__init__(in_channels, out_channels, (kernel_t, kernel_h, kernel_w), stride=_triple(stride),
                         padding=(0, pad_h, pad_w))
        self.time_padding = kernel_t - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_padding:
            x = F.pad(x, (0, 0, 0, 0, self.time_padding, 0), mode="replicate")
        return super().forward(x)


def per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module`` (a 2D layer) applied to every frame of ``(b, c, t, h, w)``."""
    frames = x.shape[2]
    y = module(rearrange(x, "b c t h w -> (b t) c h w"))
    return rearrange(y, "(b t) c h w -> b c t h w", t=frames)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame (causal), keys of ``nn.GroupNorm``; eps as taming-transformers."""

    def __init__(self, channels: int, num_groups: int):
        super().__init__(num_groups=num_groups, num_channels=channels, eps=1e-6, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(super().forward, x)


class FrameAttention(AttnBlock):
    """taming-transformers' spatial self-attention block, run on each frame alone (causal)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(super().forward, x)
