"""The design document's training utilities, where it names them."""
import torch
from torchvision import transforms

from core.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401 (the seed's names live here)
from core.config import ConfigError, TrainArgs  # noqa: F401
from core.runtime import autocast, format_duration, seed_everything, select_device, set_deterministic  # noqa: F401
from models.architecture import analyze_model_architecture  # noqa: F401
from models.builders import load_config  # noqa: F401

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


def get_train_args_from_config(config_path: str = "param.json") -> TrainArgs:
    """The design document's accessor: the validated ``train_args`` of a config file."""
    return load_config(config_path).train_args
