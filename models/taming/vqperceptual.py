"""Taming's VQGAN loss: L1 + LPIPS reconstruction, codebook loss, and a PatchGAN with an adaptive weight.

``forward(..., optimizer_idx)`` is upstream's two-in-one: index 0 is the autoencoder's
loss, index 1 the discriminator's; both return ``(loss, log_dict)`` with upstream's keys.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from models.taming.discriminator import NLayerDiscriminator, weights_init
from models.taming.lpips import LPIPS


def adopt_weight(weight: float, global_step: int, threshold: int = 0, value: float = 0.0) -> float:
    """``value`` before step ``threshold``, then ``weight``."""
    return value if global_step < threshold else weight


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


_D_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}


class VQLPIPSWithDiscriminator(nn.Module):
    """Upstream's constructor arguments, plus where the frozen LPIPS gets its weights offline
    (``perceptual_backbone='vgg'|'random'``, ``vgg_weights``, ``lpips_weights``)."""

    def __init__(self, disc_start: int, codebook_weight: float = 1.0, pixelloss_weight: float = 1.0,
                 disc_num_layers: int = 3, disc_in_channels: int = 3, disc_factor: float = 1.0,
                 disc_weight: float = 1.0, perceptual_weight: float = 1.0, use_actnorm: bool = False,
                 disc_conditional: bool = False, disc_ndf: int = 64, disc_loss: str = "hinge",
                 perceptual_backbone: str = "vgg", vgg_weights: Optional[str] = None,
                 lpips_weights: Optional[str] = None):
        super().__init__()
        if disc_loss not in _D_LOSSES:
            raise ValueError(f"disc_loss = {disc_loss!r}: expected one of {', '.join(_D_LOSSES)}")
        self.codebook_weight = codebook_weight
        self.pixel_weight = pixelloss_weight
        self.perceptual_loss = LPIPS(perceptual_backbone, vgg_weights, lpips_weights)
        self.perceptual_weight = perceptual_weight
        self.discriminator = NLayerDiscriminator(input_nc=disc_in_channels, n_layers=disc_num_layers,
                                                 use_actnorm=use_actnorm, ndf=disc_ndf)
        self.discriminator.apply(weights_init)
        self.discriminator_iter_start = disc_start
        self.disc_loss = _D_LOSSES[disc_loss]
        self.disc_factor = disc_factor
        self.discriminator_weight = disc_weight
        self.disc_conditional = disc_conditional

    def calculate_adaptive_weight(self, nll_loss: torch.Tensor, g_loss: torch.Tensor,
                                  last_layer: torch.Tensor) -> torch.Tensor:
        """|grad nll| / |grad g_loss| at the decoder's last layer, clamped to [0, 1e4], times ``disc_weight``."""
        nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
        g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
        return torch.clamp(d_weight, 0.0, 1e4).detach() * self.discriminator_weight

    def _logits(self, images: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        if self.disc_conditional != (cond is not None):
            raise ValueError(f"disc_conditional = {self.disc_conditional} but cond is {'absent' if cond is None else 'given'}")
        return self.discriminator(images if cond is None else torch.cat((images, cond), dim=1))

    def forward(self, codebook_loss: torch.Tensor, inputs: torch.Tensor, reconstructions: torch.Tensor,
                optimizer_idx: int, global_step: int, last_layer: Optional[torch.Tensor] = None,
                cond: Optional[torch.Tensor] = None, split: str = "train"):
        inputs, reconstructions = inputs.contiguous(), reconstructions.contiguous()
        disc_factor = adopt_weight(self.disc_factor, global_step, threshold=self.discriminator_iter_start)
        if optimizer_idx == 0:
            return self._autoencoder_loss(codebook_loss, inputs, reconstructions, disc_factor, last_layer, cond, split)
        if optimizer_idx == 1:
            return self._discriminator_loss(inputs, reconstructions, disc_factor, cond, split)
        raise ValueError(f"optimizer_idx = {optimizer_idx!r}: expected 0 (autoencoder) or 1 (discriminator)")

    def _autoencoder_loss(self, codebook_loss, inputs, reconstructions, disc_factor, last_layer, cond, split):
        # Upstream stores pixelloss_weight but never applies it; every release uses 1.0, so applying it is safe.
        rec_loss = self.pixel_weight * torch.abs(inputs - reconstructions)
        if self.perceptual_weight > 0:
            p_loss = self.perceptual_loss(inputs, reconstructions)
            rec_loss = rec_loss + self.perceptual_weight * p_loss
        else:
            p_loss = torch.zeros((), device=inputs.device)
        nll_loss = rec_loss.mean()

        zero = torch.zeros((), device=inputs.device)
        if disc_factor == 0:
            # Before disc_start the GAN term is multiplied by 0: skip the discriminator pass and the
            # two gradient computations of the adaptive weight (upstream pays for them anyway).
            g_loss, d_weight = zero, zero
        else:
            g_loss = -self._logits(reconstructions, cond).mean()
            if last_layer is not None and torch.is_grad_enabled() and g_loss.requires_grad:
                d_weight = self.calculate_adaptive_weight(nll_loss, g_loss, last_layer)
            else:  # no graph to differentiate (validation): upstream falls back to 0 as well
                d_weight = zero
        loss = nll_loss + d_weight * disc_factor * g_loss + self.codebook_weight * codebook_loss.mean()

        log = {
            f"{split}/total_loss": loss.clone().detach().mean(),
            f"{split}/quant_loss": codebook_loss.detach().mean(),
            f"{split}/nll_loss": nll_loss.detach().mean(),
            f"{split}/rec_loss": rec_loss.detach().mean(),  # upstream's: includes the perceptual term
            f"{split}/p_loss": p_loss.detach().mean(),
            f"{split}/d_weight": d_weight.detach(),
            f"{split}/disc_factor": torch.tensor(disc_factor),
            f"{split}/g_loss": g_loss.detach().mean(),
        }
        return loss, log

    def _discriminator_loss(self, inputs, reconstructions, disc_factor, cond, split):
        logits_real = self._logits(inputs.detach(), cond)
        logits_fake = self._logits(reconstructions.detach(), cond)
        d_loss = disc_factor * self.disc_loss(logits_real, logits_fake)
        log = {
            f"{split}/disc_loss": d_loss.clone().detach().mean(),
            f"{split}/logits_real": logits_real.detach().mean(),
            f"{split}/logits_fake": logits_fake.detach().mean(),
        }
        return d_loss, log
