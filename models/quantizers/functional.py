"""Small pure helpers every codebook shares (the style of vector-quantize-pytorch's own)."""
import torch
import torch.nn.functional as F
from einops import rearrange


def l2_distances(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(N, V)`` between vectors ``(N, D)`` and codes ``(V, D)``."""
    return flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)[None, :]


def flatten_channels_last(z: torch.Tensor) -> torch.Tensor:
    """``(b, d, *spatial) -> (b * prod(spatial), d)``."""
    return rearrange(z, "b d ... -> (b ...) d")


def l2norm(t: torch.Tensor) -> torch.Tensor:
    return F.normalize(t, dim=-1, eps=1e-6)


def ema_inplace(moving_avg: torch.Tensor, new: torch.Tensor, decay: float) -> None:
    moving_avg.data.mul_(decay).add_(new, alpha=1 - decay)


def laplace_smoothing(counts: torch.Tensor, n_categories: int, eps: float = 1e-5) -> torch.Tensor:
    """Smoothed cluster sizes that keep the same total and never reach zero."""
    total = counts.sum()
    return (counts + eps) / (total + n_categories * eps) * total


def straight_through(quantized: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Exactly ``quantized``'s values with ``z``'s gradient (``z - z.detach()`` is exactly zero).

    The usual ``z + (q - z).detach()`` equals ``q`` only up to rounding; this form makes
    ``decode(encode(x))`` reproduce a forward pass bit for bit.
    """
    return quantized.detach() + (z - z.detach())


def sample_rows(samples: torch.Tensor, num: int) -> torch.Tensor:
    """``num`` rows of ``samples``, with replacement only when there are too few."""
    n = samples.shape[0]
    if n >= num:
        return samples[torch.randperm(n, device=samples.device)[:num]]
    return samples[torch.randint(0, n, (num,), device=samples.device)]
