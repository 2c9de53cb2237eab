"""Entropy coding with constriction's range coder, and the probabilities of the coder's models.

Encoding and decoding walk the same code (``codec.context``) with one of two *ops*:
``Encoding`` codes the symbols it is given, ``Decoding`` reads them back; each returns the
symbols, so the walk updates its models identically on both sides. The range coder is a
queue (first in, first out): both sides run forwards.

Every probability comes from counts (float64 integers, exact) through elementwise
arithmetic only, so it is bit-identical on every machine: encoder and decoder cannot
disagree. Constriction gives every symbol at least its smallest representable probability,
so any index stays codable whatever a model says.
"""
from typing import Optional

import constriction
import numpy as np

from models.code_prior import DigitCounts

# constriction's submodules live in its native extension: reach them as attributes.
Bernoulli = constriction.stream.model.Bernoulli
Categorical = constriction.stream.model.Categorical
Uniform = constriction.stream.model.Uniform
RangeEncoder = constriction.stream.queue.RangeEncoder
RangeDecoder = constriction.stream.queue.RangeDecoder

ALPHA = 0.5  # pseudo-count per value of every adaptive model (Krichevsky-Trofimov)
BLOCK = 256  # symbols coded between updates of an adaptive frequency model
PRIOR_SMOOTHING = 0.5  # pseudo-count per value added to the stored prior's frequencies
FRESH_WEIGHT = 16.0  # weight of the frequencies against the value-to-value counts (a new value's row)
NEIGHBOUR_WEIGHT = 2.0  # extra weight of each neighbour's value (previous frame 3x3, current frame 4)
ROW_LIMIT = 4096  # largest digit alphabet coded with a table per symbol; larger: one table per block


class Encoding:
    """Codes the symbols it is given; ``words()`` is the compressed stream."""

    def __init__(self):
        self.coder = RangeEncoder()

    def __call__(self, symbols: Optional[np.ndarray], model, params: Optional[np.ndarray] = None) -> np.ndarray:
        symbols = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
        if symbols.size:
            if params is None:
                self.coder.encode(symbols, model)
            else:
                self.coder.encode(symbols, model, params)
        return symbols

    def words(self) -> np.ndarray:
        return self.coder.get_compressed()


class Decoding:
    """Reads back what ``Encoding`` coded, ``count`` symbols at a time."""

    def __init__(self, words: np.ndarray):
        self.coder = RangeDecoder(np.asarray(words, dtype=np.uint32))

    def __call__(self, count: int, model, params: Optional[np.ndarray] = None) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=np.int32)
        if params is None:
            return np.asarray(self.coder.decode(model, count), dtype=np.int32)
        return np.asarray(self.coder.decode(model, params), dtype=np.int32)


def code(op, known: Optional[np.ndarray], count: int, model, params: Optional[np.ndarray] = None) -> np.ndarray:
    """``count`` symbols through ``op``: ``known`` ones when encoding, read ones when decoding."""
    if isinstance(op, Encoding):
        return op(known, model, params)
    return op(count, model, params)


def categorical(weights: np.ndarray):
    # perfect=False: fast construction, same rate to a fraction of a percent; both sides agree on it.
    return Categorical(np.asarray(weights, dtype=np.float64), perfect=False)


def copy_probability(counts: DigitCounts, contexts: np.ndarray) -> np.ndarray:
    """P(copy) per symbol from the flag counts of its context."""
    flags = counts.flags[contexts]
    return (flags[:, 1] + ALPHA) / (flags[:, 0] + flags[:, 1] + 2 * ALPHA)


def fresh_rows(counts: DigitCounts, previous: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Weights ``(n, radix)`` of a digit that did not copy its previous value ``previous[i]``.

    The value-to-value counts of ``previous[i]``, plus the frequencies of new values, plus
    ``NEIGHBOUR_WEIGHT`` for each neighbour's value (``candidates``: ``(n, k)``, -1 for none);
    the previous value itself is excluded (it would have been a copy).
    """
    radix, count = counts.radix, len(previous)
    base = FRESH_WEIGHT * (counts.fresh + ALPHA) / (counts.fresh.sum() + radix * ALPHA)
    rows = np.broadcast_to(base, (count, radix)).copy()
    if counts.moves is not None:
        rows += counts.moves[previous]
    valid = candidates >= 0
    flat = (np.arange(count)[:, None] * radix + candidates)[valid]
    rows.reshape(-1)[:] += NEIGHBOUR_WEIGHT * np.bincount(flat, minlength=count * radix)
    rows[np.arange(count), previous] = 0.0
    return rows


def empirical_entropy(histogram: np.ndarray) -> float:
    """Bits per symbol of a histogram (the best any static model can do on it)."""
    total = histogram.sum()
    if total == 0:
        return 0.0
    p = histogram[histogram > 0] / total
    return float((p * np.log2(1.0 / p)).sum())
