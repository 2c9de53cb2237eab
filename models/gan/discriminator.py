"""PatchGAN discriminator: one real/fake score per overlapping image patch.

The N-layer design of pix2pix (as in taming-transformers' NLayerDiscriminator):
``n_layers`` stride-2 4x4 convolutions double the width up to ``8 * ndf``, then two
stride-1 convolutions map to a one-channel logit map. Weights start from N(0, 0.02).
"""
import torch
from torch import nn

KERNEL = 4
MAX_WIDTH_MULT = 8


def min_frame_size(n_layers: int) -> int:
    """Smallest frame side that still leaves a 1x1 logit map after all layers."""
    return 3 * 2**n_layers


class PatchGANDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        widths = [ndf * min(2**i, MAX_WIDTH_MULT) for i in range(n_layers + 1)]
        layers = [nn.Conv2d(in_channels, widths[0], KERNEL, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(widths[i - 1], widths[i], KERNEL, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(widths[i]),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(widths[-1], 1, KERNEL, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(n, C, H, W)`` in [-1, 1] -> logits ``(n, 1, h, w)``, one per patch."""
        return self.main(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
