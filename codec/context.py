"""Coding one group of latent frames of one stream, under each coder kind; both sides walk this code.

Kinds (the header records one per level):

- ``uniform``: every digit in fixed length (log2 of its alphabet): never more than fixed-length coding;
- ``prior``: every digit under the stored prior's frequencies;
- ``adaptive``: frequencies learned from the group itself (updated every ``BLOCK`` symbols);
- ``context``: the first latent frame as ``adaptive``; every later one conditioned on the
  previous latent frame: per digit a copy flag (its context: see ``models.code_streams``),
  then, where it did not copy, the new value from the value-to-value counts of the old
  value, the frequencies of new values and the neighbours' values. Learned from the group;
- ``context_prior``: ``context`` with every count starting from the stored prior's (scaled
  down to ``PRIOR_BUDGETS``, so the group still adapts): the learned conditional prior.

Every group starts from the same state, so a group decodes on its own (random access).
"""
from typing import Optional

import numpy as np

from codec.entropy import (ALPHA, BLOCK, PRIOR_SMOOTHING, ROW_LIMIT, Bernoulli, Categorical, Encoding, Uniform,
                           categorical, code, copy_probability, fresh_rows)
from models.code_prior import StreamCounts
from models.code_streams import CURRENT_NEIGHBOURS, PREVIOUS_NEIGHBOURS, checkerboard, flag_contexts, neighbours

KINDS = ("uniform", "prior", "adaptive", "context", "context_prior")
PRIOR_KINDS = ("prior", "context_prior")
# Most pseudo-counts the stored prior contributes per table (row): enough to start well, few
# enough that a group's own statistics take over.
PRIOR_BUDGETS = {"intra": 1024.0, "flags": 256.0, "fresh": 1024.0, "moves": 64.0}


def _cap(counts: np.ndarray, budget: float) -> np.ndarray:
    """Counts scaled down so each row sums to at most ``budget``, floored to integers (exact)."""
    totals = counts.sum(axis=-1, keepdims=True)
    return np.floor(counts * np.minimum(1.0, budget / np.maximum(totals, 1.0)))


def prior_state(prior: StreamCounts) -> StreamCounts:
    """The starting state of ``context_prior``: the prior's counts within ``PRIOR_BUDGETS``."""
    state = prior.copy()
    for digit in state.digits:
        for name, budget in PRIOR_BUDGETS.items():
            if getattr(digit, name) is not None:
                setattr(digit, name, _cap(getattr(digit, name), budget))
    return state


def code_group(op, kind: str, radices: list, shape: tuple, start: Optional[StreamCounts] = None,
               digits: Optional[list] = None) -> list:
    """The digits ``(frames, h, w)`` of one group of one stream, through ``op``.

    Encoding: ``digits`` are coded and returned. Decoding: ``digits`` is None and the
    decoded ones are returned. ``start``: the stored prior's counts for ``prior``, the
    starting state for ``context_prior`` (``prior_state``), None otherwise.
    """
    known = digits if isinstance(op, Encoding) else None
    size = int(np.prod(shape))
    if kind in ("uniform", "prior"):
        out = []
        for j, radix in enumerate(radices):
            model = Uniform(radix) if kind == "uniform" else categorical(start.digits[j].intra + PRIOR_SMOOTHING)
            out.append(code(op, None if known is None else known[j], size, model).reshape(shape))
        return out
    state = start.copy() if kind == "context_prior" else StreamCounts.zeros(radices)
    out = [np.zeros(shape, dtype=np.int32) for _ in radices]
    for t in range(shape[0]):
        frame = None if known is None else [d[t] for d in known]
        if t == 0 or kind == "adaptive":
            for j in range(len(radices)):
                out[j][t] = _code_intra(op, state, j, None if frame is None else frame[j], shape[1:])
        else:
            _code_inter(op, state, [o[t - 1] for o in out], [o[t] for o in out], frame)
    return out


def _code_intra(op, state: StreamCounts, digit: int, known: Optional[np.ndarray], shape: tuple) -> np.ndarray:
    """One latent frame of one digit under adaptive frequencies, updated every block."""
    counts = state.digits[digit]
    block = max(BLOCK, counts.radix // 8)  # large alphabets: fewer model builds of their large tables
    size = int(np.prod(shape))
    flat = np.zeros(size, dtype=np.int32)
    for begin in range(0, size, block):
        span = slice(begin, min(begin + block, size))
        symbols = code(op, None if known is None else known.reshape(-1)[span], span.stop - span.start,
                       categorical(counts.intra + ALPHA))
        flat[span] = symbols
        state.observe_intra(digit, symbols)
    return flat.reshape(shape)


def _code_inter(op, state: StreamCounts, previous: list, current: list, known: Optional[list]) -> None:
    """One latent frame conditioned on the previous one: anchors first, then the others."""
    shape = previous[0].shape
    anchor = checkerboard(*shape)
    flags = [np.zeros(shape, dtype=bool) for _ in previous]
    chain = np.ones(shape, dtype=bool)  # the earlier digits of the index all copied
    for anchors, phase in ((True, anchor), (False, ~anchor)):
        for j, counts in enumerate(state.digits):
            contexts = flag_contexts(state.last(j, shape), flags[j], chain)[phase]
            copied = None if known is None else (known[j] == previous[j])[phase]
            copy = code(op, copied, len(contexts), Bernoulli(perfect=False), copy_probability(counts, contexts))
            flags[j][phase] = copy != 0
            new = phase & ~flags[j]
            old = previous[j][new]
            if counts.radix == 2:  # not the old value: the other one
                values = 1 - old
            else:
                wanted = None if known is None else known[j][new]
                if counts.radix <= ROW_LIMIT:
                    candidates = [neighbours(previous[j], PREVIOUS_NEIGHBOURS)[:, new]]
                    if not anchors:  # the anchors around are decoded
                        candidates.append(neighbours(current[j], CURRENT_NEIGHBOURS)[:, new])
                    rows = fresh_rows(counts, old, np.concatenate(candidates).T)
                    values = code(op, wanted, len(old), Categorical(perfect=False), rows)
                else:
                    values = code(op, wanted, len(old), categorical(counts.fresh + ALPHA))
            current[j][phase & flags[j]] = previous[j][phase & flags[j]]
            current[j][new] = values
            chain[phase] &= flags[j][phase]
    state.observe_inter(previous, current)
