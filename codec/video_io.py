"""Frames in and out: read a clip (video, image, or folder of images), write an mp4 or PNGs.

Frames are RGB uint8 ``(H, W, 3)``. Reading goes through OpenCV; writing an mp4 pipes raw
frames into the ffmpeg binary that ``imageio-ffmpeg`` ships (no system ffmpeg needed),
as lossless RGB H.264 (``libx264rgb -crf 0``), so the file holds exactly the decoded
frames. Every output appears whole or not at all: written beside its target, then renamed.
"""
import itertools
import os
import subprocess
from typing import Iterable, Iterator, Optional

import cv2
import numpy as np

from codec.bitstream import CodecError
from core.atomic_files import atomic_path, atomic_write
from data_utils.frame_reader import read_image
from data_utils.geometry import resize_rgb
from data_utils.files import IMAGE_EXTENSIONS, list_images

DEFAULT_FPS = 25.0  # for image inputs, which have none


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _image_size(path: str) -> tuple:
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CodecError(f"{path}: not a readable image")
    return image.shape[:2]


def _iter_images(paths: list, size: Optional[tuple]) -> Iterator[np.ndarray]:
    size = size or _image_size(paths[0])
    for path in paths:
        image = read_image(path, size)
        if image is None:
            raise CodecError(f"{path}: not a readable image")
        yield image


def _iter_video(path: str, size: Optional[tuple]) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(path)
    try:
        ok, frame = cap.read()
        if not ok:
            raise CodecError(f"{path}: not a readable video")
        size = size or frame.shape[:2]
        while ok:
            yield resize_rgb(frame, size)
            ok, frame = cap.read()
    finally:
        cap.release()


def iter_frames(path: str, size: Optional[tuple] = None, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video file, an image file, or a folder of images (sorted by name).

    ``size`` = (height, width) resizes every frame; ``max_frames`` stops early.
    """
    if os.path.isdir(path):
        images = list_images(path)
        if not images:
            raise CodecError(f"{path}: folder holds no image frames")
        frames = _iter_images(images, size)
    elif not os.path.isfile(path):
        raise CodecError(f"{path}: no such file or folder")
    elif _is_image(path):
        frames = _iter_images([path], size)
    else:
        frames = _iter_video(path, size)
    return itertools.islice(frames, max_frames)


def frame_count(path: str) -> int:
    """Frames of a video file as its container states them (0 if unknown), 1 for an image, or the images of a folder."""
    if os.path.isdir(path):
        return len(list_images(path))
    if _is_image(path):
        return 1
    cap = cv2.VideoCapture(path)
    try:
        return max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
    finally:
        cap.release()


def video_fps(path: str) -> float:
    """Frame rate of a video file; ``DEFAULT_FPS`` for images or when the container has none."""
    if os.path.isdir(path) or _is_image(path):
        return DEFAULT_FPS
    cap = cv2.VideoCapture(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    return fps if fps > 0 else DEFAULT_FPS


def read_frames(path: str, size: Optional[tuple] = None, max_frames: Optional[int] = None) -> tuple:
    """``(frames (T, H, W, 3) uint8, fps)``: the whole clip in memory."""
    frames = list(iter_frames(path, size, max_frames))
    if not frames:
        raise CodecError(f"{path}: no frames")
    return np.stack(frames), video_fps(path)


def write_video(path: str, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write ``frames`` as a lossless RGB H.264 mp4; returns the frame count."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise CodecError(f"{path}: no frames to write")
    height, width = first.shape[:2]
    count = 0
    with atomic_path(path) as tmp:
        command = [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{width}x{height}", "-r", f"{fps:.6g}", "-i", "-",
                   "-c:v", "libx264rgb", "-crf", "0", "-preset", "veryfast", "-f", "mp4", tmp]
        with subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            try:
                for frame in itertools.chain([first], frames):
                    proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
                    count += 1
                proc.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg stopped early: its message follows
            error = proc.stderr.read().decode(errors="replace").strip()
            if proc.wait() != 0:
                raise CodecError(f"{path}: ffmpeg failed: {error.splitlines()[-1] if error else 'no message'}")
    return count


def write_png_frames(directory: str, frames: Iterable[np.ndarray]) -> int:
    """Write ``frame_000001.png``, ... into ``directory``; returns the frame count."""
    os.makedirs(directory, exist_ok=True)
    count = 0
    for count, frame in enumerate(frames, start=1):
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if not ok:
            raise CodecError(f"{directory}: cannot encode frame {count} as PNG")
        atomic_write(os.path.join(directory, f"frame_{count:06d}.png"), lambda fh: fh.write(encoded.tobytes()))
    return count
