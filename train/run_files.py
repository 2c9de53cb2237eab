"""What a run leaves on disk besides its logs: step checkpoints, best checkpoints, the summary.

The trainer hands over payloads (``TrainVqVae.training_state``); this class decides names,
keeps the last ``keep_last`` step checkpoints and one ``best_<metric>`` file per metric, and
finds the checkpoint to resume from. Only rank 0 writes.
"""
import logging
import math
import os
from typing import Callable, Optional

from core.atomic_files import atomic_write_json, remove_orphaned_temp_files
from core.checkpoint import RunCheckpoints, find_resumable, load_checkpoint, save_checkpoint, verify_checkpoint
from core.config import TrainArgs

# Validation metrics kept as best checkpoints: which direction is better, and the file name.
BEST_METRICS = {
    "val/stats/psnr": ("max", "best_psnr.pth.tar"),
    "val/stats/ssim": ("max", "best_ssim.pth.tar"),
    "val/stats/lpips": ("min", "best_lpips.pth.tar"),
    "val/stats/fid": ("min", "best_fid.pth.tar"),
    "val/loss/total": ("min", "best_loss.pth.tar"),
}
SUMMARY_FILE = "run_summary.json"
# What only resuming needs. A best_<metric> file is for inference and init_from: weights, config,
# code prior; the optimizer moments (twice the weights' size) and the discriminator stay in step checkpoints.
RESUME_ONLY_KEYS = ("optimizer", "optimizer_disc", "scheduler", "scaler", "disc_state_dict", "rng", "samples_seen")


class RunFiles:
    """The checkpoints folder and summary of one run (``run_dir``)."""

    def __init__(self, run_dir: str, args: TrainArgs, logger: logging.Logger, is_main: bool = True):
        self.run_dir = run_dir
        self.checkpoint_dir = os.path.join(run_dir, "checkpoints")
        self.args = args
        self.logger = logger
        self.is_main = is_main
        self.best: dict = {}
        self.last_checkpoint: Optional[str] = None
        self.checkpoints = RunCheckpoints(self.checkpoint_dir, args.keep_last)  # prunes this run's files only
        if is_main and remove_orphaned_temp_files(self.checkpoint_dir):
            logger.warning("removed the partial file of a killed save in %s", self.checkpoint_dir)

    def checkpoint_to_resume(self, device) -> Optional[tuple]:
        """``(path, checkpoint)`` to resume from, else None.

        With ``resume: auto`` the run folder's newest good checkpoint comes first (a retried or
        restarted run continues where it stopped), then ``checkpoint_path`` (where it started).
        """
        found = find_resumable(self.checkpoint_dir, device) if self.args.resume == "auto" else None
        if found:
            return found
        path = self.args.checkpoint_path
        if path:
            return path, verify_checkpoint(load_checkpoint(path, device, self.args.allow_unsafe_load), path)
        if self.args.resume == "auto":
            self.logger.info("resume: auto found no checkpoint in %s; starting fresh", self.checkpoint_dir)
        return None

    def adopt(self, path: str, ckpt: dict) -> None:
        """Continue the run ``ckpt`` (read from ``path``) belongs to: its step files are ours to prune."""
        self.checkpoints.adopt(path, ckpt)
        self.last_checkpoint = path

    def save(self, payload: dict, step: int) -> Optional[str]:
        """Write ``checkpoint_step{step}.pth.tar`` and keep the last ``keep_last``."""
        if not self.is_main:
            return None
        path = self.checkpoints.save(payload, step)
        self.last_checkpoint = path
        self.logger.info("checkpoint step %d -> %s (%.1f MB)", step, path, os.path.getsize(path) / 2**20)
        return path

    def save_best(self, metrics: dict, step: int, payload: Callable[[], dict]) -> list:
        """Save ``best_<metric>.pth.tar`` (weights and config, no optimizer state) for every metric
        that improved; returns their keys."""
        improved = []
        for key, (direction, _name) in BEST_METRICS.items():
            value = metrics.get(key)
            if value is None or not math.isfinite(value):
                continue
            best = self.best.get(key)
            if best is None or (value > best if direction == "max" else value < best):
                self.best[key] = value
                improved.append(key)
        if improved and self.is_main:  # step 0 too: if it is never beaten, its file exists
            state = {k: v for k, v in payload().items() if k not in RESUME_ONLY_KEYS}
            for key in improved:
                name = BEST_METRICS[key][1]
                save_checkpoint(state, os.path.join(self.checkpoint_dir, name))
                self.logger.info("new best %s = %.4f at step %d -> %s", key, self.best[key], step, name)
        return improved

    def write_summary(self, status: str, step: int, **extra) -> dict:
        summary = {"status": status, "steps": step, "last_checkpoint": self.last_checkpoint,
                   "best": dict(self.best), **extra}
        if self.is_main:
            atomic_write_json(os.path.join(self.run_dir, SUMMARY_FILE), summary)
        return summary
