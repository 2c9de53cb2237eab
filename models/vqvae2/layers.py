"""Convolutional building blocks of the hierarchical VQ-VAE (VQ-VAE-2).

No normalisation layers: ``encode`` must neither depend on the other frames of the
batch nor change any running statistic, and ReZero residuals (a learned gain that
starts at zero) keep the stacks trainable without them.
"""
import math

import torch
from torch import nn


def resampling_steps(rate: int) -> int:
    """Number of 2x (down|up)sampling convolutions for a scaling ``rate`` (a power of 2)."""
    steps = int(math.log2(rate)) if rate >= 1 else -1
    if steps < 0 or 2**steps != rate:
        raise ValueError(f"scaling rate {rate} is not a power of 2")
    return steps


class ReZeroBlock(nn.Module):
    """``x + alpha * f(x)`` with ``alpha`` a learned scalar initialised to 0."""

    def __init__(self, channels: int, res_channels: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, res_channels, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(res_channels, channels, 3, padding=1, bias=False),
            nn.ReLU(),
        )
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.alpha * self.layers(x)


def residual_stack(channels: int, res_channels: int, nb_layers: int) -> nn.Sequential:
    return nn.Sequential(*[ReZeroBlock(channels, res_channels) for _ in range(nb_layers)])


class Encoder(nn.Module):
    """Downsample by ``rate`` with strided 4x4 convs, then a 3x3 conv and a residual stack.

    ``(b, in_channels, H, W) -> (b, hidden_channels, H / rate, W / rate)``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, res_channels: int, nb_res_layers: int, rate: int):
        super().__init__()
        layers, channels = [], in_channels
        for step in range(resampling_steps(rate)):
            out = hidden_channels // 2 if step == 0 else hidden_channels
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.ReLU()]
            channels = out
        layers.append(nn.Conv2d(channels, hidden_channels, 3, padding=1))
        layers.append(residual_stack(hidden_channels, res_channels, nb_res_layers))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """A 3x3 conv and a residual stack, then upsample by ``rate`` with transposed 4x4 convs.

    ``(b, in_channels, h, w) -> (b, out_channels, h * rate, w * rate)``; the last
    layer is a plain 3x3 conv (no activation), whose weight the adaptive GAN loss reads.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 res_channels: int, nb_res_layers: int, rate: int):
        super().__init__()
        layers = [
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
            residual_stack(hidden_channels, res_channels, nb_res_layers),
        ]
        channels = hidden_channels
        for _ in range(resampling_steps(rate)):
            layers += [nn.ConvTranspose2d(channels, hidden_channels // 2, 4, stride=2, padding=1), nn.ReLU()]
            channels = hidden_channels // 2
        self.layers = nn.Sequential(*layers)
        self.out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.layers(x))


class CodeUpsampler(nn.Module):
    """Bring a higher level's codes up by ``rate``: transposed 4x4 convs, ``channels`` kept."""

    def __init__(self, channels: int, rate: int):
        super().__init__()
        layers = []
        for _ in range(resampling_steps(rate)):
            layers += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.ReLU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
