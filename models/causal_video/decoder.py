"""The causal decoder: taming-transformers' Decoder with causal 3D convolutions and optional temporal upsampling."""
import torch
import torch.nn.functional as F
from torch import nn

from models.causal_video.blocks import CausalResnetBlock
from models.causal_video.causal_conv import CausalConv3d, FrameAttention, FrameGroupNorm
from models.causal_video.encoder import middle
from models.causal_video.resampling import CausalUpsample
from models.taming.modules import _blocks, _stage


class CausalDecoder(nn.Module):
    """Latent ``(b, z_channels, 1 + k, h, w)`` -> clip ``(b, out_channels, 1 + k*t, h*s, w*s)``, the encoder mirrored.

    ``self.up[i]`` is the level at spatial scale ``2**-i`` (taming-transformers' order and keys);
    each has ``num_res_blocks + 1`` blocks, and its upsampling doubles time too for the
    levels the encoder halved it on (``i <= temporal_levels``).
    """

    def __init__(self, *, ch: int, ch_mult: list, num_res_blocks: int, z_channels: int, out_channels: int,
                 temporal_levels: int, attention: bool, dropout: float = 0.0, num_groups: int = 32):
        super().__init__()
        lowest = len(ch_mult) - 1
        block_in = ch * ch_mult[-1]
        self.conv_in = CausalConv3d(z_channels, block_in, kernel_size=3)
        self.mid = middle(block_in, attention, dropout, num_groups)
        self.up = nn.ModuleList()
        for level in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[level]
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(CausalResnetBlock(block_in, block_out, dropout, num_groups))
                block_in = block_out
                if attention and level == lowest:
                    attns.append(FrameAttention(block_in, num_groups))
            stage = _stage({"block": blocks, "attn": attns})
            if level != 0:
                stage.upsample = CausalUpsample(block_in, temporal=level <= temporal_levels)
            self.up.insert(0, stage)
        self.norm_out = FrameGroupNorm(block_in, num_groups)
        self.conv_out = CausalConv3d(block_in, out_channels, kernel_size=3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for stage in reversed(self.up):
            h = _blocks(stage, h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
