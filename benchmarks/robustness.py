"""Nothing lost: crash safety, exact resume and damaged checkpoints, measured as a hostile user would.

Three measurements on the CPU with tiny models (32x32 frames of the built-in clips):

    kills   ``kill -9`` a training (``resume: auto``, a checkpoint every 2 steps) at random
            moments, right after a save and inside a save, again and again; after every kill
            each checkpoint on disk must load; then one run to the end. Prints kills, files
            checked, corrupt files, the final exit code and step, and the steps that
            ``metrics.jsonl`` holds more than once.
    resume  per family, 2N steps straight against N steps, a resume and N more
            (``deterministic: true``); prints how many weight tensors differ.
    flips   single-byte flips at random offsets of a trained checkpoint, each loaded as a
            resume would; prints how many were refused, accepted unchanged (a harmless
            byte) and accepted with changed contents (the failure that matters).

    python benchmarks/robustness.py kills [--kills 20] [--seed 0]
    python benchmarks/robustness.py resume [--steps 6] [--families VqVae2 TamingVQGAN ...]
    python benchmarks/robustness.py flips [--flips 30] [--seed 0]
"""
import argparse
import collections
import copy
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from benchmarks.common import format_table, write
from core.checkpoint import list_checkpoints, load_checkpoint, verify_checkpoint
from core.config import deep_merge
from models.builders import config_from_dict
from train.train_custom_videos import build_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {
    "model_type": "VqVae2",
    "model_args": {"group_count": 2, "n_hid": 8, "n_blk_per_group": 1, "vocab_size": 32, "n_init": 16},
    "data_args": {"batch_size": 2, "sequence_length": 2, "resolution": [32, 32], "seed": 1},
    "train_args": {"num_steps": 12, "lr": 0.002, "save_interval": 6, "validation_interval": 4, "val_max_images": 8,
                   "log_interval": 5, "wandb_image_interval": 1000, "progress_bar": False, "fit_prior": False,
                   "compute_fid": False, "compute_lpips": False, "device": "cpu", "deterministic": True,
                   "lr_decay_interval": 5, "lr_decay": 0.9},
    "data_process": {"train": "builtin:valid", "vaild": "builtin:valid"},
}
VQVAE2_TINY = {"n_hid": 8, "res_channels": 4, "nb_res_layers": 1, "nb_levels": 2, "n_init": 8, "vocab_size": 16}
TAMING_TINY = {
    "vocab_size": 16, "n_init": 8, "dead_code_threshold": 1.0,  # restarts on, as users turn them on
    "ddconfig": {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "z_channels": 8,
                 "resolution": 32},
    "lossconfig": {"disc_start": 2, "disc_num_layers": 2, "disc_ndf": 8, "perceptual_weight": 0.0},
}
CAUSAL_VIDEO_TINY = {"ch": 4, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "z_channels": 4, "attention": False,
                     "quantizer": {"type": "fsq", "levels": [5, 5, 5]}}
FAMILIES = {  # name -> (model_type, model_args, scaling_rates, extra train_args)
    "VqVae2": ("VqVae2", TINY["model_args"], None, {}),
    "VQVAE2": ("VQVAE2", VQVAE2_TINY, [2, 2], {}),
    "VQVAE2_OptVQ": ("VQVAE2_OptVQ", VQVAE2_TINY, [2, 2], {}),
    "TamingVQGAN": ("TamingVQGAN", TAMING_TINY, None, {"perceptual_backbone": "random"}),
    "EMAVQ": ("EMAVQ", TAMING_TINY, None, {"perceptual_backbone": "random"}),
    "CausalVideoVQ": ("CausalVideoVQ", CAUSAL_VIDEO_TINY, None, {}),
    "VqVae2+GAN": ("VqVae2", TINY["model_args"], None,
                   {"use_gan": True, "disc_start": 2, "disc_interval": 1, "disc_layers": 2, "disc_ndf": 8,
                    "use_perceptual": False}),
}


