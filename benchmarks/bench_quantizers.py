"""Every quantizer on the same model and data: reconstruction, codebook usage, perplexity, speed.

VqVae2 at ``param.json``'s size (group_count 3, n_hid 32, 96-dim codes, 64x64 frames,
batch 2 clips of 4 frames) trains for ``--steps`` steps on the same batches of the
built-in clips with each quantizer at about 9 bits per code: 512 codes for ``vq``,
``ema``, ``sinkhorn``, ``simvq``; FSQ levels [8, 8, 8]; LFQ 9 bits; residual VQ 3 levels
of 8 codes. Then one validation pass over the built-in validation clips (``param.json``'s
64 frames): PSNR of the clamped frames, the share of the alphabet used over the whole
pass, and the perplexity of that pass's code histogram. Training runs in rounds, each
quantizer in turn, so the machine's noise falls on all alike; steps/s is given relative
to ``ema`` (median over rounds, with their range).

    python benchmarks/bench_quantizers.py [--steps 120] [--rounds 6] [--threads 1]

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
    "residual_vq": ({"type": "residual_vq", "num_quantizers": 3}, 8),
    "simvq": ("simvq", 512),
}
VALIDATION_FRAMES = 64
LR = 2e-3


def build(name: str):
    spec, vocab_size = QUANTIZERS[name]
    data = {**BASE, "model_args": {**BASE["model_args"], "quantizer": spec, "vocab_size": vocab_size}}
    config = config_from_dict(data)
    torch.manual_seed(0)
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
def validate(model, batches) -> dict:
    model.eval()
    vocab_size = model.vocab_sizes[0]
    counts = torch.zeros(vocab_size)
    squared, pixels = 0.0, 0
    for frames in batches:
        recon = model(frames).recon.clamp(-1, 1)
        squared += float(((recon - frames) / 2).pow(2).sum())
        pixels += frames.numel()
        indices = model.encode(frames)
        counts += torch.bincount(indices.reshape(-1), minlength=vocab_size).float()
    probs = counts / counts.sum()
    perplexity = math.exp(float(-(probs * probs.clamp_min(1e-12).log()).sum()))
    return {"psnr": 10 * math.log10(1 / (squared / pixels)), "usage": float((counts > 0).float().mean()),
            "perplexity": perplexity}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.disable(logging.INFO)
    _, config = build("ema")
    data_args = config.data_args
    stream = iter(build_loader(sample_video_files("train"), data_args, False, seed=data_args.seed))
    train_batches = [frames_of(next(stream)[0]) for _ in range(args.steps)]
    validation = build_loader(sample_video_files("valid"), data_args, False, validation=True)
    valid_batches, seen = [], 0
    for clips, _ in validation:
        valid_batches.append(frames_of(clips))
        seen += valid_batches[-1].shape[0]
        if seen >= VALIDATION_FRAMES:
            break

    runs = {name: build(name)[0] for name in QUANTIZERS}
    optimizers = {name: torch.optim.Adam(model.trainable_parameters(), lr=LR) for name, model in runs.items()}
    per_round = math.ceil(args.steps / args.rounds)
    seconds = {name: [] for name in QUANTIZERS}
    for start in range(0, args.steps, per_round):
        block = train_batches[start:start + per_round]
        for name, model in runs.items():
            seconds[name].append(train_block(model, optimizers[name], block) / len(block))
    rows, speeds = [], {}
    for name, model in runs.items():
        ratios = [ema / own for ema, own in zip(seconds["ema"], seconds[name])]
        speeds[name] = statistics.median(ratios)
        result = validate(model, valid_batches)
        bits = sum(math.log2(v) for v in model.code_factors[0]) * max(1, model.quantizers[0].index_depth)
        rows.append([name, f"{bits:.1f}", f"{result['psnr']:.2f}", f"{result['usage']:.3f}",
                     f"{result['perplexity']:.1f}", f"{1 / statistics.median(seconds[name]):.2f}",
                     f"{speeds[name]:.2f} ({min(ratios):.2f}-{max(ratios):.2f})"])
    write(f"VqVae2 (param.json size), {args.steps} steps of batch 2 x 4 frames at 64x64, "
          f"validation {VALIDATION_FRAMES} frames, {args.threads} thread(s)")
    write(format_table(["quantizer", "bits/code", "val PSNR", "usage", "perplexity", "steps/s",
                        "speed / ema (range)"], rows))
    usage = {row[0]: float(row[3]) for row in rows}
    write(f"headline: lowest codebook usage of fsq/lfq = {min(usage['fsq'], usage['lfq']):.3f}; "
          f"slowest step / ema = {min(speeds.values()):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
