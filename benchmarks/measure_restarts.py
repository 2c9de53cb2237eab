"""Dead-code restarts per step and validation codebook usage of one ``param.json`` run.

A restart replaces a code by an encoder output: the code jumps. A row of the codebook
that moves by more than half the median code norm in one step counts as restarted; this
needs no hook into the quantizer, so the figure means the same for every version.
Prints restarts per step (mean over the last third of the first ``--steady-steps`` steps,
and the maximum there) as a share of the codebook, then the validation codebook usage
at the end of the run (``make train`` runs ``param.json`` to its 300 steps).

    python benchmarks/measure_restarts.py [--config param.json] [--steady-steps 90]
"""
import argparse
import logging
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import write  # noqa: E402
from core.config import deep_merge  # noqa: E402
from models.builders import config_from_dict, load_config  # noqa: E402
from train.train_custom_videos import build_trainer  # noqa: E402


def codebooks(model, vocab_sizes: list) -> dict:
    """The model's code tables: 2-D tensors with one row per code of some level."""
    return {name: t for name, t in model.state_dict().items()
            if t.ndim == 2 and t.shape[0] in vocab_sizes and t.is_floating_point() and "proj" not in name}


def jumped_rows(before: torch.Tensor, after: torch.Tensor) -> int:
    moved = (after - before).norm(dim=1)
    return int((moved > 0.5 * before.norm(dim=1).median()).sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="param.json")
    parser.add_argument("--steady-steps", type=int, default=90)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as folder:
        base = load_config(args.config).to_dict()
        data = deep_merge(base, {"train_args": {"folder_name": folder, "progress_bar": False, "fit_prior": False,
                                                "compute_fid": False, "compute_lpips": False}})
        config = config_from_dict(data, source=args.config)
        trainer = build_trainer(config, device_override=args.device)
        model, step_once = trainer.model, trainer.train_step
        vocab_sizes = list(model.vocab_sizes)
        per_step = []

        def counting_step(images, step):
            before = {k: v.detach().clone() for k, v in codebooks(model, vocab_sizes).items()}
            logs = step_once(images, step)
            after = codebooks(model, vocab_sizes)
            per_step.append(sum(jumped_rows(before[k], after[k]) for k in before))
            return logs

        trainer.train_step = counting_step
        trainer.train()
        final_usage = float(trainer.evaluate(trainer.args.val_max_images)["val/stats/codebook_usage"])
        trainer.log_mgr.close()
    codes = sum(vocab_sizes)
    steady = per_step[args.steady_steps * 2 // 3:args.steady_steps]
    write(f"config {args.config}: {len(per_step)} steps, {codes} codes")
    write(f"restarts per step, steps {args.steady_steps * 2 // 3}-{args.steady_steps}: "
          f"mean {sum(steady) / max(len(steady), 1):.2f} ({100 * sum(steady) / max(len(steady), 1) / codes:.2f}% "
          f"of the codebook), max {max(steady, default=0)}")
    write(f"validation codebook usage at step {len(per_step)}: {final_usage:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