# -- resume ----------------------------------------------------------------------------------------
def family_config(name: str, folder: str, run_name: str, train_args: dict) -> dict:
    model_type, model_args, rates, extra = FAMILIES[name]
    data = copy.deepcopy(TINY)
    data.update(model_type=model_type, model_args=copy.deepcopy(model_args))
    if rates:
        data["scaling_rates"] = rates
    return deep_merge(data, {"train_args": {**extra, **train_args, "folder_name": folder, "run_name": run_name}})


def run(data: dict) -> dict:
    trainer = build_trainer(config_from_dict(data, source=f"{data['train_args']['run_name']}.json"))
    try:
        trainer.train()
    finally:
        trainer.log_mgr.close()
    return trainer.model.state_dict()


def measure_resume(names: list, steps: int) -> None:
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as folder:
            straight = run(family_config(name, folder, "straight", {"num_steps": 2 * steps, "save_interval": steps}))
            run(family_config(name, folder, "halves", {"num_steps": steps, "save_interval": steps}))
            resumed = run(family_config(name, folder, "halves", {"num_steps": 2 * steps, "save_interval": steps,
                                                                 "resume": "auto"}))
        differ = [k for k in straight if not torch.equal(straight[k], resumed[k])]
        rows.append([name, len(straight), len(differ), "yes" if not differ else "no"])
    write(format_table(["family", "tensors", "differ", "bit-exact"], rows))
    write(f"bit-exact families: {sum(r[3] == 'yes' for r in rows)} of {len(rows)} "
          f"({2 * steps} straight vs {steps} + resume + {steps})")


# -- flips ----------------------------------------------------------------------------------------
def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


