"""How a frame of any size reaches the training resolution: ``crop``, ``pad`` or ``stretch``.

``crop`` (the default) resizes the short side to the target and cuts the target out of
the long side: at random for training, in the centre for validation, the same place for
every frame of a clip. ``pad`` fits the whole frame inside the target and fills the rest
with black. ``stretch`` resizes each side on its own, changing the aspect ratio.

Readers resize at decode time to the *decoded size* (for ``crop`` the covering size,
otherwise the target), so the frame cache holds small frames; ``crop`` cuts later.
"""
from typing import Optional

import cv2
import numpy as np

RESIZE_MODES = ("crop", "pad", "stretch")


def resize_rgb(frame_bgr: np.ndarray, size: tuple) -> np.ndarray:
    """BGR(A)/gray, 8 or 16 bit -> RGB uint8 at ``size`` = (height, width), stretched."""
    frame = frame_bgr
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        frame = cv2.normalize(frame, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[..., 0]
    height, width = size
    # Halving with pyrDown first is several times cheaper than one INTER_AREA at a large
    # fractional scale, and colour conversion is cheaper on the small frame.
    while frame.shape[0] >= 4 * height and frame.shape[1] >= 4 * width:
        frame = cv2.pyrDown(frame)
    if frame.shape[:2] != (height, width):
        shrinking = frame.shape[0] > height or frame.shape[1] > width
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    elif frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    else:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(frame)


def _scaled(source: tuple, size: tuple, cover: bool) -> tuple:
    """``source`` (h, w) scaled by one factor to cover (or fit inside) ``size``."""
    scale = (max if cover else min)(size[0] / source[0], size[1] / source[1])
    scaled = (round(source[0] * scale), round(source[1] * scale))
    bound = max if cover else min  # rounding must not leave a cover short of the target, nor a fit past it
    return tuple(max(1, bound(side, target)) for side, target in zip(scaled, size))


def decoded_size(source: tuple, size: tuple, mode: str) -> tuple:
    """(h, w) a ``source``-sized frame is resized to when read: the covering size for ``crop``."""
    return _scaled(source, size, cover=True) if mode == "crop" else tuple(size)


def fit_frame(frame_bgr: np.ndarray, size: tuple, mode: str) -> np.ndarray:
    """A decoded BGR frame -> RGB uint8 at its decoded size for ``mode``."""
    source = frame_bgr.shape[:2]
    if mode == "stretch":
        return resize_rgb(frame_bgr, size)
    if mode == "crop":
        return resize_rgb(frame_bgr, _scaled(source, size, cover=True))
    inner = _scaled(source, size, cover=False)
    padded = np.zeros((*size, 3), dtype=np.uint8)
    top, left = (size[0] - inner[0]) // 2, (size[1] - inner[1]) // 2
    padded[top:top + inner[0], left:left + inner[1]] = resize_rgb(frame_bgr, inner)
    return padded


def crop_clip(clip: np.ndarray, size: tuple, place: Optional[tuple] = None) -> np.ndarray:
    """``size`` cut out of ``(..., h, w, c)`` frames; ``place`` = (y, x) in [0, 1), None: the centre."""
    height, width = clip.shape[-3:-1]
    if (height, width) == tuple(size):
        return clip
    if place is None:
        top, left = (height - size[0]) // 2, (width - size[1]) // 2
    else:
        top, left = int(place[0] * (height - size[0] + 1)), int(place[1] * (width - size[1] + 1))
    return np.ascontiguousarray(clip[..., top:top + size[0], left:left + size[1], :])


def describe_geometry(source: Optional[tuple], size: tuple, mode: str, random_crop: bool) -> str:
    """One line for the log on what happens to a ``source``-sized frame (None: any size)."""
    target = f"{size[1]}x{size[0]}"
    if mode == "stretch":
        return f"frames are stretched to {target} (resize_mode stretch)"
    first = "frames" if source is None else f"{source[1]}x{source[0]} frames (the first file's)"
    if mode == "pad":
        fit = _scaled(source, size, cover=False) if source else None
        inner = "fit inside" if fit is None else f"resized to {fit[1]}x{fit[0]} to fit inside"
        return f"{first} are {inner} {target} and padded with black (resize_mode pad)"
    covering = _scaled(source, size, cover=True) if source else None
    cover = "resized to cover" if covering is None else f"resized to {covering[1]}x{covering[0]} to cover"
    where = "a random place" if random_crop else "the centre"
    return f"{first} are {cover} {target}, then cropped to it at {where} (resize_mode crop)"
