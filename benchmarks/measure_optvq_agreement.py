"""How often OptVQ's inference indices (``encode``) equal its training assignment, after a short training.

Trains ``--steps`` steps of ``configs/vqvae2_optvq.json`` (on the CPU, through the real
trainer), then codes validation batches twice: as a training forward assigns them (no
update, under ``no_grad``) and by ``encode``. Prints the share of equal indices.

    python benchmarks/measure_optvq_agreement.py [--config configs/vqvae2_optvq.json] [--steps 60]
"""
import argparse
import itertools
import logging
import os
import sys
import tempfile

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from benchmarks.common import write
from core.config import deep_merge
from models.builders import config_from_dict, load_config
from train.train_custom_videos import build_trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/vqvae2_optvq.json")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as folder:
        data = deep_merge(load_config(args.config).to_dict(), {"train_args": {
            "folder_name": folder, "num_steps": args.steps, "progress_bar": False, "fit_prior": False,
            "compute_fid": False, "compute_lpips": False, "validation_interval": 10**6, "save_interval": 10**6}})
        trainer = build_trainer(config_from_dict(data, source=args.config), device_override="cpu")
        trainer.train()
        model, equal, total = trainer.model, 0, 0
        with torch.no_grad():
            for clips, _ in itertools.islice(trainer.validation_loader, 8):
                frames = trainer._prepare(clips)[0]
                trained = model.train()(frames).indices
                encoded = model.eval().encode(frames)
                equal += sum(int((a == b).sum()) for a, b in zip(trained, encoded))
                total += sum(a.numel() for a in trained)
        trainer.log_mgr.close()
    write(f"{args.config}, {args.steps} steps: training assignment and encode agree on {100 * equal / total:.1f}% "
          f"of {total} indices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
