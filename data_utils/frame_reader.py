"""Reading frames with OpenCV: clips from videos through a bounded cache, and images.

Seeking a compressed video decodes from the previous keyframe, so a random clip read by
seek + read costs several times a sequential read. ``CachedVideoReader`` keeps frames
already decoded (at their decoded size, uint8) in a bounded LRU cache and decodes the
whole span of frames that later clips will use in one sequential pass, so random clips
arrive at close to the sequential decode rate.
"""
import collections
import logging
import os
from typing import Optional

import cv2
import numpy as np

from data_utils.geometry import fit_frame

logger = logging.getLogger(__name__)

# Reading forward this many frames is cheaper than a seek (which decodes from a keyframe).
MAX_FORWARD_GAP = 48
# Open captures kept between reads (each holds a file handle and a decoder).
MAX_OPEN_CAPTURES = 32
# Any flags but IMREAD_UNCHANGED make OpenCV apply a photo's EXIF orientation; these keep
# 16-bit depth and grey images as they are (alpha is dropped, as the RGB output would).
IMAGE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def probe_video(path: str) -> tuple:
    """(frame_count, fps, (height, width)) of a readable video, or (0, 0.0, None) if it cannot be decoded.

    The count is the container's: it can overstate (a truncated file), which reading finds out.
    """
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return 0, 0.0, None
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return 0, 0.0, None
        ok, frame = cap.read()
        if not ok:
            return 0, 0.0, None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return max(count, 1), fps, frame.shape[:2]
    finally:
        cap.release()


def count_decodable(path: str) -> int:
    """Frames that really decode, counted in one sequential pass (without colour conversion)."""
    cap = cv2.VideoCapture(path)
    count = 0
    while cap.isOpened() and cap.grab():
        count += 1
    cap.release()
    return count


def read_image(path: str, size: tuple, mode: str = "stretch") -> Optional[np.ndarray]:
    """RGB uint8 image, turned upright as its EXIF orientation says, at its decoded size for
    ``mode`` (``size`` unless ``crop``); None if the file cannot be decoded."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile copes with non-ASCII paths
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, IMAGE_FLAGS)
    if image is None or image.size == 0:
        return None
    return fit_frame(image, size, mode)


class CachedVideoReader:
    """Clips of consecutive frames from many videos, with a shared bounded frame cache.

    Frames are stored as ``fit_frame(frame, size, mode)`` makes them (see ``geometry``).
    """

    def __init__(self, size: tuple, cache_frames: int = 1024, readahead: int = 64, mode: str = "stretch"):
        self.size = size
        self.mode = mode
        self.cache_frames = cache_frames
        self.readahead = readahead
        self._cache = collections.OrderedDict()  # (path, index) -> frame, LRU order
        self._captures = collections.OrderedDict()  # path -> [VideoCapture, next frame index], LRU order

    def clip(self, path: str, start: int, length: int, span: Optional[tuple] = None) -> Optional[np.ndarray]:
        """``(length, h, w, 3)`` uint8 RGB frames ``start .. start+length-1``, None if unreadable.

        ``span`` = (first, end, needed) frames around the clip: on a cache miss the span is
        decoded in one sequential pass for the clips that will be cut from it later, keeping
        the ``needed`` frames (all when None) and this clip's.
        """
        wanted = range(start, start + length)
        missing = [j for j in wanted if (path, j) not in self._cache]
        if missing:
            lo, hi, keep = missing[0], max(start + length, missing[0] + self.readahead), None
            if span is not None:
                first, end, needed = span
                keep = None if needed is None else needed.union(wanted)
                lo = min(missing[0], next((j for j in range(first, missing[0])
                                           if (keep is None or j in keep) and (path, j) not in self._cache), lo))
                hi = max(end, start + length) if keep is None else max(keep) + 1
            self._decode_range(path, lo, hi, keep)
        frames = []
        for index in wanted:
            frame = self._cache.get((path, index))
            if frame is None:
                return None
            self._cache.move_to_end((path, index))
            frames.append(frame)
        return np.stack(frames)

    def _capture(self, path: str, first: int) -> Optional[list]:
        """An open capture of ``path`` at or a little before frame ``first``."""
        entry = self._captures.get(path)
        if entry is not None and entry[1] <= first <= entry[1] + MAX_FORWARD_GAP:
            self._captures.move_to_end(path)
            return entry
        if entry is None:
            cap = cv2.VideoCapture(path)
            if not cap.isOpened():
                return None
            entry = self._captures[path] = [cap, 0]
            while len(self._captures) > MAX_OPEN_CAPTURES:
                self._close(next(iter(self._captures)))
        self._captures.move_to_end(path)
        if first > MAX_FORWARD_GAP or first < entry[1]:
            entry[0].set(cv2.CAP_PROP_POS_FRAMES, first)
            entry[1] = int(entry[0].get(cv2.CAP_PROP_POS_FRAMES))
        return entry

    def _decode_range(self, path: str, first: int, end: int, keep: Optional[frozenset] = None) -> None:
        """Decode frames ``first .. end-1``, caching those in ``keep`` (all when None; fewer if the file ends)."""
        entry = self._capture(path, first)
        if entry is None:
            return
        cap = entry[0]
        while entry[1] < first:  # skip forward without converting
            if not cap.grab():
                return self._close(path)
            entry[1] += 1
        while entry[1] < end:
            cached = (path, entry[1]) in self._cache
            if cached or (keep is not None and entry[1] not in keep):
                if not cap.grab():  # decoded but not converted: cached already, or no clip uses it
                    return self._close(path)
                if cached:  # still wanted: not to be evicted by the frames stored after it
                    self._cache.move_to_end((path, entry[1]))
            else:
                ok, frame = cap.read()
                if not ok:
                    return self._close(path)
                self._store(path, entry[1], fit_frame(frame, self.size, self.mode))
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
        state["_captures"] = collections.OrderedDict()
        return state
