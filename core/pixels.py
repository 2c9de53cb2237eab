"""The one conversion pair between pixels in [0, 1] and the models' range [-1, 1]."""
import torch


def to_model_range(pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return pixels * 2.0 - 1.0


def to_pixel_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (not clamped)."""
    return (x + 1.0) * 0.5
