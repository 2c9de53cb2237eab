"""Every quantizer on the same model and data: reconstruction, codebook usage, perplexity, speed.

VqVae2 at ``param.json``'s size (group_count 3, n_hid 32, 96-dim codes, 64x64 frames,
batch 2 clips of 4 frames) trains for ``--steps`` steps on the same batches of the
built-in clips with each quantizer at about 9 bits per code: 512 codes for ``vq``,
``ema``, ``sinkhorn``, ``simvq``; FSQ levels [8, 8, 8]; LFQ 9 bits, on the unit sphere
(the default) and in MAGVIT-v2's plain form (``lfq_plain``); residual VQ 3 levels of 8
codes. Then one validation pass over the built-in validation clips as ``param.json``
validates (at most 64 frames; the clip gives 8 clips of 4 frames, 2048 code vectors):
PSNR of the clamped frames, the share of the alphabet used over the whole pass, and the
perplexity of that pass's code histogram. ``train usage`` is the share used on
``TRAIN_CHECK_BATCHES`` other batches of the training videos (10240 vectors), which
tells a quantizer that never reaches its codes from one whose codes the single
validation scene does not need. Training runs in rounds, each quantizer in turn, so the
machine's noise falls on all alike; steps/s is given relative to ``ema`` (median over
rounds, with their range).

Usage is bounded by the sample: 2048 vectors drawn uniformly from 512 codes use 98.2% of
them, and 95% needs a nearly uniform code on the validation clip (perplexity about 470).
Usage hardly moves after 120 steps (FSQ 0.32, 0.36, 0.37 after 120, 300, 600 steps;
LFQ on the sphere 0.62, 0.70, 0.71), so 120 steps keep the run short on a CPU.

    python benchmarks/bench_quantizers.py [--steps 120] [--rounds 6] [--threads 1] [--seed 0] [--only fsq,lfq,ema]

The last line is the headline: ``headline: lowest codebook usage of fsq/lfq = X; slowest step / ema = Y``.
"""
import argparse
import logging
import math
import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F
from einops import rearrange

from benchmarks.common import format_table, write
from data_utils.loader import build_loader
from data_utils.sample_data import sample_video_files
from models.builders import config_from_dict, create_model

BASE = {
    "model_type": "VqVae2",
    "model_args": {"group_count": 3, "n_hid": 32, "n_blk_per_group": 1, "vocab_size": 512, "n_init": 96,
                   "commitment_cost": 0.25, "decay": 0.99, "dead_code_threshold": 1.0},
    "data_args": {"batch_size": 2, "sequence_length": 4, "resolution": [64, 64], "seed": 2025},
}
# about 9 bits per code each
QUANTIZERS = {
    "vq": ("vq", 512),
    "ema": ("ema", 512),
    "sinkhorn": ("sinkhorn", 512),
    "fsq": ({"type": "fsq", "levels": [8, 8, 8]}, 512),
    "lfq": ("lfq", 512),
    "lfq_plain": ({"type": "lfq", "spherical": False}, 512),
    "residual_vq": ({"type": "residual_vq", "num_quantizers": 3}, 8),
    "simvq": ("simvq", 512),
}
VALIDATION_FRAMES = 64  # param.json's val_max_images
TRAIN_CHECK_BATCHES = 20
LR = 2e-3


def build(name: str, seed: int = 0):
    spec, vocab_size = QUANTIZERS[name]
    data = {**BASE, "model_args": {**BASE["model_args"], "quantizer": spec, "vocab_size": vocab_size}}
    config = config_from_dict(data)
    torch.manual_seed(seed)
    return create_model(config), config


def frames_of(clips: torch.Tensor) -> torch.Tensor:
    """uint8 ``(b, d, h, w, c)`` -> ``((b d), c, h, w)`` in [-1, 1]."""
    return rearrange(clips, "b d h w c -> (b d) c h w").float() / 127.5 - 1


def train_block(model, optimizer, batches) -> float:
    model.train()
    start = time.perf_counter()
    for frames in batches:
        out = model(frames)
        loss = F.mse_loss(out.recon, frames) + out.vq_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


@torch.no_grad()
def code_counts(model, batches) -> torch.Tensor:
    """How often each code of the first level is used over ``batches``."""
    model.eval()
    vocab_size = model.vocab_sizes[0]
    counts = torch.zeros(vocab_size)
    for frames in batches:
        counts += torch.bincount(model.encode(frames).reshape(-1), minlength=vocab_size).float()
    return counts


