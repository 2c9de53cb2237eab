"""Collectives that are no-ops in a single process, so the same code runs with and without DDP.

State updated outside autograd (codebook statistics, the discriminator's gradients) must be
reduced across ranks by hand, or each rank drifts to a different model.
"""
import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place mean over ranks."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In place: rank ``src``'s values on every rank."""
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor
