"""The pictures of a rate-distortion evaluation: the RD panels and a side-by-side frame per clip.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, so no global backend or
figure registry) and written atomically as PNG. The builders return the figure, so a test
can count panels and read labels without decoding an image.
"""
import math
import os
from typing import Optional

import numpy as np
from matplotlib.figure import Figure

from core.atomic_files import atomic_write

# rd.png's columns: (RatePoint field, axis label)
RD_PANELS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("lpips", "LPIPS (lower is better)"))
MIN_TILE_PX = 256  # tiny frames are drawn larger (nearest neighbour), so a side by side stays readable
CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".ckpt", ".pt")


def point_label(setting: str) -> str:
    """A point's label on the plot: its setting (``crf=N``, or checkpoint name and rate) without file suffixes."""
    for suffix in CHECKPOINT_SUFFIXES:
        setting = setting.replace(suffix, "")
    return setting


def rd_figure(points: list, lpips_note: str = "") -> Figure:
    """PSNR, SSIM and LPIPS against bpp: one row of panels per clip, one curve per codec, points labelled.

    A panel whose metric was not measured (LPIPS without its weights) says so, with ``lpips_note``.
    """
    clips = list(dict.fromkeys(p.clip for p in points))
    fig = Figure(figsize=(5 * len(RD_PANELS), 4 * len(clips)), layout="constrained")
    axes = fig.subplots(len(clips), len(RD_PANELS), squeeze=False)
    for row, clip in zip(axes, clips):
        curves = {}
        for p in points:
            if p.clip == clip:
                curves.setdefault(p.codec, []).append(p)
        for ax, (field, ylabel) in zip(row, RD_PANELS):
            ax.set(title=f"{clip}: {ylabel.split(' ')[0]}", xlabel="bits per pixel", ylabel=ylabel, xscale="log")
            drawn = False
            for codec, curve in curves.items():
                measured = sorted((p for p in curve if getattr(p, field) is not None), key=lambda p: p.bpp)
                if not measured:
                    continue
                drawn = True
                bpp = [p.bpp for p in measured]
                values = [getattr(p, field) for p in measured]
                ax.plot(bpp, values, marker="o", label=codec)
                for p, x, y in zip(measured, bpp, values):
                    ax.annotate(point_label(p.setting), (x, y), textcoords="offset points", xytext=(4, 4),
                                fontsize=7)
            if drawn:
                ax.margins(0.1)  # room for the point labels
                ax.grid(True, which="both", alpha=0.3)
                ax.legend()
            else:  # say why instead of drawing an empty frame
                ax.set(xscale="linear", xticks=[], yticks=[], xlabel="", ylabel="")
                ax.text(0.5, 0.5, f"{ylabel.split(' ')[0]} not measured\n{lpips_note if field == 'lpips' else ''}",
                        ha="center", va="center", wrap=True, transform=ax.transAxes)
    return fig


def plot_rd(points: list, path: str, lpips_note: str = "") -> None:
    """Write ``rd_figure`` to ``path`` (PNG)."""
    save_png(rd_figure(points, lpips_note), path)


def frame_psnr(frame: np.ndarray, reference: np.ndarray) -> float:
    """PSNR (dB) of one uint8 frame; the MSE floor keeps identical frames finite."""
    mse = float(np.mean((frame.astype(np.float64) - reference.astype(np.float64)) ** 2)) / 255.0 ** 2
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def tile_caption(point, frame: np.ndarray, reference: np.ndarray) -> str:
    label = point_label(point.setting)
    return (f"{point.codec if label == point.codec else f'{point.codec} {label}'}\n{point.bpp:.4f} bpp, PSNR {frame_psnr(frame, reference):.2f} dB"
            f" (clip {point.psnr:.2f} dB)")


def side_by_side_figure(original: np.ndarray, index: int, clip: str, decoded: list) -> Figure:
    """Frame ``index`` of the original, then of each ``(rate point, decoded frame)``, captioned."""
    height, width = original.shape[:2]
    scale = max(1.0, MIN_TILE_PX / width)
    tiles = [(original, f"original\n{clip}, frame {index}")]
    tiles += [(frame, tile_caption(point, frame, original)) for point, frame in decoded]
    fig = Figure(figsize=(len(tiles) * width * scale / 100, height * scale / 100 + 0.45), layout="constrained")
    for ax, (frame, caption) in zip(fig.subplots(1, len(tiles), squeeze=False)[0], tiles):
        ax.imshow(frame, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
        ax.set_axis_off()
    return fig


def side_by_side_path(out_dir: str, clip: str) -> str:
    """``OUT/side_by_side_<clip name without extension>.png``."""
    return os.path.join(out_dir, f"side_by_side_{os.path.splitext(clip)[0]}.png")


def save_png(fig: Figure, path: str, dpi: Optional[int] = 100) -> None:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))
