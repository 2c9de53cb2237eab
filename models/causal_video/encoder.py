"""The causal encoder: taming-transformers' Encoder with causal 3D convolutions and optional temporal strides."""
import torch
import torch.nn.functional as F
from torch import nn

from models.causal_video.blocks import CausalResnetBlock
from models.causal_video.causal_conv import CausalConv3d, FrameAttention, FrameGroupNorm
from models.causal_video.resampling import CausalDownsample
# taming-transformers' level containers and block loop: the same layout gives the same keys
from models.taming.modules import _blocks, _stage


def middle(channels: int, attention: bool, dropout: float, num_groups: int) -> nn.Module:
    """Two residual blocks around a per-frame attention block (``mid``), shared by encoder and decoder."""
    return _stage({
        "block_1": CausalResnetBlock(channels, channels, dropout, num_groups),
        "attn_1": FrameAttention(channels, num_groups) if attention else nn.Identity(),
        "block_2": CausalResnetBlock(channels, channels, dropout, num_groups),
    })


class CausalEncoder(nn.Module):
    """Clip ``(b, in_channels, 1 + k*t, H, W)`` -> latent ``(b, z_channels, 1 + k, H/s, W/s)``.

    ``s = 2 ** (len(ch_mult) - 1)``; the first ``temporal_levels`` downsamplings also halve time
    (``t = 2 ** temporal_levels``). With ``attention`` the lowest level's blocks and the
    middle attend within each frame (where taming-transformers' f8/f16 releases attend).
    """

    def __init__(self, *, ch: int, ch_mult: list, num_res_blocks: int, z_channels: int, in_channels: int,
                 temporal_levels: int, attention: bool, dropout: float = 0.0, num_groups: int = 32):
        super().__init__()
        self.conv_in = CausalConv3d(in_channels, ch, kernel_size=3)
        in_ch_mult = (1, *ch_mult)
        lowest = len(ch_mult) - 1
        self.down = nn.ModuleList()
        for level, mult in enumerate(ch_mult):
            block_in, block_out = ch * in_ch_mult[level], ch * mult
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(CausalResnetBlock(block_in, block_out, dropout, num_groups))
                block_in = block_out
                if attention and level == lowest:
                    attns.append(FrameAttention(block_in, num_groups))
            stage = _stage({"block": blocks, "attn": attns})
            if level != lowest:
                stage.downsample = CausalDownsample(block_in, temporal=level < temporal_levels)
            self.down.append(stage)
        self.mid = middle(block_in, attention, dropout, num_groups)
        self.norm_out = FrameGroupNorm(block_in, num_groups)
        self.conv_out = CausalConv3d(block_in, z_channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = _blocks(stage, h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))
