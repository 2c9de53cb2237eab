"""Sinkhorn-Knopp: the entropic optimal-transport plan between vectors and codes (OptVQ).

vector-quantize-pytorch has no Sinkhorn assignment, so it is this project's own code.

Under DDP the rows (vectors) of the problem are spread over the ranks; every sum over
rows is all-reduced, so all ranks solve the same global problem and agree on the
code marginals. In one process, and with ``distributed=False`` (inference on one rank), there is none.
"""
import math

import torch

from core.distributed import all_reduce_sum_

NORMALIZE_MODES = ("all", "dim", "null")


def normalize_cost(cost: torch.Tensor, mode: str, dim: int, distributed: bool = True) -> torch.Tensor:
    """Put the distances ``cost`` ``(N, K)`` on a fixed scale before ``exp(-cost * epsilon)``.

    ``all``: divide by the standard deviation of all entries (over all ranks);
    ``dim``: divide by ``sqrt(dim)``, the code dimension; ``null``: leave as is.
    OptVQ also centres the costs, which changes no plan (a shift per row cancels).
    """
    if mode == "all":
        moments = torch.stack([cost.new_tensor(cost.numel()), cost.sum(), cost.pow(2).sum()])
        moments = all_reduce_sum_(moments) if distributed else moments
        count, total, squares = moments
        variance = (squares - total**2 / count) / (count - 1).clamp_min(1)
        return cost / (variance.clamp_min(0).sqrt() + 1e-6)
    if mode == "dim":
        return cost / math.sqrt(dim)
    if mode == "null":
        return cost
    raise ValueError(f"normalize_mode = {mode!r}: expected one of {', '.join(NORMALIZE_MODES)}")


@torch.no_grad()
def sinkhorn(cost: torch.Tensor, n_iters: int, epsilon: float, distributed: bool = True) -> torch.Tensor:
    """Transport plan ``(N, K)`` for ``cost`` ``(N, K)`` with uniform marginals.

    Starts from the kernel ``exp(-cost * epsilon)``, then alternately scales the codes'
    columns to mass ``1 / K`` and the vectors' rows to mass ``1 / N`` (``N`` counted
    over all ranks), ``n_iters`` times; rows are exact on return, columns approach ``1 / K``.
    Each row's minimum is subtracted first: the plan is unchanged (the row scaling
    absorbs it) and the kernel cannot underflow to an all-zero row.
    """
    reduce = all_reduce_sum_ if distributed else (lambda t: t)
    cost = cost.float()
    n_rows = reduce(cost.new_tensor(cost.shape[0]))
    n_codes = cost.shape[1]
    tiny = torch.finfo(torch.float32).tiny
    plan = torch.exp(-(cost - cost.amin(dim=1, keepdim=True)) * epsilon)
    plan /= plan.sum(dim=1, keepdim=True) * n_rows
    for _ in range(n_iters):
        plan /= reduce(plan.sum(dim=0, keepdim=True)).clamp_min(tiny) * n_codes
        plan /= plan.sum(dim=1, keepdim=True).clamp_min(tiny) * n_rows
    return plan
