"""Rate-distortion of checkpoints against x264 and x265 on the same frames.

Every codec sees the same frames: each clip decoded once (optionally resized and cut
short). A model with residual quantizer levels gives one rate point per number of levels
kept (``compress(rate=N)``), so one model draws a whole curve; otherwise checkpoints that
share a label are the rate points of one curve. x264 and x265 run at several CRF values
through the ffmpeg binary of ``imageio-ffmpeg``, fed raw RGB frames and writing a raw
elementary stream (no container), whose file size gives their rate. Quality is PSNR and
SSIM of RGB frames (``metric_utils``, so training and evaluation agree) and LPIPS (the
project's one network, ``models.perceptual``) when the VGG16 weights are found: it is never
downloaded, and without it the LPIPS column stays empty. The Bjøntegaard delta rate compares
each curve with x264 and with x265 over the PSNR range both cover. The pictures
(``codec.rd_pictures``): ``rd.png`` and, per clip, the middle frame side by side.
"""
import csv
import io
import logging
import os
import subprocess
import tempfile
import time
from typing import Optional

import attrs
import numpy as np
import torch
from einops import rearrange

from codec.bitstream import CodecError
from codec.codec import CodecModel, compress, decompress, load_codec_model
from codec.rd_pictures import plot_rd, save_png, side_by_side_figure, side_by_side_path
from codec.video_io import ffmpeg_exe, read_frames
from core.atomic_files import atomic_write
from core.pixels import to_model_range
from core.pretrained import VGG16_FILE, find_weights, missing_message, require_weights
from metric_utils.metric_utils import psnr, ssim
from models.perceptual import build_lpips

logger = logging.getLogger(__name__)

DEFAULT_CRFS = (23, 30, 37, 44, 51)
# name -> (ffmpeg encoder, elementary-stream format, extra arguments)
FFMPEG_CODECS = {
    "x264": ("libx264", "h264", []),
    "x265": ("libx265", "hevc", ["-x265-params", "log-level=error"]),
}
ANCHORS = ("x264", "x265")
LPIPS_WHAT = "LPIPS (VGG16 backbone)"


@attrs.frozen
class RatePoint:
    clip: str
    codec: str  # "x264", "x265", or a checkpoint set's label
    setting: str  # "crf=N", or the checkpoint's file name
    frames: int
    height: int
    width: int
    bytes: int
    bpp: float
    psnr: float
    ssim: float
    lpips: Optional[float]  # None: not measured (no VGG16 weights)
    encode_fps: float
    decode_fps: float


@attrs.frozen
class BdRate:
    clip: str
    codec: str
    anchor: str
    percent: Optional[float]  # negative: fewer bits than the anchor for the same PSNR
    note: str = ""


@torch.no_grad()
def quality(decoded: np.ndarray, reference: np.ndarray, lpips: Optional[torch.nn.Module] = None,
            chunk: int = 16) -> tuple:
    """(PSNR dB, SSIM, LPIPS or None), means over frames, of uint8 ``(T, H, W, 3)`` frames."""
    device = next(lpips.parameters()).device if lpips is not None else "cpu"
    totals = np.zeros(3)
    for start in range(0, len(reference), chunk):
        pair = [rearrange(torch.from_numpy(np.ascontiguousarray(a[start:start + chunk])), "t h w c -> t c h w")
                .to(device).float() / 255.0 for a in (decoded, reference)]
        distance = float(lpips(*map(to_model_range, pair)).mean()) if lpips is not None else 0.0
        totals += len(pair[0]) * np.array([psnr(*pair), ssim(*pair), distance])
    means = [float(v) for v in totals / len(reference)]
    return means[0], means[1], means[2] if lpips is not None else None


def lpips_network(vgg_weights: Optional[str], device) -> tuple:
    """``(LPIPS network or None, note)``: without VGG16 weights (hub cache or ``vgg_weights``) LPIPS is skipped.

    Weights asked for by path must exist (``WeightsMissingError``); weights merely absent
    from the cache give one warning and a note for the plot.
    """
    if vgg_weights:
        require_weights(LPIPS_WHAT, VGG16_FILE, "--vgg-weights", vgg_weights)
    elif find_weights(VGG16_FILE, None) is None:
        logger.warning("%s; LPIPS is skipped", missing_message(LPIPS_WHAT, VGG16_FILE, "--vgg-weights", None))
        return None, f"no VGG16 weights ({VGG16_FILE}): pass --vgg-weights"
    return build_lpips("vgg", vgg_weights).to(device), ""


