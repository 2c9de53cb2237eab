"""The training objective: reconstruction + VQ (+ LPIPS) (+ PatchGAN with adaptive weight).

Two paths, chosen once by ``build_loss_calculator`` from the model:

* ``LossCalculator`` — every non-Taming family: MSE/L1 reconstruction, the model's VQ
  loss, optional LPIPS, and an optional PatchGAN trained by its own Adam every
  ``disc_interval`` steps.
* ``TamingLossCalculator`` — Taming VQGAN: upstream's ``VQLPIPSWithDiscriminator``,
  alternating ``optimizer_idx`` 0 (autoencoder) and 1 (discriminator) every step.

Both expose the same calls, so the training step never asks which model it trains:
``compute_total_loss`` (autoencoder objective and logs), ``discriminator_step``,
``autoencoder_optimizer``, ``state_dict``/``load_state_dict`` (discriminator + its optimizer).
"""
import contextlib
import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from core.config import Config
from core.config_schema import ConfigError
from models.builders import load_config
from models.codebook_utils import all_reduce_mean_, broadcast_
from models.gan import D_LOSSES, PatchGANDiscriminator, generator_loss, min_frame_size
from models.perceptual import build_lpips

logger = logging.getLogger(__name__)

TAMING_BETAS = (0.5, 0.9)  # upstream's Adam betas for both Taming optimizers
LAMBDA_MAX = 1e4  # clamp of the adaptive GAN weight
RECON_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}
# train_args read only by the plain path (Taming's equivalents live in model_args.lossconfig)
PLAIN_PATH_KEYS = frozenset({
    "recon_loss", "pixel_loss_factor", "perceptual_loss_factor", "use_perceptual", "disc_factor", "disc_start",
    "disc_weight", "disc_interval", "disc_lr", "disc_beta1", "disc_beta2", "disc_layers", "disc_ndf", "disc_loss",
    "instance_noise",
})


class VQGANLossHelper:
    """The two VQGAN schedules: when the GAN term switches on, and how strongly."""

    @staticmethod
    def adopt_weight(weight: float, global_step: int, threshold: int = 0, value: float = 0.0) -> float:
        """``value`` before step ``threshold``, ``weight`` from it on."""
        return value if global_step < threshold else weight

    @staticmethod
    def calculate_lambda(
        decoder_last_layer: torch.Tensor,
        perceptual_loss: torch.Tensor,
        gan_loss: torch.Tensor,
        disc_weight: float = 1.0,
    ) -> torch.Tensor:
        """Balance the GAN gradient against the reconstruction gradient at the decoder's last layer.

        ``||d perceptual / dW|| / (||d gan / dW|| + 1e-4)``, clamped to [0, 1e4], detached,
        times ``disc_weight``. Without a graph (evaluation) the weight is 0, as upstream.
        """
        if not (perceptual_loss.requires_grad and gan_loss.requires_grad):
            return torch.zeros((), device=decoder_last_layer.device)
        rec_grad = torch.autograd.grad(perceptual_loss, decoder_last_layer, retain_graph=True)[0]
        gan_grad = torch.autograd.grad(gan_loss, decoder_last_layer, retain_graph=True)[0]
        ratio = rec_grad.float().norm() / (gan_grad.float().norm() + 1e-4)
        return ratio.clamp(0.0, LAMBDA_MAX).detach() * disc_weight


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
    """Start every DDP rank from rank 0's discriminator (no-op in one process)."""
    for tensor in module.state_dict().values():
        broadcast_(tensor)
    return module


def discriminator_update(loss: torch.Tensor, discriminator: nn.Module, optimizer: torch.optim.Optimizer,
                         scaler=None) -> None:
    """One discriminator step with its gradients averaged over DDP ranks, so every rank keeps
    the same discriminator; with an fp16 ``GradScaler`` it scales, steps and updates it."""
    optimizer.zero_grad(set_to_none=True)
    (loss if scaler is None else scaler.scale(loss)).backward()
    for p in discriminator.parameters():
        if p.grad is not None:
            all_reduce_mean_(p.grad)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()


