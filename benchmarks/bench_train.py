"""The trainer's cost beyond the model: ``TrainVqVae.train_step`` against a bare loop.

For each model family at a small fixed configuration (64x64 frames, batch 2 clips of
4 frames, narrow widths; on the CPU) the script builds the trainer from a config, as
training does (``config_from_dict`` + ``build_trainer``), and a bare loop written here
on a copy of the same model (same initial weights, same batch of real frames):

    zero_grad; out = model(frames); loss = mse(out.recon, frames) + out.vq_loss;
    loss.backward(); adam.step()

Blocks of ``--steps`` steps of each run alternately (framework, bare, framework, ...)
so the machine's noise falls on both alike; the table gives steps/s of each and the
median over rounds of their ratio (target >= 0.95: the framework costs under 5%
beyond the model), with the rounds' range as a measure of the noise. Taming's loss
is upstream's (L1 + codebook + a GAN term whose discriminator only trains from
``disc_start``); here without its perceptual term, which the bare loop lacks too.

Where CUDA exists, a GPU section follows: images/s of the framework's step in fp32
(TF32 matmuls) and bf16 for the Taming f16 configuration at 256x256 (ch 128, ch_mult
[1,1,2,2,4], 2 res blocks, attention at 16, z 256, 1024 codes of 256 dims; LPIPS with
random weights, which costs what the real one does), the FLOPs of one step counted by
``torch.utils.flop_counter.FlopCounterMode``, and the achieved fraction of the GPU's
dense peak (from a table of known GPUs; 'unknown' otherwise).

Every row also counts the device-to-host reads of one framework step (``.item()``,
``float(t)``, ``bool(t)``, ``int(t)``, ``.tolist()``): each makes the host wait for the
device's queued work. On the GPU the section adds the share of step time the GPU sits
idle (``torch.profiler``: 1 - the union of kernel time over the wall time of the steps).

The last line is the headline: the smallest framework / bare ratio over the families.

    python benchmarks/bench_train.py [--steps 5] [--rounds 6] [--threads 1]
                                     [--families VqVae2 TamingVQGAN ...] [--gpu-batch 16]
"""
import argparse
import copy
import logging
import os
import statistics
import sys
import tempfile

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import Stopwatch, format_table, write
from benchmarks.host_reads import counting_host_reads
from core.config import deep_merge
from models.builders import config_from_dict
from train.optim import adam
from train.train_custom_videos import build_trainer

TARGET = 0.95

# One small, fixed configuration per family (CPU scale).
FAMILIES = {
    "VqVae2": {
        "model_type": "VqVae2",
        "model_args": {"group_count": 3, "n_hid": 16, "n_blk_per_group": 1, "vocab_size": 256, "n_init": 48},
    },
    "VQVAE2": {
        "model_type": "vqvae2",
        "scaling_rates": [4, 2],
        "model_args": {"n_hid": 32, "res_channels": 16, "nb_res_layers": 1, "nb_levels": 2, "n_init": 32,
                       "vocab_size": 256},
    },
    "VQVAE2_OptVQ": {
        "model_type": "vqvae2optvq",
        "scaling_rates": [4, 2],
        "model_args": {"n_hid": 32, "res_channels": 16, "nb_res_layers": 1, "nb_levels": 2, "n_init": 32,
                       "vocab_size": 256},
    },
    "TamingVQGAN": {
        "model_type": "TamingVQGAN",
        "model_args": {"vocab_size": 256, "n_init": 16,
                       "ddconfig": {"ch": 16, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [16],
                                    "z_channels": 16, "resolution": 64},
                       "lossconfig": {"perceptual_weight": 0.0, "disc_start": 1000000}},
    },
    "CausalVideoVQ": {  # 5-frame clips: 1 + 4 frames give 2 latent frames at 4x8x8
        "model_type": "CausalVideoVQ",
        "model_args": {"ch": 8, "ch_mult": [1, 2, 2, 4], "num_res_blocks": 1, "z_channels": 16, "quantizer": "fsq"},
        "data_args": {"sequence_length": 5},
    },
}

COMMON = {
    "data_args": {"batch_size": 2, "sequence_length": 4, "resolution": [64, 64], "seed": 1},
    "train_args": {"num_steps": 1000000, "lr": 0.001, "device": "cpu", "progress_bar": False, "fit_prior": False,
                   "compute_fid": False, "compute_lpips": False, "perceptual_backbone": "random"},
    "data_process": {"train": "builtin:valid"},
    "use_wandb": False,
}

