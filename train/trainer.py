"""TrainVqVae: the training loop, readable top to bottom.

One step: uint8 clips --model.clips_to_input--> [-1, 1] frames --model--> VQOutput
--LossCalculator--> backward and step of the autoencoder's optimizer, then (with a GAN, when
due) the discriminator's loss, backward and step of its optimizer. The trainer owns both
optimizers (``train/optim.py``); what lands on disk is ``RunFiles``' business.
"""
import logging
import sys
import time
from typing import Any, Optional

import attrs
import torch
from tqdm import tqdm

from codec.prior import fit_code_prior
from core.checkpoint import capture_rng_state, restore_rng_state
from core.config import Config
from core.distributed import all_reduce_mean_
from core.pixels import to_model_range, to_pixel_range
from core.runtime import autocast, format_duration
from metric_utils.metric_utils import psnr_from_mse
from models.loaders import check_compatible
from models.taming.checkpoint_loading import load_upstream_weights
from train.losses import LossCalculator
from train.optim import build_optimizers
from train.run_files import RunFiles
from train.signals import StopRequest
from train.validation import evaluate

LOG_NAMES = {"total_loss": "train/loss/total", "recon_error": "train/loss/recon", "vq_loss": "train/loss/vq",
             "pixel_loss": "train/loss/pixel", "perceptual_loss": "train/loss/perceptual", "g_loss": "train/loss/g",
             "d_loss": "train/loss/gan", "disc_factor": "train/gan/disc_factor", "lambda_gan": "train/gan/lambda",
             "psnr": "train/stats/psnr", "perplexity": "train/stats/perplexity", "grad_norm": "train/stats/grad_norm"}


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row."""


@attrs.define(eq=False, slots=False)
class TrainVqVae:
    config: Config
    model: Any  # a BaseVqVaeAdapter
    training_loader: Any
    validation_loader: Any
    log_mgr: Any
    device: Any = "cpu"
    metrics: Any = None  # metric_utils.Metrics, or None to skip SSIM/LPIPS/FID
    perceptual: Any = None  # the frozen LPIPS network, shared by the loss and the metrics
    forward_model: Any = None  # the model as called in training (DDP / compiled); default: model
    is_main: bool = True  # rank 0 logs, validates and saves
    world_size: int = 1

    def __attrs_post_init__(self):
        self.args = args = self.config.train_args
        self.device = torch.device(self.device)
        self.logger: logging.Logger = self.log_mgr.logger
        self.forward_model = self.forward_model or self.model
        self.num_steps = args.num_steps
        self.loss_calculator = LossCalculator(args, self.model.output_channels, self.config.data_args.frame_size,
                                              self.perceptual).to(self.device)
        self.optimizer, self.optimizer_disc, self.scheduler = build_optimizers(
            args, self.model, self.loss_calculator.discriminator)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=args.precision == "fp16")
        self.files = RunFiles(self.config.run_dir, args, self.logger, self.is_main)
        self.start_step = 0
        self.nonfinite_skipped = 0
        self.code_prior = None  # code frequencies for the codec, measured at the end of training
        self.stop = StopRequest(self.logger)
        self._resume()

    # -- state ------------------------------------------------------------------------
    def training_state(self, step: int) -> dict:
        """Everything a resumed run needs to continue exactly: the checkpoint payload."""
        state = {
            "steps": step,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "config": self.config.to_dict(),
            "model_type": self.config.model_type,
            "rng": capture_rng_state(),
            "samples_seen": self.training_loader.samples_seen,
            "best": dict(self.files.best),
        }
        if self.optimizer_disc is not None:
            state["disc_state_dict"] = self.loss_calculator.discriminator.state_dict()
            state["optimizer_disc"] = self.optimizer_disc.state_dict()
        if self.code_prior is not None:
            state["code_prior"] = self.code_prior
        return state

    def _resume(self) -> None:
        found = self.files.checkpoint_to_resume(self.device)
        if found is None:
            self._init_from()
            return
        path, ckpt = found
        check_compatible(ckpt, self.model, self.config.model_type, path)
        self.model.load_state_dict(ckpt["state_dict"])
        for name in ("optimizer", "scheduler", "scaler"):
            if ckpt.get(name):
                getattr(self, name).load_state_dict(ckpt[name])
        self._restore_discriminator(ckpt)
        self.start_step = int(ckpt["steps"])
        self.files.best = dict(ckpt.get("best", {}))
        if "rng" in ckpt:
            restore_rng_state(ckpt["rng"])
        self.training_loader.seek(int(ckpt.get("samples_seen", self.start_step * self.config.data_args.batch_size)))
        self.files.last_checkpoint = path
        self.logger.info("resumed from %s at step %d", path, self.start_step)

    def _restore_discriminator(self, ckpt: dict) -> None:
        if self.optimizer_disc is None:
            return
        state = ckpt.get("disc_state_dict")
        if state is None:
            self.logger.warning("checkpoint has no discriminator: the PatchGAN starts from scratch")
            return
        # checkpoints of the former Taming loss module keyed it under "discriminator."
        state = {k.removeprefix("discriminator."): v for k, v in state.items()}
        self.loss_calculator.discriminator.load_state_dict(state)
        if ckpt.get("optimizer_disc") is not None:
            self.optimizer_disc.load_state_dict(ckpt["optimizer_disc"])

    def _init_from(self) -> None:
        """Start from released weights (``train_args.init_from``), e.g. an official Taming checkpoint."""
        if not self.args.init_from:
            return
        loaded = load_upstream_weights(self.model, self.args.init_from, loss_module=self.loss_calculator,
                                       allow_unsafe=self.args.allow_unsafe_load, logger=self.logger)
        self.logger.info("initialised from %s: %d keys to the model, %d to the loss module",
                         self.args.init_from, loaded.model_keys, loaded.loss_keys)

    # -- one step ---------------------------------------------------------------------
    def _prepare(self, clips: torch.Tensor) -> tuple:
        """uint8 clips ``(b, d, h, w, c)`` -> the model's input on the device, and ``(b, d)``."""
        b, d = clips.shape[:2]
        frames = self.model.clips_to_input(clips.to(self.device, non_blocking=True))
        layout = torch.channels_last if self.args.channels_last else torch.contiguous_format
        return frames.contiguous(memory_format=layout), b, d

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
            losses = self.loss_calculator.compute_total_loss(images, out.recon, out.vq_loss, step,
                                                             self.model.last_layer)
        total = losses["total_loss"]
        if not self._on_all_ranks(torch.isfinite(total)):  # every DDP rank must skip together
            self._restore_buffers(snapshot)
            return None
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.args.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.args.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if not torch.isfinite(grad_norm) and not self.scaler.is_enabled():  # equal on all ranks after all-reduce
            self.optimizer.zero_grad(set_to_none=True)
            self._restore_buffers(snapshot)
            return None
        self.scaler.step(self.optimizer)  # skips the step itself on fp16 overflow
        logs = {**losses, "perplexity": out.perplexity.detach(), "grad_norm": grad_norm}
        if self.loss_calculator.discriminator_due(step):
            with autocast(self.args.precision, self.device):
                d_loss, d_logs = self.loss_calculator.discriminator_loss(images, out.recon, step)
            self._step_discriminator(d_loss)
            logs.update(d_logs)
        self.scaler.update()  # once per step, after both optimizers stepped
        return {key: _scalar(value) for key, value in logs.items()}

    def _step_discriminator(self, d_loss: torch.Tensor) -> None:
        """Backward and step of the discriminator, its gradients averaged over DDP ranks (it is not
        wrapped in DDP), so every rank keeps the same discriminator."""
        self.optimizer_disc.zero_grad(set_to_none=True)
        self.scaler.scale(d_loss).backward()
        for p in self.loss_calculator.discriminator.parameters():
            if p.grad is not None:
                all_reduce_mean_(p.grad)
        self.scaler.step(self.optimizer_disc)

    # -- the loop ---------------------------------------------------------------------
    def train(self) -> dict:
        """Train to ``num_steps``; returns the run summary (also written as run_summary.json)."""
        self.model.train()
        self.loss_calculator.train()
        args, step = self.args, self.start_step
        if step >= self.num_steps:
            self.logger.info("already at step %d of %d: nothing to train", step, self.num_steps)
        nonfinite_in_row, status = 0, "finished"
        self.stop.install()
        bar = self._progress_bar()
        data_iter = iter(self.training_loader)
        t_start = t_last = time.time()
        step_last = step
        try:
            while step < self.num_steps:
                if step % args.validation_interval == 0 and self.validation_loader is not None:
                    self._validate(step)
                images, b, d = self._prepare(next(data_iter)[0])
                logs = self.train_step(images, step)
                if logs is None:
                    nonfinite_in_row += 1
                    self.nonfinite_skipped += 1
                    self.logger.warning("step %d: non-finite loss or gradient, step skipped (%d in a row, %d in all)",
                                        step, nonfinite_in_row, self.nonfinite_skipped)
                    if nonfinite_in_row >= args.max_nonfinite_steps:
                        raise TrainingDiverged(
                            f"{nonfinite_in_row} non-finite steps in a row at step {step}; stopping. "
                            f"Last good checkpoint: {self.files.last_checkpoint or 'none saved yet'}")
                    continue
                nonfinite_in_row = 0
                step += 1
                if step % args.lr_decay_interval == 0:
                    self.scheduler.step()
                logs["psnr"] = psnr_from_mse(logs["recon_error"] / 4)  # MSE of [-1, 1] frames
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
                    self._log_reconstructions(step, images, d)
                if step % args.save_interval == 0:
                    self.save(step)
                if self._on_any_rank(bool(self.stop)):  # ranks stop at the same step
                    status = "interrupted"
                    break
            if status == "finished" and self.validation_loader is not None and self.start_step < self.num_steps:
                self._validate(step)
        except TrainingDiverged:
            self.files.write_summary("failed", step, nonfinite_skipped=self.nonfinite_skipped)
            raise
        finally:
            self.stop.uninstall()
            if bar is not None:
                bar.close()
        if status == "finished" and args.fit_prior and self.start_step < step:
            self._fit_prior()
        if (self.start_step < step or status == "interrupted") and not self._saved_at(step):
            self.save(step)
        self.logger.info("%s at step %d after %s; last checkpoint: %s", status, step,
                         format_duration(time.time() - t_start), self.files.last_checkpoint)
        return self.files.write_summary(status, step, nonfinite_skipped=self.nonfinite_skipped)

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
        metrics = {LOG_NAMES.get(k, f"train/{k}"): v for k, v in logs.items()}
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

    def _log_reconstructions(self, step: int, images: torch.Tensor, d: int) -> None:
        with torch.no_grad():
            self.model.eval()
            recon = self.model(images).recon
            self.model.train()
        self.log_mgr.log_images(step, images, recon, images.shape[0] // d, d, to_pixel_range)

    # -- validation and checkpoints -------------------------------------------------------
    def _validate(self, step: int) -> None:
        if not self.is_main:
            return
        kept = []  # the first validation clips and their reconstructions, for the picture
        metrics = self.evaluate(self.args.val_max_images, keep=kept)
        self.model.train()
        self.log_mgr.log_metrics(step, metrics)
        if kept:
            frames, recon, d = torch.cat([k[0] for k in kept]), torch.cat([k[1] for k in kept]), kept[0][2]
            self.log_mgr.log_images(step, frames, recon, len(frames) // d, d, to_pixel_range, tag="val")
        shown = " | ".join(f"{k.removeprefix('val/')} {v:.4f}" for k, v in metrics.items())
        self.logger.info("validation at step %d | %s", step, shown)
        self.files.save_best(metrics, step, lambda: self.training_state(step))

    def evaluate(self, max_images: int = 10000, keep: Optional[list] = None) -> dict:
        """One pass over the validation clips; the design document's ``val/...`` keys (``keep``: see
        ``train.validation.evaluate``)."""
        return evaluate(self.model, self.validation_loader, self._prepare, self.metrics, self.args, self.device,
                        max_images, use_images=self.config.use_images, keep=keep)

    def save(self, step: int) -> Optional[str]:
        """Write the step checkpoint (rank 0 only)."""
        return self.files.save(self.training_state(step), step) if self.is_main else None

    def _saved_at(self, step: int) -> bool:
        """Is the newest checkpoint this step's, with nothing measured since (the code prior)?"""
        last = self.files.last_checkpoint
        return last is not None and last.endswith(f"{step:08d}.pth.tar") and self.code_prior is None

    def _fit_prior(self) -> None:
        """Code frequencies over training clips, stored for the codec's entropy coder."""
        if not self.is_main:
            return
        position = self.training_loader.samples_seen
        self.code_prior = fit_code_prior(self.model, self.training_loader, self.device, to_model_range,
                                         max_batches=32)
        self.training_loader.seek(position)  # the prior pass is not part of the training stream
        self.logger.info("code prior measured over %s indices", self.code_prior.get("num_indices"))


def _scalar(value) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)
