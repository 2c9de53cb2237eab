"""The frozen LPIPS network used as the perceptual loss and as the LPIPS metric, built offline."""
import logging
import warnings
from typing import Optional

from core.pretrained import VGG16_FILE, load_vgg16_slices, lpips_linear_weights_path, require_weights

logger = logging.getLogger(__name__)


def build_lpips(backbone: str = "vgg", vgg_weights: Optional[str] = None, lpips_weights: Optional[str] = None):
    """A frozen ``lpips.LPIPS(net='vgg')`` in eval mode, built offline.

    ``backbone='vgg'`` needs the VGG16 ImageNet weights (hub cache or ``vgg_weights``);
    ``'random'`` uses a random backbone, for tests and smoke runs only.
    """
    import lpips

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = _lpips_vgg(lpips, backbone, vgg_weights, lpips_weights)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _lpips_vgg(lpips, backbone: str, vgg_weights: Optional[str], lpips_weights: Optional[str]):
    vgg_path = None
    if backbone == "random":
        logger.warning("LPIPS uses a random VGG16 backbone: the perceptual loss/metric is meaningless (tests only)")
    else:  # find the weights before paying for the network
        vgg_path = require_weights("LPIPS (VGG16 backbone)", VGG16_FILE, "train_args.vgg_weights", vgg_weights)
    model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False,
                        model_path=lpips_weights or lpips_linear_weights_path())
    if vgg_path is not None:
        load_vgg16_slices(model.net, vgg_path)
    return model