class LossCalculator:
    """Reconstruction + VQ (+ LPIPS) (+ PatchGAN) for the non-Taming model families.

    ``decoder`` is kept for the seed's signature; the adaptive GAN weight reads
    ``model.last_layer``. ``config`` (a loaded ``Config``) skips reading ``config_path``.
    Missing LPIPS weights raise ``WeightsMissingError`` here, before any step.
    """

    def __init__(self, decoder, num_steps, output_channels, device, base_lr, config_path, model,
                 config: Optional[Config] = None):
        self.config = config if config is not None else load_config(config_path)
        self.args = self.config.train_args
        self.decoder = decoder
        self.model = model
        self.num_steps = num_steps
        self.output_channels = output_channels
        self.device = torch.device(device)
        self.base_lr = base_lr
        self.use_gan = self.args.use_gan
        self._build_losses()

    # -- construction -------------------------------------------------------
    def _build_losses(self) -> None:
        self.recon_fn = RECON_LOSSES[self.args.recon_loss]
        use_perceptual = self.args.use_perceptual if self.args.use_perceptual is not None else self.use_gan
        self.lpips = self._build_lpips() if use_perceptual else None
        self.discriminator = None
        self.optimizer_disc = None
        if self.use_gan:
            self._build_discriminator()

    def _build_lpips(self) -> nn.Module:
        if self.output_channels != 3:
            raise ConfigError(
                f"train_args.use_perceptual: LPIPS needs 3-channel frames, the model outputs {self.output_channels}"
            )
        return build_lpips(self.args.perceptual_backbone, self.args.vgg_weights, self.args.lpips_weights).to(self.device)

    def _build_discriminator(self) -> None:
        need = min_frame_size(self.args.disc_layers)
        size = min(self.config.data_args.frame_size)
        if size < need:
            raise ConfigError(
                f"train_args.disc_layers = {self.args.disc_layers}: {size}-px frames are too small for the "
                f"PatchGAN (needs at least {need} px); lower disc_layers or raise data_args.resolution"
            )
        disc = PatchGANDiscriminator(self.output_channels, self.args.disc_ndf, self.args.disc_layers)
        self.discriminator = same_on_every_rank(disc.to(self.device))
        self.d_loss_fn = D_LOSSES[self.args.disc_loss]
        self.optimizer_disc = torch.optim.Adam(
            self.discriminator.parameters(), lr=self.args.disc_lr, betas=(self.args.disc_beta1, self.args.disc_beta2)
        )

    # -- public face ----------------------------------------------------------
    @property
    def uses_gan(self) -> bool:
        return self.use_gan

    @property
    def trainable_modules(self) -> list:
        """Modules besides the model that train (and move with ``.to()``); LPIPS is frozen."""
        return [self.discriminator] if self.discriminator is not None else []

    @property
    def loss_module(self):
        """The module that an upstream checkpoint's ``loss.*`` keys load into (Taming only)."""
        return None

    def autoencoder_optimizer(self, model, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.trainable_parameters(), lr=lr)

    def disc_factor_at(self, step: int) -> float:
        return VQGANLossHelper.adopt_weight(self.args.disc_factor, step, self.args.disc_start)

    def compute_total_loss(self, images, images_recon, vq_loss, step, optimizer_idx=0) -> dict:
        """The autoencoder objective (``total_loss``, with graph) and detached terms to log."""
        recon_error = F.mse_loss(images_recon, images)  # logged as is: comparable across configs (PSNR)
        pixel_loss = recon_error if self.args.recon_loss == "mse" else self.recon_fn(images_recon, images)
        perceptual_loss = self.lpips(images, images_recon).mean() if self.lpips is not None else None
        rec_loss = self.args.pixel_loss_factor * pixel_loss
        if perceptual_loss is not None:
            rec_loss = rec_loss + self.args.perceptual_loss_factor * perceptual_loss
        total_loss = rec_loss + vq_loss

        g_loss, lambda_gan, disc_factor = None, None, 0.0
        if self.use_gan:
            disc_factor = self.disc_factor_at(step)
            if disc_factor > 0:  # before disc_start the PatchGAN plays no part
                with frozen(self.discriminator):
                    g_loss = generator_loss(self.discriminator(images_recon))
                lambda_gan = VQGANLossHelper.calculate_lambda(
                    self.model.last_layer, rec_loss, g_loss, self.args.disc_weight
                )
                total_loss = total_loss + disc_factor * lambda_gan * g_loss
        return {
            "total_loss": total_loss,
            "recon_error": recon_error.detach(),
            "pixel_loss": pixel_loss.detach(),
            "vq_loss": _detached(vq_loss),
            "perceptual_loss": _detached(perceptual_loss),
            "g_loss": _detached(g_loss),
            "gan_loss": 0.0,  # the discriminator's loss is reported by discriminator_step
            "disc_factor": disc_factor,
            "lambda_gan": _detached(lambda_gan),
        }

    def instance_noise_std(self, step: int) -> float:
        """Std of the noise on discriminator inputs: ``instance_noise`` decaying linearly to 0."""
        return self.args.instance_noise * max(0.0, 1.0 - step / self.num_steps)

    def discriminator_step(self, images, images_recon, vq_loss, step, scaler=None) -> dict:
        """Train the PatchGAN on real vs reconstructed frames every ``disc_interval`` steps.

        The seed scales the discriminator loss by ``disc_factor``, which is 0 before
        ``disc_start``: those steps would change nothing, so they are skipped.
        """
        disc_factor = self.disc_factor_at(step) if self.use_gan else 0.0
        if disc_factor == 0 or step % self.args.disc_interval:
            return {}
        real, fake = images.detach(), images_recon.detach()
        std = self.instance_noise_std(step)
        if std > 0:
            real = real + std * torch.randn_like(real)
            fake = fake + std * torch.randn_like(fake)
        logits_real = self.discriminator(real)
        logits_fake = self.discriminator(fake)
        d_loss = disc_factor * self.d_loss_fn(logits_real, logits_fake)
        discriminator_update(d_loss, self.discriminator, self.optimizer_disc, scaler)
        return {
            "d_loss": d_loss.detach(),
            "logits_real": logits_real.detach().mean(),
            "logits_fake": logits_fake.detach().mean(),
            "instance_noise": std,
            "disc_updated": 1,
        }

    # -- checkpoints ----------------------------------------------------------
    def state_dict(self) -> dict:
        if self.discriminator is None:
            return {}
        return {"disc_state_dict": self.discriminator.state_dict(), "optimizer_disc": self.optimizer_disc.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.discriminator is None:
            return
        if state.get("disc_state_dict") is None:
            logger.warning("checkpoint has no discriminator: the PatchGAN starts from scratch")
            return
        self.discriminator.load_state_dict(state["disc_state_dict"])
        if state.get("optimizer_disc") is not None:
            self.optimizer_disc.load_state_dict(state["optimizer_disc"])


class TamingLossCalculator(LossCalculator):
    """Taming VQGAN: the adapter's ``VQLPIPSWithDiscriminator`` with two Adam optimizers.

    ``optimizer_idx`` 0 is the autoencoder's loss, 1 the discriminator's; the loss module
    itself keeps the discriminator out before its ``disc_start`` (its ``adopt_weight``).
    The GAN schedule and weights are upstream's ``model_args.lossconfig``; of the loss
    keys in ``train_args`` only ``use_gan`` and the LPIPS weight locations apply.
    """

    def _build_losses(self) -> None:
        self._warn_unused_train_args()
        self.loss_fn = self.model.build_loss(
            self.args.perceptual_backbone, self.args.vgg_weights, self.args.lpips_weights
        ).to(self.device)
        if not self.use_gan:  # train_args.use_gan false: the loss module's GAN term stays off
            self.loss_fn.disc_factor = 0.0
        self.discriminator = same_on_every_rank(self.loss_fn.discriminator)
        self.optimizer_disc = torch.optim.Adam(self.discriminator.parameters(), lr=self.base_lr, betas=TAMING_BETAS)

    @property
    def loss_module(self):
        return self.loss_fn

    def _warn_unused_train_args(self) -> None:
        unused = sorted(set(self.config.raw.get("train_args", {})) & PLAIN_PATH_KEYS)
        if unused:
            logger.warning(
                "train_args %s do not apply to %s: its loss follows model_args.lossconfig",
                ", ".join(unused), self.config.model_type,
            )

    def autoencoder_optimizer(self, model, lr: float) -> torch.optim.Optimizer:
        """A new Adam over encoder, decoder, quantizer and quant convs (an EMA codebook is no parameter)."""
        return torch.optim.Adam(model.autoencoder_parameters(), lr=lr, betas=TAMING_BETAS)

    def get_taming_optimizers(self) -> tuple:
        """The seed's ``(opt_ae, opt_disc)``."""
        return self.autoencoder_optimizer(self.model, self.base_lr), self.optimizer_disc

    def _taming_loss(self, images, images_recon, vq_loss, step, optimizer_idx):
        return self.loss_fn(vq_loss, images, images_recon, optimizer_idx, step,
                            last_layer=self.model.last_layer, cond=None, split="train")

    def compute_total_loss(self, images, images_recon, vq_loss, step, optimizer_idx=0) -> dict:
        if optimizer_idx == 1:
            loss, log = self._taming_loss(images, images_recon.detach(), vq_loss, step, 1)
            return {**_zero_terms(), "total_loss": loss, "gan_loss": log["train/disc_loss"], "log_dict": log}
        with frozen(self.discriminator):
            loss, log = self._taming_loss(images, images_recon, vq_loss, step, 0)
        return {
            "total_loss": loss,
            "recon_error": F.mse_loss(images_recon, images).detach(),
            "pixel_loss": (images_recon - images).abs().mean().detach(),  # upstream's pixel term is L1
            "vq_loss": _detached(vq_loss),
            "perceptual_loss": log["train/p_loss"],
            "g_loss": log["train/g_loss"],
            "gan_loss": 0.0,
            "disc_factor": float(log["train/disc_factor"]),
            "lambda_gan": log["train/d_weight"],
            "log_dict": log,
        }

    def discriminator_step(self, images, images_recon, vq_loss, step, scaler=None) -> dict:
        """``optimizer_idx`` 1 every step (the seed's alternation) when ``use_gan``."""
        if not self.use_gan:
            return {}
        d_loss, log = self._taming_loss(images, images_recon.detach(), vq_loss.detach(), step, 1)
        discriminator_update(d_loss, self.discriminator, self.optimizer_disc, scaler)
        return {
            "d_loss": d_loss.detach(),
            "logits_real": log["train/logits_real"],
            "logits_fake": log["train/logits_fake"],
            "disc_updated": int(step >= self.loss_fn.discriminator_iter_start),
        }

    def state_dict(self) -> dict:
        """The loss module's discriminator under upstream's keys; LPIPS is frozen and rebuilt."""
        disc = {k: v for k, v in self.loss_fn.state_dict().items() if k.startswith("discriminator.")}
        return {"disc_state_dict": disc, "optimizer_disc": self.optimizer_disc.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        disc = state.get("disc_state_dict")
        if disc is None:
            logger.warning("checkpoint has no discriminator: the Taming discriminator starts from scratch")
            return
        missing, unexpected = self.loss_fn.load_state_dict(disc, strict=False)
        missing = [k for k in missing if k.startswith("discriminator.")]
        if missing or unexpected:
            raise ConfigError(
                f"disc_state_dict does not fit the Taming discriminator (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        if state.get("optimizer_disc") is not None:
            self.optimizer_disc.load_state_dict(state["optimizer_disc"])


def build_loss_calculator(model, config: Config, device) -> LossCalculator:
    """The one place that picks the loss path, from ``model.uses_taming_loss``."""
    calculator = TamingLossCalculator if model.uses_taming_loss else LossCalculator
    return calculator(
        decoder=model.decoder,
        num_steps=config.train_args.num_steps,
        output_channels=model.output_channels,
        device=device,
        base_lr=config.train_args.lr,
        config_path=config.source,
        model=model,
        config=config,
    )


def _detached(value):
    """A loss term for the logs: detached tensor, or 0.0 when the term is off."""
    return 0.0 if value is None else value.detach()


def _zero_terms() -> dict:
    keys = ("recon_error", "pixel_loss", "vq_loss", "perceptual_loss", "g_loss", "gan_loss", "disc_factor", "lambda_gan")
    return dict.fromkeys(keys, 0.0)
