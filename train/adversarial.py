"""The adversarial part of the objective, once for every family: PatchGAN logits, the hinge or
vanilla discriminator loss, the generator loss, when the GAN switches on (``disc_start``) and
how strongly (the adaptive weight of taming-transformers)."""
from typing import Callable

import torch
import torch.nn.functional as F

ADAPTIVE_WEIGHT_MAX = 1e4  # clamp of the adaptive weight, as upstream


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Penalise real logits below +1 and fake logits above -1."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with real = 1, fake = 0, written with softplus for stability."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


D_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "hinge": hinge_d_loss,
    "vanilla": vanilla_d_loss,
}


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The autoencoder wants its reconstructions scored real (the seed's and Taming's -mean)."""
    return -logits_fake.mean()


def adopt_weight(weight: float, global_step: int, threshold: int = 0, value: float = 0.0) -> float:
    """``value`` before step ``threshold``, ``weight`` from it on (the ``disc_start`` schedule)."""
    return value if global_step < threshold else weight


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    disc_weight: float = 1.0) -> torch.Tensor:
    """Balance the GAN gradient against the reconstruction gradient at the decoder's last layer.

    ``||d rec / dW|| / (||d gan / dW|| + 1e-4)``, clamped to [0, 1e4], detached, times
    ``disc_weight``. Without a graph (evaluation) the weight is 0, as upstream.
    """
    if not (torch.is_grad_enabled() and rec_loss.requires_grad and g_loss.requires_grad):
        return torch.zeros((), device=last_layer.device)
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    ratio = rec_grad.float().norm() / (gan_grad.float().norm() + 1e-4)
    return ratio.clamp(0.0, ADAPTIVE_WEIGHT_MAX).detach() * disc_weight
