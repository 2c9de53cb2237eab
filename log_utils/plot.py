"""Curves of a run from its ``metrics.jsonl``: ``python -m log_utils.plot RUN_DIR``.

One PNG per quantity (train and validation on the same axes) in ``RUN_DIR/plots/``;
a quantity that was never logged gets no file.
"""
import argparse
import json
import logging
import math
import os
import sys

from matplotlib.figure import Figure

from log_utils.log_utils import METRICS_FILE

logger = logging.getLogger(__name__)

# file name -> (title, y label, logged keys, log-scale y)
PLOTS = {
    "loss": ("Loss", "loss", ("train/loss/total", "train/loss/recon", "train/loss/vq",
                              "val/loss/total", "val/loss/recon"), True),
    "psnr": ("PSNR", "dB", ("train/stats/psnr", "val/stats/psnr"), False),
    "ssim": ("SSIM", "SSIM", ("val/stats/ssim",), False),
    "lpips": ("LPIPS", "LPIPS", ("val/stats/lpips",), False),
    "fid": ("FID", "FID", ("val/stats/fid",), False),
    "codebook_usage": ("Codebook usage", "fraction of codes used", ("val/stats/codebook_usage",), False),
    "perplexity": ("Codebook perplexity", "perplexity", ("train/stats/perplexity", "val/stats/perplexity"), False),
    "temporal": ("Temporal error", "MSE of frame differences", ("val/stats/temporal",), False),
    "lr": ("Learning rate", "lr", ("train/lr",), True),
}


def read_metrics(path: str) -> list:
    """The JSON objects of ``metrics.jsonl``; a line cut short by a crash is skipped."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s:%d: not a JSON line, skipped", path, number)
    return records


def series(records: list, key: str) -> tuple:
    """``(steps, values)`` of the finite numbers logged under ``key``."""
    points = [
        (r["step"], r[key]) for r in records
        if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    ]
    return tuple(zip(*points)) if points else ((), ())


def plot_run(run_dir: str) -> list:
    """Write the curves of ``run_dir/metrics.jsonl`` into ``run_dir/plots/``; return the PNG paths."""
    records = read_metrics(os.path.join(run_dir, METRICS_FILE))
    out_dir = os.path.join(run_dir, "plots")
    paths = []
    for name, (title, ylabel, keys, log_y) in PLOTS.items():
        curves = {key: series(records, key) for key in keys}
        curves = {key: xy for key, xy in curves.items() if xy[0]}
        if not curves:
            continue
        fig = Figure(figsize=(7, 4), layout="tight")
        ax = fig.add_subplot()
        for key, (steps, values) in curves.items():
            ax.plot(steps, values, label=key, marker="." if len(steps) < 50 else None)
        if log_y and all(v > 0 for _, values in curves.values() for v in values):
            ax.set_yscale("log")
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"{name}.png")
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m log_utils.plot",
        description="Plot loss, PSNR, LPIPS, codebook usage and learning rate of a run against step.",
    )
    parser.add_argument("run_dir", help=f"run folder holding {METRICS_FILE}; PNGs go to RUN_DIR/plots/")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.run_dir, METRICS_FILE)):
        parser.error(f"{os.path.join(args.run_dir, METRICS_FILE)}: not found")
    paths = plot_run(args.run_dir)
    if not paths:
        parser.error(f"{os.path.join(args.run_dir, METRICS_FILE)}: no known metric keys to plot")
    sys.stdout.write("".join(path + "\n" for path in paths))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    sys.exit(main())
