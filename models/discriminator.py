"""The PatchGAN discriminator: one real/fake logit per overlapping patch (pix2pix's N-layer design).

``n_layers`` stride-2 4x4 convolutions double the width up to ``8 * ndf``, then two stride-1
convolutions map to a one-channel logit map. Keys are taming-transformers' (``main.{i}.*``,
with ActNorm's ``loc``/``scale``/``initialized`` when ``use_actnorm``), so the
discriminator of an official Taming checkpoint (``loss.discriminator.*``) loads into it.
"""
import torch
from torch import nn


KERNEL = 4


def min_frame_size(n_layers: int) -> int:
    """Smallest frame side that still leaves a 1x1 logit map after all layers."""
    return 3 * 2**n_layers


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
        self._known_initialized = False  # mirrors the buffer once read, so later steps read nothing from the device

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        self.loc.copy_(-mean)
        self.scale.copy_(1 / (std + 1e-6))
        self.initialized.fill_(1)
        self._known_initialized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._known_initialized:
            if self.initialized:  # loaded from a checkpoint
                self._known_initialized = True
            else:
                self.initialize(x)
        return self.scale * (x + self.loc)


class NLayerDiscriminator(nn.Module):
    """Real/fake logits per overlapping patch: ``(B, input_nc, H, W) -> (B, 1, H', W')``."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, use_actnorm: bool = False):
        super().__init__()
        norm_layer = ActNorm if use_actnorm else nn.BatchNorm2d
        use_bias = use_actnorm  # BatchNorm has its own shift
        layers = [nn.Conv2d(input_nc, ndf, kernel_size=KERNEL, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev_mult, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1  # the last hidden layer keeps the resolution
            layers += [
                nn.Conv2d(ndf * prev_mult, ndf * mult, kernel_size=KERNEL, stride=stride, padding=1, bias=use_bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=KERNEL, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(n, C, H, W)`` in [-1, 1] -> logits ``(n, 1, h, w)``, one per patch."""
        return self.main(x)