@torch.no_grad()
def validate(model, batches) -> dict:
    model.eval()
    squared, pixels = 0.0, 0
    for frames in batches:
        recon = model(frames).recon.clamp(-1, 1)
        squared += float(((recon - frames) / 2).pow(2).sum())
        pixels += frames.numel()
    counts = code_counts(model, batches)
    probs = counts / counts.sum()
    perplexity = math.exp(float(-(probs * probs.clamp_min(1e-12).log()).sum()))
    return {"psnr": 10 * math.log10(1 / (squared / pixels)), "usage": float((counts > 0).float().mean()),
            "perplexity": perplexity}


def load_batches(steps: int) -> tuple:
    """The training batches, ``TRAIN_CHECK_BATCHES`` other batches of the training videos, the validation pass."""
    data_args = build("ema")[1].data_args
    stream = iter(build_loader(sample_video_files("train"), data_args, False, seed=data_args.seed))
    train_batches = [frames_of(next(stream)[0]) for _ in range(steps)]
    unseen = iter(build_loader(sample_video_files("train"), data_args, False, seed=data_args.seed + 1))
    check_batches = [frames_of(next(unseen)[0]) for _ in range(TRAIN_CHECK_BATCHES)]
    valid_batches, seen = [], 0
    for clips, _ in build_loader(sample_video_files("valid"), data_args, False, validation=True):
        valid_batches.append(frames_of(clips))
        seen += valid_batches[-1].shape[0]
        if seen >= VALIDATION_FRAMES:
            break
    return train_batches, check_batches, valid_batches


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="the models' initialisation")
    parser.add_argument("--only", default=",".join(QUANTIZERS), help="comma-separated quantizers (ema is always run)")
    args = parser.parse_args(argv)
    names = ["ema"] + [name for name in args.only.split(",") if name != "ema"]
    unknown = sorted(set(names) - set(QUANTIZERS))
    if unknown:
        parser.error(f"--only: unknown quantizer(s) {', '.join(unknown)}; expected some of {', '.join(QUANTIZERS)}")
    torch.set_num_threads(args.threads)
    logging.disable(logging.INFO)
    train_batches, check_batches, valid_batches = load_batches(args.steps)
    runs = {name: build(name, args.seed)[0] for name in QUANTIZERS if name in names}
    optimizers = {name: torch.optim.Adam(model.trainable_parameters(), lr=LR) for name, model in runs.items()}
    per_round = math.ceil(args.steps / args.rounds)
    seconds = {name: [] for name in runs}
    for start in range(0, args.steps, per_round):
        block = train_batches[start:start + per_round]
        for name, model in runs.items():
            seconds[name].append(train_block(model, optimizers[name], block) / len(block))
    rows, speeds, usage = [], {}, {}
    for name, model in runs.items():
        ratios = [ema / own for ema, own in zip(seconds["ema"], seconds[name])]
        speeds[name] = statistics.median(ratios)
        result = validate(model, valid_batches)
        usage[name] = result["usage"]
        train_usage = float((code_counts(model, check_batches) > 0).float().mean())
        bits = sum(math.log2(v) for v in model.code_factors[0]) * max(1, model.quantizers[0].index_depth)
        rows.append([name, f"{bits:.1f}", f"{result['psnr']:.2f}", f"{result['usage']:.3f}",
                     f"{result['perplexity']:.1f}", f"{train_usage:.3f}", f"{1 / statistics.median(seconds[name]):.2f}",
                     f"{speeds[name]:.2f} ({min(ratios):.2f}-{max(ratios):.2f})"])
    vectors = int(code_counts(runs["ema"], valid_batches).sum())
    write(f"VqVae2 (param.json size), {args.steps} steps of batch 2 x 4 frames at 64x64, seed {args.seed}, "
          f"validation {sum(b.shape[0] for b in valid_batches)} frames ({vectors} code vectors), {args.threads} thread(s)")
    write(format_table(["quantizer", "bits/code", "val PSNR", "usage", "perplexity", "train usage", "steps/s",
                        "speed / ema (range)"], rows))
    write(f"a uniform code over 512 would use {1 - (1 - 1 / 512) ** vectors:.3f} of them on these {vectors} vectors")
    measured = [usage[name] for name in ("fsq", "lfq") if name in usage]
    lowest = f"{min(measured):.3f}" if measured else "-"
    write(f"headline: lowest codebook usage of fsq/lfq = {lowest}; slowest step / ema = {min(speeds.values()):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
