"""The shape of a model's code: streams of latent frames, the digits of an index, the contexts of a latent frame.

Shared by the code prior (which counts) and the codec's entropy coder (which codes), so
both see the same streams, digits and contexts by construction.

- **Streams.** A level's indices for ``clips`` clips, ``(clips * k, [depth,] *mid, h, w)``,
  become ``(streams, frames, h, w)``: one stream per residual quantizer (the axis right
  after the batch axis, when the level has one) and, in each, the latent frames in time
  order (clips, then any axes between the batch or depth axis and the last two).
- **Digits.** An index of an alphabet with mixed-radix factors (FSQ levels, LFQ bits) is
  coded digit by digit when the alphabet is large; the first factor is the least significant
  digit (``index = d0 + f0 * (d1 + f1 * (d2 + ...))``, as FSQ and LFQ number their codes).
- **Contexts.** A latent frame is coded in two halves of a checkerboard: first the anchors
  (``(y + x)`` even), then the others, whose four neighbours are anchors already decoded.
  Whether a digit repeats the co-located digit of the previous latent frame (a *copy*) is
  predicted from whether it did in the previous frame, how many anchor neighbours copied
  (second half only), and whether the earlier digits of the same index copied.
"""
import math

import numpy as np
from einops import rearrange

SMALL_ALPHABET = 4096  # alphabets up to this size are coded whole; larger ones digit by digit

UNKNOWN = 2  # "did this position copy in the previous latent frame?" for the frame after a key frame
# context of a copy flag: 3 for anchors (previous flag 0/1/unknown), 3 * 5 for the others (x copied
# anchor neighbours 0..4), times 2 (earlier digits of the index all copied or not)
FLAG_CONTEXTS = 2 * (3 + 3 * 5)
NO_VALUE = -1  # a neighbour outside the frame
PREVIOUS_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
CURRENT_NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def coding_radices(factors: list) -> list:
    """The digits an index is coded as: the whole index for small alphabets, else its factors."""
    total = math.prod(factors)
    if len(factors) == 1 or total <= SMALL_ALPHABET:
        return [total]
    return [int(f) for f in factors]


def split_digits(indices: np.ndarray, radices: list) -> list:
    """Mixed-radix digits of ``indices``, least significant first (int32 arrays shaped like ``indices``)."""
    digits, rest = [], np.asarray(indices, dtype=np.int64)
    for radix in radices:
        digits.append((rest % radix).astype(np.int32))
        rest = rest // radix
    return digits


def join_digits(digits: list, radices: list) -> np.ndarray:
    """The inverse of ``split_digits``."""
    value, scale = np.zeros(np.shape(digits[0]), dtype=np.int64), 1
    for digit, radix in zip(digits, radices):
        value += np.asarray(digit, dtype=np.int64) * scale
        scale *= radix
    return value


def latent_frames(level: np.ndarray, clips: int, depth: int) -> np.ndarray:
    """``(streams, frames, h, w)`` of one level's indices for ``clips`` clips (see the module doc)."""
    count, (height, width) = level.shape[0], level.shape[-2:]
    if count % clips:
        raise ValueError(f"{count} index tensors do not split into {clips} clips")
    if depth:
        return rearrange(level.reshape(count, depth, -1, height, width), "n q m h w -> q (n m) h w")
    return level.reshape(1, -1, height, width)


def level_from_frames(frames: np.ndarray, clip_shape: tuple, clips: int, depth: int) -> np.ndarray:
    """The inverse of ``latent_frames``: indices shaped as the model gives them."""
    count = clips * clip_shape[0]
    if depth:
        frames = rearrange(frames, "q (n m) h w -> n q m h w", n=count)
    return np.ascontiguousarray(frames).reshape(count, *clip_shape[1:])


def frames_per_clip(clip_shape: tuple, depth: int) -> int:
    """Latent frames per clip in each stream."""
    inner = clip_shape[2:-2] if depth else clip_shape[1:-2]
    return clip_shape[0] * math.prod(inner)


def checkerboard(height: int, width: int) -> np.ndarray:
    """True at the anchors, coded first in each latent frame."""
    y, x = np.mgrid[:height, :width]
    return (y + x) % 2 == 0


def neighbours(frame: np.ndarray, offsets: tuple, fill: int = NO_VALUE) -> np.ndarray:
    """``(len(offsets), h, w)``: the values at ``(y + dy, x + dx)``, ``fill`` outside the frame."""
    padded = np.pad(frame, 1, constant_values=fill)
    height, width = frame.shape
    return np.stack([padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width] for dy, dx in offsets])


def flag_contexts(last_flags: np.ndarray, flags: np.ndarray, chain: np.ndarray) -> np.ndarray:
    """Context (0 .. FLAG_CONTEXTS - 1) of every position's copy flag.

    ``last_flags``: the previous latent frame's flags (0, 1, or ``UNKNOWN``); ``flags``: this
    frame's flags, of which only the anchors are read; ``chain``: the earlier digits all copied.
    """
    anchor = checkerboard(*flags.shape)
    copied_anchors = neighbours((flags & anchor).astype(np.int64), CURRENT_NEIGHBOURS, fill=0).sum(axis=0)
    last = last_flags.astype(np.int64)
    base = np.where(anchor, last, 3 + last * 5 + copied_anchors)
    return base * 2 + chain
