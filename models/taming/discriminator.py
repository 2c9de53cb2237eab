"""Taming's PatchGAN discriminator (pix2pix's N-layer design) and its ActNorm option.

Keys are upstream's: ``main.{i}.*`` for the layers of one ``nn.Sequential``, with
ActNorm's ``loc``/``scale``/``initialized`` when ``use_actnorm``.
"""
import torch
from torch import nn


def weights_init(module: nn.Module) -> None:
    """pix2pix initialisation: convs N(0, 0.02), BatchNorm scale N(1, 0.02) and zero shift."""
    classname = module.__class__.__name__
    if "Conv" in classname:
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif "BatchNorm" in classname:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.constant_(module.bias, 0.0)


class ActNorm(nn.Module):
    """Per-channel affine map initialised from the first training batch to zero mean, unit std."""

    def __init__(self, num_features: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        self.loc.copy_(-mean)
        self.scale.copy_(1 / (std + 1e-6))
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.initialized.item() == 0:
            self.initialize(x)
        return self.scale * (x + self.loc)


class NLayerDiscriminator(nn.Module):
    """Real/fake logits per overlapping patch: ``(B, input_nc, H, W) -> (B, 1, H', W')``."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, use_actnorm: bool = False):
        super().__init__()
        norm_layer = ActNorm if use_actnorm else nn.BatchNorm2d
        use_bias = use_actnorm  # BatchNorm has its own shift
        layers = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev_mult, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1  # the last hidden layer keeps the resolution
            layers += [
                nn.Conv2d(ndf * prev_mult, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=use_bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)
