"""The optimizers and the learning-rate schedule (nanoGPT's ``configure_optimizers``): built here,
stepped by the trainer; the losses never see them."""
from typing import Optional

import torch
from torch import nn

from core.config import TrainArgs


def build_optimizers(args: TrainArgs, model: nn.Module, discriminator: Optional[nn.Module] = None) -> tuple:
    """``(optimizer, optimizer_disc or None, scheduler)``.

    The autoencoder's Adam covers what the model trains (an EMA codebook is state, not a
    parameter); the discriminator's has its own rate and betas. The seed's ExponentialLR
    multiplies the rate by ``lr_decay`` every ``lr_decay_interval`` steps (the trainer steps it).
    """
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=args.lr, betas=tuple(args.betas))
    optimizer_disc = None
    if discriminator is not None:
        optimizer_disc = torch.optim.Adam(discriminator.parameters(), lr=args.disc_lr,
                                          betas=(args.disc_beta1, args.disc_beta2))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.lr_decay)
    return optimizer, optimizer_disc, scheduler