def _run(command: list, stdin: Optional[bytes], what: str) -> tuple:
    start = time.perf_counter()
    result = subprocess.run(command, input=stdin, capture_output=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise CodecError(f"{what} failed: {message[-1] if message else f'exit code {result.returncode}'}")
    return result.stdout, elapsed


def ffmpeg_roundtrip(frames: np.ndarray, fps: float, name: str, crf: int, workdir: str,
                     preset: str = "medium") -> tuple:
    """``(bytes, decoded frames, encode seconds, decode seconds)`` of one x264/x265 run."""
    encoder, stream_format, extra = FFMPEG_CODECS[name]
    height, width = frames.shape[1:3]
    # yuv420p needs even sides: replicate one row/column, crop it off after decoding
    even = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    path = os.path.join(workdir, f"{name}_crf{crf}.{stream_format}")
    exe = ffmpeg_exe()
    _, encode_s = _run([exe, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                        "-s", f"{even.shape[2]}x{even.shape[1]}", "-r", f"{fps:.6g}", "-i", "-",
                        "-c:v", encoder, "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p", *extra,
                        "-f", stream_format, path], np.ascontiguousarray(even).tobytes(), f"ffmpeg {encoder}")
    raw, decode_s = _run([exe, "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], None,
                         f"ffmpeg decoding {path}")
    decoded = np.frombuffer(raw, dtype=np.uint8).reshape(-1, *even.shape[1:])[:, :height, :width].copy()
    if len(decoded) != len(frames):
        raise CodecError(f"ffmpeg {encoder}: {len(decoded)} frames decoded, {len(frames)} encoded")
    return os.path.getsize(path), decoded, encode_s, decode_s


def _point(clip: str, codec: str, setting: str, reference: np.ndarray, decoded: np.ndarray, nbytes: int,
           encode_s: float, decode_s: float, lpips: Optional[torch.nn.Module]) -> RatePoint:
    count, height, width = reference.shape[:3]
    return RatePoint(clip, codec, setting, count, height, width, nbytes, 8.0 * nbytes / (count * height * width),
                     *quality(decoded, reference, lpips), count / max(encode_s, 1e-9), count / max(decode_s, 1e-9))


def side_by_side_points(points: list) -> list:
    """What a clip's side by side shows: each model curve's highest-rate point, then x264
    (else the first anchor measured) at the bpp nearest (in log) to the first model point."""
    top = {}
    for p in points:
        if p.codec not in FFMPEG_CODECS and (p.codec not in top or p.bpp > top[p.codec].bpp):
            top[p.codec] = p
    chosen = list(top.values())
    for anchor in ANCHORS:
        candidates = [p for p in points if p.codec == anchor]
        if candidates and chosen:
            chosen.append(min(candidates, key=lambda p: abs(np.log(p.bpp / chosen[0].bpp))))
            break
    return chosen


def bd_rate(anchor: list, test: list) -> tuple:
    """Bjøntegaard delta rate (%) of ``test`` against ``anchor`` (lists of (bpp, psnr)), and a note.

    log(rate) is fitted as a polynomial in PSNR (cubic with 4+ points) for each curve and
    the fits are averaged over the PSNR interval both curves cover.
    """
    if min(len(anchor), len(test)) < 2:
        return None, "needs 2+ rate points per curve"
    fits = []
    for points in (anchor, test):
        bpp, psnr = np.array(sorted(points, key=lambda p: p[1]), dtype=np.float64).T
        degree = min(3, len(np.unique(psnr)) - 1)
        if degree < 1:
            return None, "needs 2+ distinct PSNR values per curve"
        fits.append((np.polyint(np.polyfit(psnr, np.log(bpp), degree)), psnr.min(), psnr.max()))
    low, high = max(f[1] for f in fits), min(f[2] for f in fits)
    if low >= high:
        return None, "no overlap"
    mean_log_rate = [(np.polyval(f[0], high) - np.polyval(f[0], low)) / (high - low) for f in fits]
    return float((np.exp(mean_log_rate[1] - mean_log_rate[0]) - 1.0) * 100.0), ""


def _label_and_path(spec: str) -> tuple:
    label, sep, path = spec.partition("=")
    return (label, path) if sep and not os.path.exists(spec) else (None, spec)


def residual_rates(codec: CodecModel, frame_size: tuple, wanted: Optional[list] = None) -> list:
    """The rates (residual levels kept) to measure: ``[None]`` for a model without residual levels."""
    factor = codec.model.spatial_factor
    padded = tuple(-(-s // factor) * factor for s in frame_size)
    shapes = codec.latent(padded)[1]
    depth = max((shape[1] for shape, d in zip(shapes, codec.model.code_depths) if d), default=0)
    if not depth:
        return [None]
    return sorted({min(max(r, 1), depth) for r in wanted}) if wanted else list(range(1, depth + 1))


def evaluate(clips: list, checkpoints: list, out_dir: str, crfs=DEFAULT_CRFS, size: Optional[tuple] = None,
             max_frames: Optional[int] = None, coder: str = "auto", rates: Optional[list] = None, device="cpu",
             codecs=tuple(FFMPEG_CODECS), progress: bool = False, vgg_weights: Optional[str] = None) -> tuple:
    """Measure every checkpoint and x264/x265 on every clip; write ``rd.csv``, ``rd.png``, ``bd_rate.csv``
    and per clip ``side_by_side_<clip>.png`` (its middle frame: original, models, x264 at a similar bpp).

    ``checkpoints`` are paths or ``LABEL=PATH``; checkpoints sharing a label form one
    curve (default label: the model type), and so do a residual model's ``rates``.
    LPIPS needs the VGG16 weights (``vgg_weights`` or the torch hub cache), else it is skipped.
    Returns ``(rate points, BD rates)``.
    """
    lpips, lpips_note = lpips_network(vgg_weights, device)
    models = []
    for spec in checkpoints:
        label, path = _label_and_path(spec)
        codec = load_codec_model(path, device)
        models.append((label or codec.config.model_type, os.path.basename(path), codec))
    points = []
    for clip in clips:
        reference, fps = read_frames(clip, size, max_frames)
        name = os.path.basename(clip.rstrip(os.sep))
        logger.info("%s: %d frames %dx%d", name, len(reference), reference.shape[2], reference.shape[1])
        middle, clip_points, middle_frames = len(reference) // 2, [], {}
        for label, setting, codec in models:
            for rate in residual_rates(codec, reference.shape[1:3], rates):
                start = time.perf_counter()
                data = compress(codec, reference, fps, coder=coder, rate=rate, progress=progress)
                encode_s = time.perf_counter() - start
                start = time.perf_counter()
                decoded, _ = decompress(codec, data, name, progress=progress)
                clip_points.append(_point(name, label, setting if rate is None else f"{setting} rate={rate}",
                                          reference, decoded, len(data), encode_s, time.perf_counter() - start, lpips))
                middle_frames[clip_points[-1]] = decoded[middle]
        with tempfile.TemporaryDirectory() as workdir:
            for codec_name in codecs:
                for crf in crfs:
                    nbytes, decoded, encode_s, decode_s = ffmpeg_roundtrip(reference, fps, codec_name, crf, workdir)
                    clip_points.append(_point(name, codec_name, f"crf={crf}", reference, decoded, nbytes, encode_s,
                                              decode_s, lpips))
                    middle_frames[clip_points[-1]] = decoded[middle]
        shown = [(p, middle_frames[p]) for p in side_by_side_points(clip_points)]
        os.makedirs(out_dir, exist_ok=True)
        save_png(side_by_side_figure(reference[middle], middle, name, shown), side_by_side_path(out_dir, name))
        points += clip_points
    bd_rates = _bd_rates(points)
    _write_csv(os.path.join(out_dir, "rd.csv"), [attrs.asdict(p) for p in points])
    _write_csv(os.path.join(out_dir, "bd_rate.csv"), [attrs.asdict(b) for b in bd_rates])
    plot_rd(points, os.path.join(out_dir, "rd.png"), lpips_note)
    return points, bd_rates


def _bd_rates(points: list) -> list:
    results = []
    for clip in dict.fromkeys(p.clip for p in points):
        curves = {}
        for p in points:
            if p.clip == clip:
                curves.setdefault(p.codec, []).append((p.bpp, p.psnr))
        for anchor in ANCHORS:
            if anchor not in curves:
                continue
            for codec, curve in curves.items():
                if codec not in ANCHORS[:ANCHORS.index(anchor) + 1]:  # x265 against x264, not the reverse
                    results.append(BdRate(clip, codec, anchor, *bd_rate(curves[anchor], curve)))
    return results


def _write_csv(path: str, rows: list) -> None:
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(path, lambda fh: fh.write(text.getvalue().encode("utf-8")))


def format_table(points: list, bd_rates: list) -> str:
    """The rate points and BD rates as aligned text."""
    head = ["clip", "codec", "setting", "bytes", "bpp", "PSNR", "SSIM", "LPIPS", "enc fps", "dec fps"]
    rows = [[p.clip, p.codec, p.setting, str(p.bytes), f"{p.bpp:.4f}", f"{p.psnr:.2f}", f"{p.ssim:.3f}",
             f"{p.lpips:.4f}" if p.lpips is not None else "-", f"{p.encode_fps:.1f}", f"{p.decode_fps:.1f}"]
            for p in points]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head] + rows]
    for b in bd_rates:
        value = f"{b.percent:+.1f}%" if b.percent is not None else b.note
        lines.append(f"BD-rate {b.codec} vs {b.anchor} on {b.clip}: {value}")
    return "\n".join(lines)
