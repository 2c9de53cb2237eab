"""The optimizers and the learning-rate schedule (nanoGPT's ``configure_optimizers``): built here,
stepped by the trainer; the losses never see them."""
import math
from typing import Optional

import torch
from torch import nn

from core.config import TrainArgs


def adam(params, **options) -> torch.optim.Adam:
    """Adam in its fused form where the device has one: the plain and foreach forms read every
    parameter's step counter to the host on each step (a device sync per tensor)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **options)
    except RuntimeError:  # a device without a fused kernel
        return torch.optim.Adam(params, **options)


def lr_factor(args: TrainArgs, step: int) -> float:
    """The learning rate at ``step`` (steps done so far) as a fraction of ``train_args.lr``.

    ``exponential`` (the seed's): x ``lr_decay`` every ``lr_decay_interval`` steps; ``cosine``:
    half a cosine from ``lr`` down to ``lr_min`` at ``num_steps``; ``constant``. A linear
    warm-up over the first ``warmup_steps`` multiplies any of them.
    """
    warmup = min(1.0, (step + 1) / args.warmup_steps) if args.warmup_steps else 1.0
    if args.lr_schedule == "exponential":
        return warmup * args.lr_decay ** (step // args.lr_decay_interval)
    if args.lr_schedule == "cosine":
        progress = min(1.0, max(0, step - args.warmup_steps) / max(1, args.num_steps - args.warmup_steps))
        floor = args.lr_min / args.lr
        return warmup * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return warmup


def describe_lr(args: TrainArgs) -> str:
    """The learning rate and its schedule, as the start-up line says it."""
    warmup = f", linear warm-up over {args.warmup_steps} steps" if args.warmup_steps else ""
    if args.lr_schedule == "cosine":
        return f"lr {args.lr:.2e}, cosine to {args.lr_min:.2e} at step {args.num_steps}{warmup} (lr_schedule)"
    if args.lr_schedule == "constant" or args.lr_decay == 1:
        return f"lr {args.lr:.2e} (constant{warmup})"
    return (f"lr {args.lr:.2e}, x{args.lr_decay:g} every {args.lr_decay_interval} steps{warmup} "
            f"(lr_decay, lr_decay_interval)")


def build_optimizers(args: TrainArgs, model: nn.Module, discriminator: Optional[nn.Module] = None) -> tuple:
    """``(optimizer, optimizer_disc or None, scheduler)``.

    The autoencoder's Adam covers what the model trains (an EMA codebook is state, not a
    parameter); the discriminator's has its own rate and betas, and no schedule.
    """
    optimizer = adam(model.trainable_parameters(), lr=args.lr, betas=tuple(args.betas))
    optimizer_disc = None
    if discriminator is not None:
        optimizer_disc = adam(discriminator.parameters(), lr=args.disc_lr, betas=(args.disc_beta1, args.disc_beta2))
    return optimizer, optimizer_disc, build_scheduler(args, optimizer)


def build_scheduler(args: TrainArgs, optimizer: torch.optim.Optimizer, step: int = 0):
    """The schedule, stepped once per optimizer step, at ``step`` steps done.

    The rate is a pure function of the step (``lr_factor``): a resumed run rebuilds it at its
    step and continues exactly, whatever schedule wrote the checkpoint.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: lr_factor(args, done), last_epoch=step - 1)
