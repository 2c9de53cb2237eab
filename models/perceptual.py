"""LPIPS (VGG16): the frozen perceptual network of the perceptual loss and of the LPIPS metric.

One network for both (the trainer builds it once and hands it to each). It computes what
``lpips.LPIPS(net="vgg")`` computes (a test checks the values), written out here only for
its state-dict names, which are taming-transformers': ``scaling_layer.{shift,scale}``,
``net.slice{1..5}.{i}.*`` (torchvision's VGG16 ``features`` indices) and
``lin{0..4}.model.1.weight``, the keys an official Taming checkpoint holds under
``loss.perceptual_loss.*`` (the ``lpips`` package's module adds a ``lins.*`` alias of every
linear layer, so those files would not load into it). Built offline: the VGG16 weights come
from the torch hub cache or an explicit file, the linear weights from the ``lpips`` package's
own weights file; ``backbone='random'`` is for tests and smoke runs only.
"""
import logging
from typing import Optional

import torch
from torch import nn

from core.config_schema import ConfigError
from core.pretrained import (
    VGG16_FILE,
    load_state_dict_file,
    load_vgg16_slices,
    lpips_linear_weights_path,
    require_weights,
)

logger = logging.getLogger(__name__)

# torchvision's VGG16 'D' layout up to relu5_3; the numbers are conv widths, "M" a 2x2 max-pool.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3: the ends of these index ranges.
_SLICE_ENDS = (4, 9, 16, 23, 30)
_CHANNELS = (64, 128, 256, 512, 512)


def vgg16_feature_layers() -> list:
    """``torchvision.models.vgg16().features[:30]`` without building the 100M-parameter classifier."""
    layers, in_channels = [], 3
    for item in _VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = item
    return layers


class VGG16Slices(nn.Module):
    """VGG16 features cut into five ``nn.Sequential`` slices that keep torchvision's layer indices."""

    def __init__(self):
        super().__init__()
        layers = vgg16_feature_layers()
        start = 0
        for k, end in enumerate(_SLICE_ENDS, start=1):
            slice_k = nn.Sequential()
            for i in range(start, end):
                slice_k.add_module(str(i), layers[i])
            setattr(self, f"slice{k}", slice_k)
            start = end

    def forward(self, x: torch.Tensor) -> list:
        features = []
        for k in range(1, len(_SLICE_ENDS) + 1):
            x = getattr(self, f"slice{k}")(x)
            features.append(x)
        return features


class ScalingLayer(nn.Module):
    """[-1, 1] images -> the ImageNet-normalised range VGG16 was trained on."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """The learned per-channel weighting: a bias-free 1x1 conv (after dropout, hence ``model.1``)."""

    def __init__(self, chn_in: int, chn_out: int = 1, use_dropout: bool = True):
        super().__init__()
        layers = [nn.Dropout()] if use_dropout else []
        layers.append(nn.Conv2d(chn_in, chn_out, kernel_size=1, stride=1, padding=0, bias=False))
        self.model = nn.Sequential(*layers)


def normalize_tensor(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit length along channels."""
    return x / (torch.sqrt(torch.sum(x ** 2, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """Learned perceptual distance ``(B, 1, 1, 1)`` between images in [-1, 1]; frozen, always in eval mode."""

    def __init__(self, backbone: str = "vgg", vgg_weights: Optional[str] = None,
                 lpips_weights: Optional[str] = None, use_dropout: bool = True):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = VGG16Slices()
        for k, channels in enumerate(_CHANNELS):
            setattr(self, f"lin{k}", NetLinLayer(channels, use_dropout=use_dropout))
        self._load_weights(backbone, vgg_weights, lpips_weights)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def _load_weights(self, backbone: str, vgg_weights: Optional[str], lpips_weights: Optional[str]) -> None:
        if backbone == "random":
            logger.warning("LPIPS uses a random VGG16 backbone: the perceptual loss is meaningless (tests only)")
        elif backbone == "vgg":
            path = require_weights("LPIPS (VGG16 backbone)", VGG16_FILE, "train_args.vgg_weights", vgg_weights)
            load_vgg16_slices(self.net, path)
        else:
            raise ConfigError(f"perceptual_backbone = {backbone!r}: expected 'vgg' or 'random'")
        path = lpips_weights or lpips_linear_weights_path("vgg")
        linear = {k: v for k, v in load_state_dict_file(path).items() if k.startswith("lin")}
        missing = [f"lin{k}.model.1.weight" for k in range(len(_CHANNELS)) if f"lin{k}.model.1.weight" not in linear]
        if missing:
            raise ConfigError(f"{path}: not an LPIPS VGG weights file (missing {', '.join(missing)})")
        self.load_state_dict(linear, strict=False)

    def train(self, mode: bool = True):
        """A frozen metric: dropout stays off whatever mode the owning module is put in."""
        return super().train(False)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: A002 (upstream's name)
        feats0 = self.net(self.scaling_layer(input))
        feats1 = self.net(self.scaling_layer(target))
        distance = 0
        for k, (f0, f1) in enumerate(zip(feats0, feats1)):
            diff = (normalize_tensor(f0) - normalize_tensor(f1)) ** 2
            distance = distance + getattr(self, f"lin{k}").model(diff).mean(dim=(2, 3), keepdim=True)
        return distance


def build_lpips(backbone: str = "vgg", vgg_weights: Optional[str] = None,
                lpips_weights: Optional[str] = None) -> LPIPS:
    """The frozen LPIPS network, built offline.

    ``backbone='vgg'`` needs the VGG16 ImageNet weights (hub cache or ``vgg_weights``), found
    before the network is built; ``'random'`` uses a random backbone, for tests and smoke runs only.
    """
    return LPIPS(backbone, vgg_weights, lpips_weights)
