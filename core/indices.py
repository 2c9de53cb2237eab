"""Code indices as the models return them: one tensor, or a list per level (bottom level first)."""
from typing import Optional, Union

import torch

Indices = Union[torch.Tensor, list]


def as_level_list(indices: Optional[Indices]) -> list:
    """Indices as a list per level, whatever the model returned."""
    if indices is None:
        return []
    if isinstance(indices, (list, tuple)):
        return list(indices)
    return [indices]
