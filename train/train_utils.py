"""Small training utilities named by the design document."""
import contextlib
import math
import os
import random

import numpy as np
import torch
from torchvision import transforms

from train.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401 (the seed's names live here)
from train.config import ConfigError, get_train_args_from_config, load_config  # noqa: F401

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


class NormalizeInverse(transforms.Normalize):
    """Undo ``transforms.Normalize(mean, std)``: [-1, 1] back to [0, 1] for the defaults."""

    def __init__(self, mean=MEAN, std=STD):
        mean = torch.as_tensor(mean)
        std = torch.as_tensor(std)
        super().__init__(mean=(-mean / std).tolist(), std=(1.0 / std).tolist())

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return super().__call__(tensor.clone())


def normalizers() -> tuple:
    """``(normalize, unnormalize)`` between [0, 1] pixels and the models' [-1, 1]."""
    return transforms.Normalize(mean=MEAN, std=STD), NormalizeInverse(MEAN, STD)


def psnr_from_mse(mse_normalized: float) -> float:
    """PSNR in dB on [0, 1] pixels from an MSE measured in the [-1, 1] range."""
    mse01 = mse_normalized / 4.0
    return 10.0 * math.log10(1.0 / mse01) if mse01 > 0 else float("inf")


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda:N`` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train_args.device = {name!r}: expected auto, cpu or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train_args.device = {name!r}: no CUDA device on this machine (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train_args.device = {name!r}: only {torch.cuda.device_count()} CUDA devices")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def autocast(precision: str, device: torch.device):
    """Autocast context for ``precision`` (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def analyze_model_architecture(model, input_shape, architecture_file, logger):
    """Parameter counts, latent shapes and bits per frame, written to ``architecture_file``."""
    from train.architecture import analyze_model_architecture as analyze

    return analyze(model, input_shape, architecture_file, logger)
