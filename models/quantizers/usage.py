"""The one usage tracker and the one dead-code rule of every quantizer that restarts codes.

``usage`` (one value per code, a buffer of the quantizer, so checkpoints keep it) is an
exponential moving average over training steps of each code's share of the step's
vectors, relative to the expected share ``N / K`` (``N`` vectors over all DDP ranks,
``K`` codes): 1 is an average code, 0 a code nobody picks. The rule:

- a code is dead when its usage falls below ``min(dead_code_threshold, MAX_DEAD_FRACTION)``
  of the expected share. With decay 0.99 (a window of about 100 steps) a code that was
  used at the expected share needs about 190 steps without a single vector to die;
- a new codebook starts at that fraction, so a code the first step leaves unused is dead
  at once (as in vector-quantize-pytorch), while a used one climbs away from it;
- a restarted code restarts at the expected share (usage 1): the same 190 steps of grace;
- at most as many codes restart in one step as the batch has distinct vectors (and
  ``MAX_RESTARTS_PER_STEP``), each to a different one of them.

Everything happens on the device with masks and ``torch.where``: no count is read to the
host, so a training step never waits on it. Counts are all-reduced before they enter
``usage``, so every rank finds the same dead codes; the replacement vectors are drawn
on rank 0 and broadcast, so every rank writes the same ones.
"""
from typing import NamedTuple

import torch

from core.distributed import all_reduce_sum_, broadcast_

# A code is never dead while it gets this share of N / K. On param.json 0.15 keeps restarts at
# steady state under 1% of the codebook per step and validation usage above the old rule's 46%
# (0.1: 0.4% and 45.5%; 0.15: 0.8% and 51.2%; 0.2: 1.8% and 52.1%; benchmarks/measure_restarts.py).
MAX_DEAD_FRACTION = 0.15
MAX_RESTARTS_PER_STEP = 1024  # bounds the broadcast of candidate vectors per step


def dead_fraction(dead_code_threshold: float) -> float:
    """The share of ``N / K`` under which a code is dead (0: restarts off)."""
    return min(dead_code_threshold, MAX_DEAD_FRACTION)


def initial_usage(vocab_size: int, dead_code_threshold: float) -> torch.Tensor:
    """What a new codebook's ``usage`` starts at: the dead line itself."""
    return torch.full((vocab_size,), dead_fraction(dead_code_threshold))


@torch.no_grad()
def global_counts(indices: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Code counts of this step over all ranks (``indices`` of any shape; -1 entries are ignored)."""
    valid = indices.reshape(-1)
    counts = torch.zeros(vocab_size, device=indices.device).index_add_(
        0, valid.clamp_min(0).long(), (valid >= 0).float())
    return all_reduce_sum_(counts)


@torch.no_grad()
def update_usage_(usage: torch.Tensor, counts: torch.Tensor, decay: float) -> None:
    """One EMA step of ``usage`` from this step's global ``counts``."""
    share = counts * (counts.numel() / counts.sum().clamp_min(1))
    usage.mul_(decay).add_(share, alpha=1 - decay)


class Restart(NamedTuple):
    codes: torch.Tensor  # (K,) bool: the codes restarted this step
    vectors: torch.Tensor  # (K, D): each restarted code's new vector (rows of other codes are meaningless)


@torch.no_grad()
def distinct_candidates(vectors: torch.Tensor, num: int) -> tuple:
    """Up to ``num`` distinct rows of ``vectors`` in random order, padded to ``num`` rows, and how many are real.

    Equal rows are found by sorting a random projection of the rows (equal rows project
    equally); no row count leaves the device.
    """
    n, dim = vectors.shape
    shuffled = vectors[torch.randperm(n, device=vectors.device)]
    keys = shuffled @ torch.randn(dim, device=vectors.device)
    order = keys.argsort()
    sorted_keys = keys[order]
    first = torch.ones(n, dtype=torch.bool, device=vectors.device)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    distinct = torch.empty_like(first)
    distinct[order] = first
    ranked = torch.argsort((~distinct).to(torch.uint8), stable=True)  # the distinct rows first
    candidates = shuffled[ranked[:num]]
    if candidates.shape[0] < num:
        candidates = torch.cat([candidates, candidates.new_zeros(num - candidates.shape[0], dim)])
    return candidates, distinct.sum().clamp(max=num)


@torch.no_grad()
def restart_dead_codes(usage: torch.Tensor, vectors: torch.Tensor, dead_code_threshold: float) -> Restart:
    """Which codes restart this step and to what; resets their ``usage`` to the expected share.

    ``vectors`` ``(N, D)`` are this rank's inputs of the codebook. The caller writes
    ``Restart.vectors`` into its codebook where ``Restart.codes`` is set.
    """
    vocab_size, dim = usage.numel(), vectors.shape[1]
    dead = usage < dead_fraction(dead_code_threshold)
    num = min(vocab_size, MAX_RESTARTS_PER_STEP)
    candidates, count = distinct_candidates(vectors.float(), num)
    packed = broadcast_(torch.cat([candidates, count.float().expand(1, dim)]))  # one collective: rank 0's draw
    candidates, count = packed[:-1], packed[-1, 0]
    order = dead.long().cumsum(0) - 1
    restarted = dead & (order < count)
    usage.copy_(torch.where(restarted, torch.ones_like(usage), usage))
    return Restart(restarted, candidates[order.clamp(0, num - 1)])


def write_rows_(table: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """``table[rows] = values[rows]`` without reading ``rows`` to the host."""
    table.data.copy_(torch.where(rows.view(-1, *([1] * (table.ndim - 1))), values.to(table.dtype), table.data))


def code_statistics(indices: torch.Tensor, vocab_size: int) -> dict:
    """Perplexity and the share of codes used by ``indices`` (``(N,)`` or ``(N, depth)``), as device tensors."""
    columns = indices.reshape(indices.shape[0], -1) if indices.ndim > 1 else indices[:, None]
    perplexities, used = [], []
    for column in columns.unbind(1):
        valid = column >= 0
        counts = torch.zeros(vocab_size, device=column.device).index_add_(0, column.clamp_min(0).long(), valid.float())
        probs = counts / counts.sum().clamp_min(1)
        perplexities.append(torch.exp(-(probs * probs.clamp_min(1e-10).log()).sum()))
        used.append((counts > 0).float().mean())
    return {"perplexity": torch.stack(perplexities).mean(), "codes_used": torch.stack(used).mean()}


__all__ = ["code_statistics", "global_counts", "restart_dead_codes", "update_usage_",
           "initial_usage", "dead_fraction", "write_rows_", "Restart"]
