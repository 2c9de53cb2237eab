"""Taming's convolutional encoder and decoder (the VQGAN of CompVis taming-transformers).

Attribute names follow upstream exactly (``conv_in``, ``down.{i}.block.{j}``,
``mid.block_1``, ``up.{i}.upsample``, ``norm_out`` ...): they are the state-dict keys,
and official checkpoints load only if every one matches.
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def nonlinearity(x: torch.Tensor) -> torch.Tensor:
    """Swish."""
    return x * torch.sigmoid(x)


def Normalize(channels: int, num_groups: int = 32) -> nn.GroupNorm:  # noqa: N802 (upstream's name)
    return nn.GroupNorm(num_groups=num_groups, num_channels=channels, eps=1e-6, affine=True)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    """A stride-2 3x3 conv; the asymmetric right/bottom padding is upstream's."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class ResnetBlock(nn.Module):
    """Two GroupNorm-swish-conv stages and a residual; a 1x1 ``nin_shortcut`` when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, num_groups: int = 32):
        super().__init__()
        self.norm1 = Normalize(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = Normalize(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        h = self.conv1(nonlinearity(self.norm1(x)))
        h = self.conv2(self.dropout(nonlinearity(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, with 1x1 convs for q, k, v and the output."""

    def __init__(self, channels: int, num_groups: int = 32):
        super().__init__()
        self.norm = Normalize(channels, num_groups)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x):
        height = x.shape[2]
        h = self.norm(x)
        q, k, v = (rearrange(conv(h), "b c h w -> b 1 (h w) c") for conv in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v, as upstream
        return x + self.proj_out(rearrange(h, "b 1 (h w) c -> b c h w", h=height))


def _stage(children: dict) -> nn.Module:
    """A bare container whose attribute names become key segments (upstream's ``nn.Module()`` levels)."""
    stage = nn.Module()
    for name, module in children.items():
        setattr(stage, name, module)
    return stage


def _blocks(stage: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """A level's residual blocks, each followed by its attention block where the level has them."""
    for i, block in enumerate(stage.block):
        h = block(h)
        if len(stage.attn) > 0:
            h = stage.attn[i](h)
    return h


class Encoder(nn.Module):
    """Image ``(B, in_channels, H, W)`` -> latent ``(B, z_channels [x2 if double_z], H/f, W/f)``, f = 2**(len(ch_mult)-1).

    Takes the whole ``ddconfig`` as keywords (shared with ``Decoder``); ``out_ch`` is the decoder's.
    """

    def __init__(self, *, ch: int, ch_mult: list, num_res_blocks: int, attn_resolutions: list,
                 in_channels: int, resolution: int, z_channels: int, double_z: bool = True,
                 dropout: float = 0.0, num_groups: int = 32, out_ch: int = 3):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        in_ch_mult = (1, *ch_mult)
        current_res = resolution
        self.down = nn.ModuleList()
        for level, mult in enumerate(ch_mult):
            block_in, block_out = ch * in_ch_mult[level], ch * mult
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, dropout, num_groups))
                block_in = block_out
                if current_res in attn_resolutions:
                    attns.append(AttnBlock(block_in, num_groups))
            stage = _stage({"block": blocks, "attn": attns})
            if level != len(ch_mult) - 1:
                stage.downsample = Downsample(block_in)
                current_res //= 2
            self.down.append(stage)
        self.mid = _stage({
            "block_1": ResnetBlock(block_in, block_in, dropout, num_groups),
            "attn_1": AttnBlock(block_in, num_groups),
            "block_2": ResnetBlock(block_in, block_in, dropout, num_groups),
        })
        self.norm_out = Normalize(block_in, num_groups)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels,
                                  kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for stage in self.down:
            h = _blocks(stage, h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(nonlinearity(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent ``(B, z_channels, h, w)`` -> image ``(B, out_ch, h*f, w*f)``; each level has ``num_res_blocks + 1`` blocks.

    ``self.up[i]`` is the level at resolution ``resolution / 2**i`` (index 0 is the output
    level), though the levels run from the deepest up — upstream's order and keys.
    """

    def __init__(self, *, ch: int, out_ch: int, ch_mult: list, num_res_blocks: int, attn_resolutions: list,
                 resolution: int, z_channels: int, dropout: float = 0.0, num_groups: int = 32,
                 in_channels: int = 3, double_z: bool = True):
        super().__init__()
        block_in = ch * ch_mult[-1]
        current_res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = _stage({
            "block_1": ResnetBlock(block_in, block_in, dropout, num_groups),
            "attn_1": AttnBlock(block_in, num_groups),
            "block_2": ResnetBlock(block_in, block_in, dropout, num_groups),
        })
        self.up = nn.ModuleList()
        for level in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[level]
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, dropout, num_groups))
                block_in = block_out
                if current_res in attn_resolutions:
                    attns.append(AttnBlock(block_in, num_groups))
            stage = _stage({"block": blocks, "attn": attns})
            if level != 0:
                stage.upsample = Upsample(block_in)
                current_res *= 2
            self.up.insert(0, stage)
        self.norm_out = Normalize(block_in, num_groups)
        self.conv_out = nn.Conv2d(block_in, out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for stage in reversed(self.up):
            h = _blocks(stage, h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(nonlinearity(self.norm_out(h)))
