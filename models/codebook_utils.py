"""Small pure helpers shared by every codebook: EMA, distances, DDP reductions, dead-code restart.

Every quantizer uses these, so perplexity and usage mean the same thing for all
model families, and EMA statistics stay identical across DDP ranks.
"""
import torch
import torch.nn.functional as F
from einops import rearrange

from core.distributed import all_reduce_mean_, all_reduce_sum_, broadcast_, is_distributed  # noqa: F401
from metric_utils.codebook import code_histogram, perplexity_from_counts, perplexity_from_indices  # noqa: F401


def l2_distances(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(N, V)`` between vectors ``(N, D)`` and codes ``(V, D)``."""
    return (
        flat.pow(2).sum(1, keepdim=True)
        - 2 * flat @ codebook.t()
        + codebook.pow(2).sum(1)[None, :]
    )


def flatten_channels_last(z: torch.Tensor) -> torch.Tensor:
    """``(B, D, H, W) -> (B*H*W, D)``."""
    return rearrange(z, "b d h w -> (b h w) d")


def ema_inplace(moving_avg: torch.Tensor, new: torch.Tensor, decay: float) -> None:
    moving_avg.data.mul_(decay).add_(new, alpha=1 - decay)


def laplace_smoothing(counts: torch.Tensor, n_categories: int, eps: float = 1e-5) -> torch.Tensor:
    """Smoothed cluster sizes that keep the same total and never reach zero."""
    total = counts.sum()
    return (counts + eps) / (total + n_categories * eps) * total


def sample_vectors(samples: torch.Tensor, num: int) -> torch.Tensor:
    """``num`` rows of ``samples``, with replacement only when there are too few."""
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, device=samples.device)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=samples.device)
    return samples[idx]


@torch.no_grad()
def restart_dead_codes(
    codebook: torch.Tensor,
    usage: torch.Tensor,
    encoder_outputs: torch.Tensor,
    threshold: float,
) -> int:
    """Replace codes whose running ``usage`` is below ``threshold`` with encoder outputs.

    ``codebook`` ``(V, D)`` is written in place; ``encoder_outputs`` ``(N, D)`` come
    from the current batch. The replacement vectors are drawn on rank 0 and broadcast
    so every DDP rank keeps the same codebook. Returns the number of restarted codes.
    """
    dead = usage < threshold
    n_dead = int(dead.sum())
    if n_dead == 0:
        return 0
    replacements = sample_vectors(encoder_outputs.detach().to(codebook.dtype), n_dead)
    broadcast_(replacements)
    codebook[dead] = replacements
    return n_dead


def one_hot_counts(indices: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``(N,) -> (N, V)`` float one-hot encodings."""
    return F.one_hot(indices.reshape(-1).long(), vocab_size).float()
