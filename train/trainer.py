"""TrainVqVae: the training loop, readable top to bottom.

One step: uint8 clips -> [-1, 1] frames -> model -> LossCalculator -> backward/step of the
autoencoder, then ``discriminator_step`` (a no-op without GAN). The loss path (plain,
GAN, Taming) was chosen once by ``build_loss_calculator``; the step does not branch on it.
"""
import logging
import math
import os
import sys
import time
from typing import Any, Optional

import attrs
import torch
from einops import rearrange
from tqdm import tqdm

from codec.prior import fit_code_prior
from core.atomic_files import atomic_write_json, remove_orphaned_temp_files
from core.checkpoint import (
    RunCheckpoints,
    capture_rng_state,
    checkpoint_name,
    find_resumable,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from core.config import Config
from core.runtime import autocast, format_duration
from metric_utils.metric_utils import psnr_from_mse
from models.builders import load_config
from models.loaders import check_compatible
from models.taming.checkpoint_loading import load_upstream_weights
from train.losses import build_loss_calculator
from train.signals import StopRequest
from train.validation import evaluate

# Validation metrics kept as best checkpoints: which direction is better, and the file name.
BEST_METRICS = {
    "val/stats/psnr": ("max", "best_psnr.pth.tar"),
    "val/stats/ssim": ("max", "best_ssim.pth.tar"),
    "val/stats/lpips": ("min", "best_lpips.pth.tar"),
    "val/stats/fid": ("min", "best_fid.pth.tar"),
    "val/loss/total": ("min", "best_loss.pth.tar"),
}


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row."""


@attrs.define(eq=False, slots=False)
class TrainVqVae:
    model: Any  # a BaseVqVaeAdapter
    training_loader: Any
    validation_loader: Any
    log_mgr: Any
    normalize: Any
    unnormalize: Any
    logger: logging.Logger
    default_gpu: Any = "cpu"
    config_path: str = "param.json"
    config: Optional[Config] = None
    metrics: Any = None  # metric_utils.Metrics, or None to skip SSIM/LPIPS/FID
    forward_model: Any = None  # the model as called in training (DDP / compiled); default: model
    is_main: bool = True  # rank 0 logs, validates and saves
    world_size: int = 1

    def __attrs_post_init__(self):
        self.config = self.config or load_config(self.config_path)
        args = self.config.train_args
        self.args = args
        self.device = torch.device(self.default_gpu)
        self.forward_model = self.forward_model or self.model
        self.num_steps = args.num_steps
        self.loss_calculator = build_loss_calculator(self.model, self.config, self.device)
        self.optimizer = self.loss_calculator.autoencoder_optimizer(self.model, args.lr)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=args.lr_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=args.precision == "fp16")
        self.run_dir = self.config.run_dir
        self.checkpoint_dir = os.path.join(self.run_dir, "checkpoints")
        self.checkpoints = RunCheckpoints(self.checkpoint_dir, args.keep_last)  # prunes this run's files only
        self.start_step = 0
        self.best = {}
        self.nonfinite_skipped = 0
        self.last_checkpoint = None
        self.code_prior = None  # code frequencies for the codec, measured at the end of training
        self.stop = StopRequest(self.logger)
        if self.is_main and remove_orphaned_temp_files(self.checkpoint_dir):
            self.logger.warning("removed the partial file of a killed save in %s", self.checkpoint_dir)
        self._resume()

    # -- resume -----------------------------------------------------------------
    def _resume(self) -> None:
        path, ckpt = self.args.checkpoint_path, None
        found = find_resumable(self.checkpoint_dir, self.device) if self.args.resume == "auto" else None
        if found:  # the run's own newest checkpoint comes before checkpoint_path (where it started)
            path, ckpt = found
        elif path:
            ckpt = verify_checkpoint(load_checkpoint(path, self.device, self.args.allow_unsafe_load), path)
        elif self.args.resume == "auto":
            self.logger.info("resume: auto found no checkpoint in %s; starting fresh", self.checkpoint_dir)
        if ckpt is None:
            self.run_id = self.log_mgr.start_run(None, 0)  # a new run, a new wandb id
            self._init_from()
            return
        check_compatible(ckpt, self.model, self.config.model_type, path)
        self.checkpoints.adopt(path, ckpt)
        self.model.load_state_dict(ckpt["state_dict"])
        if ckpt.get("optimizer"):
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.loss_calculator.load_state_dict(ckpt)
        self.start_step = int(ckpt["steps"])
        self.best = dict(ckpt.get("best", {}))
        if "rng" in ckpt:
            restore_rng_state(ckpt["rng"])
        samples = ckpt.get("samples_seen", self.start_step * self.config.data_args.batch_size)
        self.training_loader.seek(int(samples))
        self.last_checkpoint = path
        self.run_id = self.log_mgr.start_run(ckpt.get("run_id"), self.start_step)  # same wandb run, steps once
        self.logger.info("resumed from %s at step %d", path, self.start_step)

    def _init_from(self) -> None:
        """Start from released weights (``train_args.init_from``), e.g. an official Taming checkpoint."""
        if not self.args.init_from:
            return
        loaded = load_upstream_weights(self.model, self.args.init_from, loss_module=self.loss_calculator.loss_module,
                                       allow_unsafe=self.args.allow_unsafe_load, logger=self.logger)
        self.logger.info("initialised from %s: %d keys to the model, %d to the loss module",
                         self.args.init_from, loaded.model_keys, loaded.loss_keys)

    # -- one step ---------------------------------------------------------------
    def _prepare(self, images: torch.Tensor) -> tuple:
        """uint8 ``(b, d, h, w, c)`` -> normalised ``((b d), c, h, w)`` on the device."""
        images = images.to(self.device, non_blocking=True)
        b, d = images.shape[:2]
        images = rearrange(images, "b d h w c -> (b d) c h w")
        images = self.normalize(images.float() / 255.0)
        # the rearrange is a view with NHWC strides: give the model the layout it asked for
        layout = torch.channels_last if self.args.channels_last else torch.contiguous_format
        return images.contiguous(memory_format=layout), b, d

    def _snapshot_buffers(self) -> dict:
        # EMA codebooks update inside forward; a non-finite step must not keep those updates.
        return {name: buf.detach().clone() for name, buf in self.model.named_buffers() if buf.is_floating_point()}

    def _restore_buffers(self, snapshot: dict) -> None:
        buffers = dict(self.model.named_buffers())
        for name, value in snapshot.items():
            buffers[name].copy_(value)

    def train_step(self, images: torch.Tensor, step: int) -> Optional[dict]:
        """One optimisation step; returns the losses, or None when skipped as non-finite."""
        snapshot = self._snapshot_buffers()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.args.precision, self.device):
            out = self.forward_model(images)
            losses = self.loss_calculator.compute_total_loss(images, out.recon, out.vq_loss, step, optimizer_idx=0)
        total = losses["total_loss"]
        if not self._on_all_ranks(torch.isfinite(total)):  # every DDP rank must skip together
            self._restore_buffers(snapshot)
            return None
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.args.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for group in self.optimizer.param_groups for p in group["params"]], self.args.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm(grads)
        if not torch.isfinite(grad_norm) and not self.scaler.is_enabled():  # equal on all ranks after all-reduce
            self.optimizer.zero_grad(set_to_none=True)
            self._restore_buffers(snapshot)
            return None
        self.scaler.step(self.optimizer)  # skips the step itself on fp16 overflow
        self.scaler.update()
        disc_logs = self.loss_calculator.discriminator_step(
            images, out.recon.detach(), out.vq_loss.detach(), step,
            scaler=self.scaler if self.scaler.is_enabled() else None,
        )
        logs = {key: _scalar(value) for key, value in losses.items() if key != "log_dict"}
        logs.update({f"taming/{k}": _scalar(v) for k, v in losses.get("log_dict", {}).items()})
        logs.update({f"disc/{k}": _scalar(v) for k, v in disc_logs.items()})
        logs["perplexity"] = _scalar(out.perplexity)
        logs["grad_norm"] = _scalar(grad_norm)
        return logs

    # -- the loop ---------------------------------------------------------------
    def train(self) -> dict:
        """Train to ``num_steps``; returns the run summary (also written as run_summary.json)."""
        self.model.train()
        step = self.start_step
        args = self.args
        if step >= self.num_steps:
            self.logger.info("already at step %d of %d: nothing to train", step, self.num_steps)
        nonfinite_in_row = 0
        status = "finished"
        self.stop.install()
        bar = self._progress_bar()
        data_iter = iter(self.training_loader)
        t_last, step_last = time.time(), step
        t_start = time.time()
        try:
            while step < self.num_steps:
                if step % args.validation_interval == 0 and self.validation_loader is not None:
                    self._validate(step)
                images, _paths = next(data_iter)
                images, b, d = self._prepare(images)
                logs = self.train_step(images, step)
                if logs is None:
                    nonfinite_in_row += 1
                    self.nonfinite_skipped += 1
                    self.logger.warning("step %d: non-finite loss or gradient, step skipped (%d in a row, %d in all)",
                                        step, nonfinite_in_row, self.nonfinite_skipped)
                    if nonfinite_in_row >= args.max_nonfinite_steps:
                        raise TrainingDiverged(
                            f"{nonfinite_in_row} non-finite steps in a row at step {step}; stopping. "
                            f"Last good checkpoint: {self.last_checkpoint or 'none saved yet'}")
                    continue
                nonfinite_in_row = 0
                step += 1
                if step % args.lr_decay_interval == 0:
                    self.scheduler.step()
                logs["psnr"] = psnr_from_mse(logs["recon_error"] / 4)  # recon_error is always the MSE
                self.logger.debug("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in logs.items()))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs['total_loss']:.4f}", psnr=f"{logs['psnr']:.2f}")
                if step % args.log_interval == 0 or step == self.num_steps:
                    now = time.time()
                    rate = (step - step_last) / max(now - t_last, 1e-9)
                    t_last, step_last = now, step
                    self.logger.info(
                        "step %d/%d | loss %.4f | psnr %.2f dB | perplexity %.1f | lr %.2e | %.2f steps/s | ETA %s",
                        step, self.num_steps, logs["total_loss"], logs["psnr"], logs["perplexity"],
                        self.optimizer.param_groups[0]["lr"], rate, format_duration((self.num_steps - step) / rate))
                if self.is_main and step % args.wandb_log_interval == 0:
                    self.log_mgr.log_metrics(step, self._train_metrics(logs))
                if self.is_main and step % args.wandb_image_interval == 0:
                    with torch.no_grad():
                        self.model.eval()
                        recon = self.model(images).recon
                        self.model.train()
                    self.log_mgr.log_images(step, images, recon, b, d, self.unnormalize)
                if step % args.save_interval == 0:
                    self.save(step)
                if self._on_any_rank(bool(self.stop)):  # ranks stop at the same step
                    status = "interrupted"
                    break
            if status == "finished" and self.validation_loader is not None and self.start_step < self.num_steps:
                self._validate(step)
        except TrainingDiverged:
            self._write_summary("failed", step)
            raise
        finally:
            if sys.exc_info()[1] is not None:  # an error ends the run here; else the handler stays to the save
                self.stop.uninstall()
            if bar is not None:
                bar.close()
        try:  # a signal during the end stage (prior, final save) still ends with the final checkpoint
            if status == "finished" and self.args.fit_prior and self.start_step < step:
                self._fit_prior()
            if self.start_step < step or status == "interrupted":
                self.save(step, final=True)
        finally:
            self.stop.uninstall()
        elapsed = time.time() - t_start
        self.logger.info("%s at step %d after %s; last checkpoint: %s", status, step, format_duration(elapsed),
                         self.last_checkpoint)
        return self._write_summary(status, step)

    def _on_all_ranks(self, flag) -> bool:
        """``flag`` (bool or 0-dim tensor) on every DDP rank; the flag itself in one process."""
        if self.world_size == 1:
            return bool(flag)
        value = torch.as_tensor(flag, dtype=torch.float32, device=self.device).reshape(1)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
        return bool(value.item())

    def _on_any_rank(self, flag: bool) -> bool:
        return not self._on_all_ranks(not flag)

    def _train_metrics(self, logs: dict) -> dict:
        names = {"total_loss": "train/loss/total", "recon_error": "train/loss/recon", "vq_loss": "train/loss/vq",
                 "pixel_loss": "train/loss/pixel", "perceptual_loss": "train/loss/perceptual",
                 "g_loss": "train/loss/g", "gan_loss": "train/loss/gan", "disc_factor": "train/gan/disc_factor",
                 "lambda_gan": "train/gan/lambda", "psnr": "train/stats/psnr", "perplexity": "train/stats/perplexity",
                 "grad_norm": "train/stats/grad_norm"}
        metrics = {names.get(k, f"train/{k}"): v for k, v in logs.items()}
        metrics["train/lr"] = self.optimizer.param_groups[0]["lr"]
        metrics["train/nonfinite_skipped"] = self.nonfinite_skipped
        return metrics

    def _progress_bar(self):
        wanted = self.args.progress_bar
        if wanted == "auto":
            wanted = sys.stderr.isatty()
        if not (wanted and self.is_main):
            return None
        return tqdm(total=self.num_steps, initial=self.start_step, desc="train", unit="step", dynamic_ncols=True)

    # -- validation ---------------------------------------------------------------
    def _validate(self, step: int) -> None:
        if not self.is_main:
            return
        metrics = self.evaluate(self.args.val_max_images)
        self.model.train()
        self.log_mgr.log_metrics(step, metrics)
        shown = " | ".join(f"{k.removeprefix('val/')} {v:.4f}" for k, v in metrics.items())
        self.logger.info("validation at step %d | %s", step, shown)
        self._check_and_save_best_models(step, metrics)

    def evaluate(self, max_images: int = 10000) -> dict:
        """One pass over the validation clips; the design document's ``val/...`` keys."""
        return evaluate(self.model, self.validation_loader, self._prepare, self.metrics, self.args, self.device,
                        max_images, use_images=self.config.use_images)

    def _check_and_save_best_models(self, step: int, metrics: dict) -> list:
        """Save ``best_<metric>.pth.tar`` for every metric that improved; returns their names."""
        improved = []
        for key, (direction, _name) in BEST_METRICS.items():
            value = metrics.get(key)
            if value is None or not math.isfinite(value):
                continue
            best = self.best.get(key)
            if best is None or (value > best if direction == "max" else value < best):
                self.best[key] = value
                improved.append(key)
        if improved:
            payload = self._checkpoint_payload(step)
            for key in improved:
                name = BEST_METRICS[key][1]
                save_checkpoint(payload, os.path.join(self.checkpoint_dir, name))
                self.logger.info("new best %s = %.4f at step %d -> %s", key, self.best[key], step, name)
        return improved

    # -- checkpoints ----------------------------------------------------------------
    def _checkpoint_payload(self, step: int) -> dict:
        payload = {
            "steps": step,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "config": self.config.to_dict(),
            "model_type": self.config.model_type,
            "rng": capture_rng_state(),
            "samples_seen": self.training_loader.samples_seen,
            "best": dict(self.best),
            "run_id": self.run_id,
        }
        payload.update(self.loss_calculator.state_dict())
        if self.code_prior is not None:
            payload["code_prior"] = self.code_prior
        return payload

    def save(self, step: int, final: bool = False) -> Optional[str]:
        """Write ``checkpoint_step{step}.pth.tar`` (rank 0 only) and keep the last ``keep_last``."""
        if not self.is_main:
            return None
        path = os.path.join(self.checkpoint_dir, checkpoint_name(step))
        if final and path == self.last_checkpoint and self.code_prior is None:
            return path
        self.checkpoints.save(self._checkpoint_payload(step), step)
        self.last_checkpoint = path
        size_mb = os.path.getsize(path) / 2**20
        self.logger.info("checkpoint step %d -> %s (%.1f MB)", step, path, size_mb)
        return path

    def _fit_prior(self) -> None:
        """Code frequencies over training clips, stored for the codec's entropy coder."""
        if not self.is_main:
            return
        position = self.training_loader.samples_seen
        self.code_prior = fit_code_prior(self.model, self.training_loader, self.device, self.normalize,
                                         max_batches=32)
        self.training_loader.seek(position)  # the prior pass is not part of the training stream
        self.logger.info("code prior measured over %s indices", self.code_prior.get("num_indices"))

    def _write_summary(self, status: str, step: int) -> dict:
        summary = {"status": status, "steps": step, "last_checkpoint": self.last_checkpoint,
                   "best": dict(self.best), "nonfinite_skipped": self.nonfinite_skipped}
        if self.is_main:
            atomic_write_json(os.path.join(self.run_dir, "run_summary.json"), summary)
        return summary


def _scalar(value) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)