# The Taming f16 release (vqgan_imagenet_f16_1024) at 256x256: the adapter's defaults.
TAMING_F16 = {
    "model_type": "TamingVQGAN",
    "model_args": {"vocab_size": 1024, "n_init": 256,
                   "ddconfig": {"ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
                                "z_channels": 256, "resolution": 256}},
    "data_args": {"resolution": [256, 256], "sequence_length": 1, "seed": 1},
}

# Dense tensor-core peaks in TFLOP/s, (TF32, BF16), from the vendors' data sheets. Matched
# in order as substrings of the device name, so the more specific names come first.
PEAK_TFLOPS = [
    ("H100 PCIe", (378.0, 756.0)),
    ("H100", (494.7, 989.4)),
    ("H200", (494.7, 989.4)),
    ("A100", (156.0, 312.0)),
    ("A10G", (35.0, 70.0)),
    ("A10", (62.5, 125.0)),
    ("L40S", (183.0, 362.1)),
    ("L40", (90.5, 181.0)),
    ("L4", (60.0, 121.0)),
    ("RTX 4090", (82.6, 165.2)),
]


def make_config(data: dict, folder: str):
    return config_from_dict(deep_merge(deep_merge(COMMON, data), {"train_args": {"folder_name": folder}}))


def real_frames(trainer) -> torch.Tensor:
    """One batch of the trainer's own training clips as ``((b d), c, h, w)`` in [-1, 1]."""
    clips, _ = next(iter(trainer.training_loader))
    return trainer.model.clips_to_input(clips.to(trainer.device))


