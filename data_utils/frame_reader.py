"""Reading frames with OpenCV: clips from videos through a bounded cache, and images.

Seeking a compressed video decodes from the previous keyframe, so a random clip read by
seek + read costs several times a sequential read. ``CachedVideoReader`` keeps frames
already decoded (at training resolution, uint8) in a bounded LRU cache and reads ahead
sequentially, so random clips arrive at close to the sequential decode rate while the
sampling of clip starts stays exactly uniform.
"""
import collections
import logging
import os
from typing import Optional

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# Reading forward this many frames is cheaper than a seek (which decodes from a keyframe).
MAX_FORWARD_GAP = 48


def resize_rgb(frame_bgr: np.ndarray, size: tuple) -> np.ndarray:
    """BGR(A)/gray, 8 or 16 bit -> RGB uint8 at ``size`` = (height, width)."""
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


def probe_video(path: str) -> tuple:
    """(frame_count, fps) of a readable video, or (0, 0) when it cannot be decoded."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return 0, 0.0
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return 0, 0.0
        ok, _ = cap.read()
        if not ok:
            return 0, 0.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return max(count, 1), fps
    finally:
        cap.release()


def read_image(path: str, size: tuple) -> Optional[np.ndarray]:
    """RGB uint8 image at ``size``, or None if the file cannot be decoded."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile copes with non-ASCII paths
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return None
    return resize_rgb(image, size)


class CachedVideoReader:
    """Clips of consecutive frames from many videos, with a shared bounded frame cache."""

    def __init__(self, size: tuple, cache_frames: int = 1024, readahead: int = 64):
        self.size = size
        self.cache_frames = cache_frames
        self.readahead = readahead
        self._cache = collections.OrderedDict()  # (path, index) -> frame, LRU order
        self._captures = {}  # path -> [VideoCapture, next frame index]

    def clip(self, path: str, start: int, length: int, span: Optional[tuple] = None) -> Optional[np.ndarray]:
        """``(length, H, W, 3)`` uint8 RGB frames ``start .. start+length-1``, None if unreadable.

        ``span`` = (first, end) frames around the clip: on a cache miss the whole span is
        decoded in one sequential pass, for the clips that will be cut from it next.
        """
        frames = []
        for index in range(start, start + length):
            frame = self._cache.get((path, index))
            if frame is None:
                if span is not None:  # decode the rest of the span from its first missing frame
                    first, end = span
                    lo = next((j for j in range(first, index) if (path, j) not in self._cache), index)
                    hi = max(end, start + length)
                else:
                    lo, hi = index, max(start + length, index + self.readahead)
                self._decode_range(path, lo, hi)
                frame = self._cache.get((path, index))
                if frame is None:
                    return None
            else:
                self._cache.move_to_end((path, index))
            frames.append(frame)
        return np.stack(frames)

    def _decode_range(self, path: str, first: int, end: int) -> None:
        """Decode frames ``first .. end-1`` into the cache (fewer if the file ends or fails)."""
        entry = self._captures.get(path)
        if entry is None or not (entry[1] <= first <= entry[1] + MAX_FORWARD_GAP):
            self._close(path)
            cap = cv2.VideoCapture(path)
            if not cap.isOpened():
                return
            position = 0
            if first > MAX_FORWARD_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, first)
                position = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            entry = self._captures[path] = [cap, position]
        cap = entry[0]
        while entry[1] < first:  # skip forward without converting
            if not cap.grab():
                return
            entry[1] += 1
        while entry[1] < end:
            ok, frame = cap.read()
            if not ok:
                return
            self._store(path, entry[1], resize_rgb(frame, self.size))
            entry[1] += 1

    def _store(self, path: str, index: int, frame: np.ndarray) -> None:
        self._cache[(path, index)] = frame
        self._cache.move_to_end((path, index))
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)

    def _close(self, path: str) -> None:
        entry = self._captures.pop(path, None)
        if entry is not None:
            entry[0].release()

    def close(self) -> None:
        for path in list(self._captures):
            self._close(path)
        self._cache.clear()

    def __getstate__(self):
        # DataLoader workers get a fresh reader: captures cannot be pickled.
        state = self.__dict__.copy()
        state["_cache"] = collections.OrderedDict()
        state["_captures"] = {}
        return state
