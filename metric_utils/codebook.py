"""Codebook statistics: histogram, perplexity and usage of code indices.

The same definitions for every model family, in training logs and validation alike.
"""
import torch


def code_histogram(indices: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Counts of each code in ``indices`` (any shape), float32, length ``vocab_size``."""
    return torch.bincount(indices.reshape(-1).long(), minlength=vocab_size).float()


def perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of a code histogram: 1 when one code is used, V when all are used evenly."""
    probs = counts.float() / counts.sum().clamp_min(1)
    entropy = -(probs * torch.log(probs.clamp_min(1e-10))).sum()
    return torch.exp(entropy)


def perplexity_from_indices(indices: torch.Tensor, vocab_size: int) -> torch.Tensor:
    return perplexity_from_counts(code_histogram(indices, vocab_size))


def usage_from_counts(counts: torch.Tensor) -> float:
    """Fraction of codes used at least once."""
    return float((counts > 0).float().mean())