class BareLoop:
    """The least a training step can do: forward, MSE + VQ loss, backward, Adam (the same Adam)."""

    def __init__(self, model, lr: float):
        self.model = model
        self.optimizer = adam(model.trainable_parameters(), lr=lr)

    def step(self, frames: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(frames)
        loss = F.mse_loss(out.recon, frames) + out.vq_loss
        loss.backward()
        self.optimizer.step()


def compare_family(name: str, data: dict, args, folder: str) -> dict:
    """Steps/s of the framework's step and of the bare loop, in alternating blocks."""
    trainer = build_trainer(make_config(data, os.path.join(folder, name)), "cpu")
    trainer.model.train()
    bare = BareLoop(copy.deepcopy(trainer.model), trainer.args.lr)
    frames = real_frames(trainer)
    step = 0

    def framework_block():
        nonlocal step
        for _ in range(args.steps):
            trainer.train_step(frames, step)
            step += 1

    def bare_block():
        for _ in range(args.steps):
            bare.step(frames)

    framework_block(), bare_block()  # warm-up: allocator, lazy initialisation
    reads = host_reads_per_step(trainer, frames, step)
    step += args.steps
    framework_time, bare_time, ratios = 0.0, 0.0, []
    for _ in range(args.rounds):
        with Stopwatch() as framework_clock:
            framework_block()
        with Stopwatch() as bare_clock:
            bare_block()
        framework_time += framework_clock.seconds
        bare_time += bare_clock.seconds
        ratios.append(bare_clock.seconds / framework_clock.seconds)
    trainer.log_mgr.close()
    steps = args.steps * args.rounds
    params = sum(p.numel() for p in trainer.model.parameters())
    return {"family": name, "params": params, "framework": steps / framework_time, "bare": steps / bare_time,
            "ratio": statistics.median(ratios), "lowest": min(ratios), "highest": max(ratios), "reads": reads}


def host_reads_per_step(trainer, frames, first_step: int, steps: int = 5) -> float:
    """Device-to-host reads of the framework's step, averaged over ``steps`` steps."""
    with counting_host_reads() as reads:
        for step in range(first_step, first_step + steps):
            trainer.train_step(frames, step)
    return reads.total / steps


def peak_tflops(device_name: str) -> tuple:
    """(TF32, BF16) dense peaks of a known GPU, or None."""
    for key, peaks in PEAK_TFLOPS:
        if key in device_name:
            return peaks
    return None


def images_per_second(data: dict, precision: str, batch: int, steps: int, folder: str, device: str = "cuda") -> dict:
    """Images/s and FLOP/s of the framework's step for the config ``data`` in ``precision``."""
    data = deep_merge(data, {"data_args": {"batch_size": batch},
                        "train_args": {"precision": precision, "folder_name": folder, "device": device}})
    trainer = build_trainer(config_from_dict(deep_merge(COMMON, data)), device)
    trainer.model.train()
    frames = real_frames(trainer)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(frames, 0)
    flops = counter.get_total_flops()
    for step in range(1, 3):  # warm-up: cuDNN autotuning, allocator
        trainer.train_step(frames, step)
    synchronize = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    synchronize()
    with Stopwatch() as clock:
        for step in range(3, 3 + steps):
            trainer.train_step(frames, step)
        synchronize()
    seconds = clock.seconds / steps
    reads = host_reads_per_step(trainer, frames, 3 + steps)
    idle = gpu_idle_share(trainer, frames, 8 + steps)
    trainer.log_mgr.close()
    return {"precision": precision, "images": frames.shape[0] / seconds, "flops": flops, "flop_rate": flops / seconds,
            "reads": reads, "idle": idle}


def gpu_idle_share(trainer, frames, first_step: int, steps: int = 5) -> float:
    """1 - (union of GPU kernel intervals) / (wall time) over ``steps`` profiled steps."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=activities) as profiler:
        with Stopwatch() as clock:
            for step in range(first_step, first_step + steps):
                trainer.train_step(frames, step)
            torch.cuda.synchronize()
    kernels = sorted((e.time_range.start, e.time_range.end) for e in profiler.events()
                     if e.device_type == torch.autograd.DeviceType.CUDA)
    busy, reach = 0.0, float("-inf")
    for start, end in kernels:  # the union of possibly overlapping intervals (microseconds)
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    return max(0.0, 1.0 - busy * 1e-6 / clock.seconds)


def gpu_section(args, folder: str) -> None:
    if not torch.cuda.is_available():
        write("GPU section: skipped (no CUDA device)")
        return
    name = torch.cuda.get_device_name()
    peaks = peak_tflops(name)
    rows = []
    for precision, peak_index, peak_name in (("fp32", 0, "TF32"), ("bf16", 1, "BF16")):
        result = images_per_second(TAMING_F16, precision, args.gpu_batch, args.gpu_steps, folder)
        torch.cuda.empty_cache()
        peak = peaks[peak_index] * 1e12 if peaks else None
        rows.append([precision, result["images"], result["flops"] / 1e9, result["flop_rate"] / 1e12,
                     f"{peak / 1e12:.0f} ({peak_name})" if peak else "unknown",
                     f"{result['flop_rate'] / peak:.1%}" if peak else "unknown", result["reads"],
                     f"{result['idle']:.1%}"])
    write(f"GPU: {name}; Taming f16 at 256x256, batch {args.gpu_batch} images, the framework's training step "
          f"(LPIPS with random weights; discriminator before disc_start)")
    write(format_table(["precision", "images/s", "GFLOP/step", "achieved TFLOP/s", "peak TFLOP/s", "of peak",
                        "host reads/step", "GPU idle"], rows))
    write()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block (default 5)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating framework/bare block pairs (default 6)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1: steadier on "
                        "shared machines)")
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES),
                        help="families to measure (default: all)")
    parser.add_argument("--gpu-batch", type=int, default=16, help="images per step in the GPU section (default 16)")
    parser.add_argument("--gpu-steps", type=int, default=10, help="timed steps per precision on the GPU (default 10)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)  # the trainer's progress lines; this script's output is its table
    with tempfile.TemporaryDirectory() as folder:
        results = [compare_family(name, FAMILIES[name], args, folder) for name in args.families]
        write(f"train_step vs a bare loop on the CPU ({args.threads} thread(s)): 64x64 frames, batch 2 clips x 4 "
              f"frames, fp32; {args.rounds} alternating rounds of {args.steps} steps")
        rows = [[r["family"], r["params"], r["framework"], r["bare"], r["ratio"],
                 f"{r['lowest']:.2f}..{r['highest']:.2f}", r["reads"]] for r in results]
        write(format_table(["family", "parameters", "framework steps/s", "bare steps/s",
                            "framework/bare (median)", "rounds' range", "host reads/step"], rows))
        write()
        gpu_section(args, folder)
    worst = min(results, key=lambda r: r["ratio"])
    write(f"headline: framework steps/s / bare-loop steps/s = {worst['ratio']:.2f} (worst: {worst['family']}; "
          f"target >= {TARGET}: {'met' if worst['ratio'] >= TARGET else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
