"""The training objective, one for every model family.

``LossCalculator`` computes: reconstruction (MSE or L1) x ``pixel_loss_factor``, the model's
VQ loss x ``codebook_weight``, optionally LPIPS x ``perceptual_loss_factor``, and with
``use_gan`` a PatchGAN term weighted by the adaptive weight from ``disc_start`` on; and the
discriminator's own loss. It computes losses only: the trainer owns both optimizers.

Its submodules carry taming-transformers' names (``perceptual_loss``, ``discriminator``), so
the ``loss.*`` keys of an official Taming checkpoint load into it; Taming's ``lossconfig``
only sets the defaults of the same ``train_args`` keys (``models/taming/adapter.py``).
"""
import contextlib
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from core.config import TrainArgs
from core.config_schema import ConfigError
from core.distributed import broadcast_
from models.discriminator import NLayerDiscriminator, min_frame_size
from train.adversarial import D_LOSSES, adaptive_weight, adopt_weight, generator_loss

RECON_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


@contextlib.contextmanager
def frozen(module: nn.Module):
    """No gradients into ``module`` while the autoencoder's loss passes through it."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def same_on_every_rank(module: nn.Module) -> nn.Module:
    """Start every DDP rank from rank 0's weights (no-op in one process)."""
    for tensor in module.state_dict().values():
        broadcast_(tensor)
    return module


def uses_perceptual(args: TrainArgs) -> bool:
    """LPIPS is part of the loss when asked for (by default with a GAN) with a weight above 0:
    at weight 0 (e.g. Taming's ``perceptual_weight: 0``) the network would cost a VGG16 pass for nothing."""
    wanted = args.use_perceptual if args.use_perceptual is not None else args.use_gan
    return bool(wanted) and args.perceptual_loss_factor > 0


class LossCalculator(nn.Module):
    """The autoencoder's objective and the discriminator's, from ``train_args``.

    ``perceptual`` is the frozen LPIPS network (the trainer builds one and shares it with
    the metrics); it is required when ``uses_perceptual(train_args)``. ``output_channels``
    and ``frame_size`` size and check the PatchGAN.
    """

    def __init__(self, args: TrainArgs, output_channels: int = 3, frame_size: tuple = (64, 64),
                 perceptual: Optional[nn.Module] = None):
        super().__init__()
        self.args = args
        self.recon_fn = RECON_LOSSES[args.recon_loss]
        if uses_perceptual(args) and perceptual is None:
            raise ValueError("the loss uses LPIPS (train_args.use_perceptual or use_gan): pass the perceptual network")
        if uses_perceptual(args) and output_channels != 3:
            raise ConfigError(f"train_args.use_perceptual: LPIPS needs 3-channel frames, the model outputs {output_channels}")
        self.perceptual_loss = perceptual if uses_perceptual(args) else None
        self.discriminator = self._build_discriminator(output_channels, frame_size) if args.use_gan else None
        self.d_loss_fn = D_LOSSES[args.disc_loss]

    def _build_discriminator(self, channels: int, frame_size: tuple) -> nn.Module:
        need, size = min_frame_size(self.args.disc_layers), min(frame_size)
        if size < need:
            raise ConfigError(
                f"train_args.disc_layers = {self.args.disc_layers}: {size}-px frames are too small for the "
                f"PatchGAN (needs at least {need} px); lower disc_layers or raise data_args.resolution")
        discriminator = NLayerDiscriminator(channels, self.args.disc_ndf, self.args.disc_layers, self.args.disc_actnorm)
        return same_on_every_rank(discriminator)

    def train(self, mode: bool = True):
        """The discriminator trains; LPIPS stays frozen in eval mode whatever the caller asks."""
        super().train(mode)
        if self.perceptual_loss is not None:
            self.perceptual_loss.eval()
        return self

    # -- the schedule ---------------------------------------------------------------
    def disc_factor_at(self, step: int) -> float:
        """The GAN's factor at ``step``: 0 without a GAN and before ``disc_start``."""
        return adopt_weight(self.args.disc_factor, step, self.args.disc_start) if self.args.use_gan else 0.0

    def discriminator_due(self, step: int) -> bool:
        """Train the discriminator at ``step``? Every ``disc_interval`` steps once the GAN is on."""
        return self.disc_factor_at(step) > 0 and step % self.args.disc_interval == 0

    def instance_noise_std(self, step: int) -> float:
        """Std of the noise on discriminator inputs: ``instance_noise`` decaying linearly to 0."""
        return self.args.instance_noise * max(0.0, 1.0 - step / self.args.num_steps)

    # -- the losses -------------------------------------------------------------------
    def compute_total_loss(self, images: torch.Tensor, images_recon: torch.Tensor, vq_loss: torch.Tensor,
                           step: int, last_layer: Optional[torch.Tensor] = None) -> dict:
        """The autoencoder's objective ``total_loss`` (with graph) and its terms (detached tensors).

        ``last_layer`` is the decoder's final weight, where the adaptive GAN weight is measured.
        """
        args = self.args
        zero = images.new_zeros(())
        recon_error = F.mse_loss(images_recon, images)  # logged as is: comparable across configs (PSNR)
        pixel_loss = recon_error if args.recon_loss == "mse" else self.recon_fn(images_recon, images)
        rec_loss = args.pixel_loss_factor * pixel_loss
        perceptual_loss = zero
        if self.perceptual_loss is not None:
            perceptual_loss = self.perceptual_loss(images, images_recon).mean()
            rec_loss = rec_loss + args.perceptual_loss_factor * perceptual_loss
        total_loss = rec_loss + args.codebook_weight * vq_loss
        g_loss, lambda_gan = zero, zero
        disc_factor = self.disc_factor_at(step)
        if disc_factor > 0:  # before disc_start the PatchGAN plays no part
            with frozen(self.discriminator):
                g_loss = generator_loss(self.discriminator(images_recon))
            lambda_gan = adaptive_weight(rec_loss, g_loss, last_layer, args.disc_weight)
            total_loss = total_loss + disc_factor * lambda_gan * g_loss
        return {
            "total_loss": total_loss,
            "recon_error": recon_error.detach(),
            "pixel_loss": pixel_loss.detach(),
            "vq_loss": vq_loss.detach(),
            "perceptual_loss": perceptual_loss.detach(),
            "g_loss": g_loss.detach(),
            "disc_factor": disc_factor,
            "lambda_gan": lambda_gan.detach(),
        }

    def discriminator_loss(self, images: torch.Tensor, images_recon: torch.Tensor, step: int) -> tuple:
        """``(d_loss, logs)``: the discriminator's loss on real vs reconstructed frames (detached)."""
        real, fake = images.detach(), images_recon.detach()
        std = self.instance_noise_std(step)
        if std > 0:
            real = real + std * torch.randn_like(real)
            fake = fake + std * torch.randn_like(fake)
        logits_real, logits_fake = self.discriminator(real), self.discriminator(fake)
        d_loss = self.disc_factor_at(step) * self.d_loss_fn(logits_real, logits_fake)
        logs = {"d_loss": d_loss.detach(), "logits_real": logits_real.detach().mean(),
                "logits_fake": logits_fake.detach().mean(), "instance_noise": std}
        return d_loss, logs
