"""CausalVideoVQ against VqVae2 at the same bits per pixel and the same CPU minutes.

Both models code clips of 9 frames at 64x64 from the built-in clips (``bikes.mp4`` and
``bigbuckbunny.mp4`` to train, ``carphone_pristine.mp4`` to validate) at exactly
0.0625 bits per pixel before entropy coding:

    VqVae2         9 frames folded into one 16x16 map of 512 codes    256 x 9 bits  = 2304 bits
    CausalVideoVQ  4x8x8: 3 latent frames of 8x8, FSQ [8, 8, 8, 8]    192 x 12 bits = 2304 bits

Each trains with the trainer's own step (``TrainVqVae.train_step``: MSE + the quantizer's
loss, Adam) until it has used ``--minutes`` of CPU time in its steps (process CPU time, so
other load on the machine does not change the budget; loading clips is not counted), then
both are validated on the same clips: PSNR, SSIM, temporal error (mean absolute difference
of frame-to-frame changes, reconstruction vs original) and codebook usage. ``--repeats``
runs the pair again with other seeds and reports the spread. ``--only NAME`` trains one model
alone (to try a variant of it without rerunning the other; no headline then).

The last line is the headline: CausalVideoVQ's PSNR minus VqVae2's at equal bpp.

    python benchmarks/bench_video_tokenizers.py [--minutes 3] [--repeats 1] [--threads 1] [--only NAME]
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from benchmarks.common import format_table, write
from core.config import deep_merge
from models.architecture import rate_summary
from models.builders import config_from_dict
from train.train_custom_videos import build_trainer

SEQUENCE, SIZE = 9, 64

MODELS = {
    "VqVae2": {  # param.json's model, its codes made 16x16 x 9 bits for the 9-frame clip
        "model_type": "VqVae2",
        "model_args": {"group_count": 3, "n_hid": 32, "n_blk_per_group": 1, "vocab_size": 512, "n_init": 96,
                       "decay": 0.99, "dead_code_threshold": 1.0},
        "train_args": {"lr": 0.002},
    },
    "CausalVideoVQ": {  # configs/causal_video.json's model
        "model_type": "CausalVideoVQ",
        "model_args": {"spatial_compression": 8, "temporal_compression": 4, "ch": 8, "ch_mult": [1, 2, 2, 4],
                       "num_res_blocks": 1, "z_channels": 16, "attention": True,
                       "quantizer": {"type": "fsq", "levels": [8, 8, 8, 8]}},
        "train_args": {"lr": 0.0003},
    },
}

COMMON = {
    "data_args": {"batch_size": 2, "sequence_length": SEQUENCE, "resolution": [SIZE, SIZE]},
    "train_args": {"num_steps": 10 ** 9, "device": "cpu", "progress_bar": False, "fit_prior": False,
                   "compute_fid": False, "compute_lpips": False, "val_max_images": 16 * SEQUENCE},
    "data_process": {"train": "builtin:train", "vaild": "builtin:valid"},
    "use_wandb": False,
}


def build(name: str, seed: int, folder: str):
    run = {"data_args": {"seed": seed}, "train_args": {"folder_name": folder, "run_name": f"{name}-{seed}"}}
    return build_trainer(config_from_dict(deep_merge(deep_merge(COMMON, MODELS[name]), run)))


def train_for(trainer, cpu_seconds: float) -> tuple:
    """Trainer steps until they have used ``cpu_seconds`` of process CPU time: ``(steps, cpu seconds)``."""
    trainer.model.train()
    steps, used = 0, 0.0
    while used < cpu_seconds:
        for clips, _paths in trainer.training_loader:
            frames = trainer._prepare(clips)[0]
            start = time.process_time()
            trainer.train_step(frames, steps)
            used += time.process_time() - start
            steps += 1
            if used >= cpu_seconds:
                break
    return steps, used


def run(name: str, seed: int, minutes: float, folder: str) -> dict:
    trainer = build(name, seed, folder)
    steps, used = train_for(trainer, 60 * minutes)
    result = trainer.evaluate(trainer.args.val_max_images)
    rate = rate_summary(trainer.model, (SEQUENCE, 3, SIZE, SIZE))
    return {"steps": steps, "steps_per_s": steps / used, "bpp": rate["bits_per_pixel"],
            "params": sum(p.numel() for p in trainer.model.parameters()),
            "compression": f"{rate['temporal_factor']}x{rate['spatial_factor']}x{rate['spatial_factor']}",
            **{key.split("/")[-1]: value for key, value in result.items()}}


def spread(values: list) -> str:
    return f"{min(values):.2f}..{max(values):.2f}" if len(values) > 1 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="CPU minutes of training steps per model")
    parser.add_argument("--repeats", type=int, default=1, help="runs per model (seeds 1, 2, ...)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--only", choices=list(MODELS), help="train this model alone (no headline)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.INFO)  # the trainers' start-up lines; the table is the report
    runs = {name: [] for name in MODELS if args.only in (None, name)}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(1, args.repeats + 1):
            for name in runs:  # the pair back to back: the machine's state falls on both alike
                runs[name].append(run(name, seed, args.minutes, folder))
                write(f"{name} seed {seed}: {runs[name][-1]['steps']} steps, PSNR {runs[name][-1]['psnr']:.2f} dB")
    headers = ["model", "compression", "bpp", "params", "steps", "steps/s", "PSNR dB", "PSNR range", "SSIM",
               "temporal err", "code usage"]
    rows = []
    for name, results in runs.items():
        mean = {key: statistics.mean(r[key] for r in results) for key in
                ("steps", "steps_per_s", "psnr", "ssim", "temporal", "codebook_usage", "bpp")}
        rows.append([name, results[0]["compression"], f"{mean['bpp']:.4f}", results[0]["params"], round(mean["steps"]),
                     mean["steps_per_s"], f"{mean['psnr']:.2f}", spread([r["psnr"] for r in results]),
                     f"{mean['ssim']:.3f}", f"{mean['temporal']:.4f}", f"{mean['codebook_usage']:.3f}"])
    write()
    write(f"{args.minutes:g} CPU minutes of training steps per model ({args.threads} thread(s)), "
          f"{args.repeats} run(s) each; validation on carphone_pristine.mp4, {SEQUENCE}-frame clips at {SIZE}x{SIZE}")
    write(format_table(headers, rows))
    if len(runs) < len(MODELS):
        return
    gains = [c["psnr"] - v["psnr"] for c, v in zip(runs["CausalVideoVQ"], runs["VqVae2"])]
    write(f"headline: CausalVideoVQ PSNR - VqVae2 PSNR at equal bpp = {statistics.mean(gains):.2f} dB")


if __name__ == "__main__":
    main()
