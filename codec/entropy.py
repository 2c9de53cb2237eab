"""Entropy coding of code-index streams with constriction's range coder.

Two probability models, both exactly repeatable by the decoder:

- ``StaticCoder``: one fixed distribution for every index (the code frequencies measured
  on the training data, or uniform when a checkpoint has none);
- ``AdaptiveCoder``: frequencies learned from the stream itself. Block ``k`` is coded
  with the counts of blocks ``0..k-1`` plus a pseudo-count ``alpha`` per code (the
  Krichevsky-Trofimov estimate for ``alpha = 0.5``); the decoder updates the same counts
  after decoding each block. Costs no side information and no training data.

The range coder is a queue (first in, first out), so adaptive coding runs forwards on
both sides. Constriction gives every code at least the smallest representable
probability, so any index stays codable whatever the model says.
"""
import attrs
import constriction
import numpy as np

# constriction's submodules live in its native extension: reach them as attributes.
Categorical = constriction.stream.model.Categorical
RangeEncoder = constriction.stream.queue.RangeEncoder
RangeDecoder = constriction.stream.queue.RangeDecoder


def empirical_entropy(symbols: np.ndarray, vocab_size: int) -> float:
    """Bits per symbol of the stream's own histogram (the best any static model can do)."""
    counts = np.bincount(np.asarray(symbols).reshape(-1), minlength=vocab_size)
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float((p * np.log2(1.0 / p)).sum())


def _categorical(weights: np.ndarray) -> Categorical:
    # perfect=False: fast construction, same rate to a fraction of a percent; both sides agree on it.
    return Categorical(np.asarray(weights, dtype=np.float64), perfect=False)


def _as_symbols(symbols: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(symbols).reshape(-1), dtype=np.int32)


@attrs.frozen
class StaticCoder:
    """Every symbol coded with one distribution, given as non-negative weights over the codes."""

    weights: np.ndarray

    def encode(self, symbols: np.ndarray) -> np.ndarray:
        encoder = RangeEncoder()
        symbols = _as_symbols(symbols)
        if symbols.size:
            encoder.encode(symbols, _categorical(self.weights))
        return encoder.get_compressed()

    def decode(self, words: np.ndarray, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=np.int32)
        return RangeDecoder(np.asarray(words, dtype=np.uint32)).decode(_categorical(self.weights), count)


@attrs.frozen
class AdaptiveCoder:
    """Counts of the symbols already coded (plus ``alpha`` each), refreshed every ``block`` symbols."""

    vocab_size: int
    alpha: float = 0.5
    block: int = 256

    def _blocks(self, count: int):
        counts = np.full(self.vocab_size, self.alpha, dtype=np.float64)
        for start in range(0, count, self.block):
            yield slice(start, min(start + self.block, count)), counts

    def encode(self, symbols: np.ndarray) -> np.ndarray:
        symbols = _as_symbols(symbols)
        encoder = RangeEncoder()
        for span, counts in self._blocks(symbols.size):
            encoder.encode(symbols[span], _categorical(counts))
            counts += np.bincount(symbols[span], minlength=self.vocab_size)
        return encoder.get_compressed()

    def decode(self, words: np.ndarray, count: int) -> np.ndarray:
        decoder = RangeDecoder(np.asarray(words, dtype=np.uint32))
        symbols = np.zeros(count, dtype=np.int32)
        for span, counts in self._blocks(count):
            symbols[span] = decoder.decode(_categorical(counts), span.stop - span.start)
            counts += np.bincount(symbols[span], minlength=self.vocab_size)
        return symbols