def measure_flips(flips: int, seed: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        run(deep_merge(TINY, {"train_args": {"num_steps": 4, "save_interval": 4, "folder_name": folder,
                                             "run_name": "flips", "validation_interval": 100}}))
        path = list_checkpoints(os.path.join(folder, "flips", "checkpoints"))[0]
        original = load_checkpoint(path)
        data = open(path, "rb").read()
        counts = collections.Counter()
        for _ in range(flips):
            offset = rng.randrange(len(data))
            damaged = bytearray(data)
            damaged[offset] ^= 1 << rng.randrange(8)
            flipped = os.path.join(folder, "flipped.pth.tar")
            with open(flipped, "wb") as fh:
                fh.write(damaged)
            try:
                loaded = verify_checkpoint(load_checkpoint(flipped), flipped)
            except Exception:  # noqa: BLE001 -- any refusal counts; what it says is tested elsewhere
                counts["refused"] += 1
                continue
            counts["accepted, contents unchanged" if same(original, loaded) else "accepted, contents CHANGED"] += 1
    write(format_table(["outcome", "flips"], [[k, counts[k]] for k in
                                             ("refused", "accepted, contents unchanged", "accepted, contents CHANGED")]))
    write(f"detected: {counts['refused']} of {flips} single-byte flips of a {len(data):,}-byte checkpoint; "
          f"silently changed: {counts['accepted, contents CHANGED']}")


# -- kills ----------------------------------------------------------------------------------------
def newest_step(folder: str) -> int:
    found = list_checkpoints(folder)
    return int(os.path.basename(found[0])[len("checkpoint_step"):][:8]) if found else -1


def start(config_path: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "train/train_custom_videos.py", "--config", config_path, "--device", "cpu"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_moment(proc, folder: str, mode: str, rng: random.Random, timeout: float = 120.0) -> None:
    """Return at the moment to kill: a random time after the first new save, right after a save, or inside one."""
    before = newest_step(folder)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and newest_step(folder) <= before:
        time.sleep(0.005)
    if mode == "random":
        time.sleep(rng.uniform(0.0, 1.0))
    elif mode == "inside a save":
        seen = newest_step(folder)
        while time.time() < deadline and proc.poll() is None:
            if any(n.startswith(".tmp") for n in os.listdir(folder)) or newest_step(folder) > seen:
                return
            time.sleep(0.0005)


def repeated_steps(path: str) -> tuple:
    """Steps written more than once in ``metrics.jsonl``: (train lines, validation lines)."""
    train, val = collections.Counter(), collections.Counter()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            (val if any(k.startswith("val/") for k in record) else train)[record["step"]] += 1
    return sum(n - 1 for n in train.values()), sum(n - 1 for n in val.values())


def measure_kills(kills: int, seed: int, num_steps: int) -> None:
    rng = random.Random(seed)
    modes = ["random", "right after a save", "inside a save"]
    with tempfile.TemporaryDirectory() as folder:
        data = deep_merge(TINY, {"train_args": {"num_steps": num_steps, "save_interval": 2, "keep_last": 2,
                                                "resume": "auto", "validation_interval": 10, "wandb_log_interval": 1,
                                                "deterministic": False, "folder_name": folder}})
        config_path = os.path.join(folder, "killme.json")
        with open(config_path, "w") as fh:
            json.dump(data, fh)
        run_dir = os.path.join(folder, "killme")
        ckpt_dir = os.path.join(run_dir, "checkpoints")
        done, checked, corrupt, by_mode = 0, 0, 0, collections.Counter()
        while done < kills:
            proc = start(config_path)
            mode = modes[done % len(modes)]
            wait_for_moment(proc, ckpt_dir, mode, rng)
            if proc.poll() is not None:
                break  # the run reached its end before this kill
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            done += 1
            by_mode[mode] += 1
            for name in os.listdir(ckpt_dir):
                if name.startswith(".tmp"):
                    continue
                checked += 1
                try:
                    verify_checkpoint(load_checkpoint(os.path.join(ckpt_dir, name)), name)
                except Exception:  # noqa: BLE001
                    corrupt += 1
        killed_at = newest_step(ckpt_dir)
        proc = start(config_path)
        output = proc.communicate(timeout=1800)[0]
        final = newest_step(ckpt_dir)
        train_repeats, val_repeats = repeated_steps(os.path.join(run_dir, "metrics.jsonl"))
        left = sorted(os.listdir(ckpt_dir))
    write(format_table(["figure", "value"], [
        ["kills", f"{done} ({', '.join(f'{n} {m}' for m, n in by_mode.items())})"],
        ["checkpoint files checked after kills", checked],
        ["corrupt checkpoint files", corrupt],
        ["newest checkpoint after the last kill", killed_at],
        ["final run: exit code", proc.returncode],
        ["final run: newest checkpoint step", f"{final} of {num_steps}"],
        ["metrics.jsonl repeated train steps", train_repeats],
        ["metrics.jsonl repeated validation steps", val_repeats],
        ["files left in checkpoints/", " ".join(left)],
    ]))
    if proc.returncode != 0:
        write(output[-3000:])
    write(f"kills survived: {done} with {corrupt} corrupt checkpoints; final run "
          f"{'reached' if final == num_steps and proc.returncode == 0 else 'did NOT reach'} step {num_steps}; "
          f"metrics.jsonl repeats {train_repeats} train and {val_repeats} validation steps")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    kills = sub.add_parser("kills")
    kills.add_argument("--kills", type=int, default=20)
    kills.add_argument("--steps", type=int, default=400, help="num_steps of the killed run")
    kills.add_argument("--seed", type=int, default=0)
    resume = sub.add_parser("resume")
    resume.add_argument("--steps", type=int, default=6)
    resume.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    flips = sub.add_parser("flips")
    flips.add_argument("--flips", type=int, default=30)
    flips.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)  # the runs trained here would fill the screen; the table is the result
    torch.set_num_threads(1)
    if args.what == "kills":
        measure_kills(args.kills, args.seed, args.steps)
    elif args.what == "resume":
        measure_resume(args.families, args.steps)
    else:
        measure_flips(args.flips, args.seed)


if __name__ == "__main__":
    main()
