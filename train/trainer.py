"""TrainVqVae: the training loop, readable top to bottom.

One step: uint8 clips --model.clips_to_input--> [-1, 1] frames --model--> VQOutput
--LossCalculator--> backward (over ``grad_accum_steps`` batches) and step of the autoencoder's
optimizer, then (with a GAN, when due) the discriminator's loss, backward and step of its
optimizer. The trainer owns both optimizers (``train/optim.py``); what lands on disk is
``RunFiles``' business.

A step reads one value from the device: whether it was finite (and, under DDP, whether any
rank was asked to stop, in the same all-reduce). Losses stay on the device and are read once
per logging interval (``RunningLogs``).
"""
import contextlib
import logging
import sys
import time
from typing import Any, Optional, Union

import attrs
import torch
from tqdm import tqdm

from codec.prior import fit_prior
from core.checkpoint import capture_rng_state, restore_rng_state
from core.config import Config
from core.distributed import all_reduce_mean_
from core.pixels import to_pixel_range
from core.runtime import autocast, format_duration, resolve_precision
from metric_utils.metric_utils import psnr_from_mse
from models.loaders import check_compatible
from models.taming.checkpoint_loading import load_upstream_weights
from train.losses import LossCalculator
from train.optim import build_optimizers, build_scheduler
from train.run_files import RunFiles
from train.signals import StopRequest
from train.step_logs import RunningLogs
from train.validation import evaluate
from train.weights_ema import WeightsEMA

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
        if self.forward_model is None:
            self.forward_model = self.model
        self.num_steps = args.num_steps
        self.precision = resolve_precision(args.precision, self.device)
        self.loss_calculator = LossCalculator(args, self.model.output_channels, self.config.data_args.frame_size,
                                              self.perceptual).to(self.device)
        self.optimizer, self.optimizer_disc, self.scheduler = build_optimizers(
            args, self.model, self.loss_calculator.discriminator)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.ema = WeightsEMA(self.model, args.ema_decay) if args.ema_decay else None
        self.files = RunFiles(self.config.run_dir, args, self.logger, self.is_main)
        self.running = RunningLogs()
        self.start_step = 0
        self.nonfinite_skipped = 0
        self.stop_agreed = False  # a stop request seen by the ranks' last agreement
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
            "run_id": self.run_id,
        }
        if self.optimizer_disc is not None:
            state["disc_state_dict"] = self.loss_calculator.discriminator.state_dict()
            state["optimizer_disc"] = self.optimizer_disc.state_dict()
        if self.ema is not None:
            state["ema_state_dict"] = self.ema.state_dict()
        if self.code_prior is not None:
            state["code_prior"] = self.code_prior
        return state

    def _resume(self) -> None:
        found = self.files.checkpoint_to_resume(self.device)
        if found is None:
            self.run_id = self.log_mgr.start_run(None, 0)  # a new run, a new wandb id
            self._init_from()
            return
        path, ckpt = found
        check_compatible(ckpt, self.model, self.config.model_type, path)
        self.model.load_state_dict(ckpt["state_dict"])
        for name in ("optimizer", "scaler"):
            if ckpt.get(name):
                getattr(self, name).load_state_dict(ckpt[name])
        self._restore_discriminator(ckpt)
        self.start_step = int(ckpt["steps"])
        self.scheduler = build_scheduler(self.args, self.optimizer, self.start_step)  # a function of the step
        if self.ema is not None:
            self.ema.load_state_dict(ckpt.get("ema_state_dict") or ckpt["state_dict"])
        self.files.best = dict(ckpt.get("best", {}))
        if "rng" in ckpt:
            restore_rng_state(ckpt["rng"])
        self.training_loader.seek(int(ckpt.get("samples_seen", self.start_step * self.config.data_args.batch_size)))
        self.files.adopt(path, ckpt)
        self.run_id = self.log_mgr.start_run(ckpt.get("run_id"), self.start_step)  # same wandb run, steps once
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

    def train_step(self, images: Union[torch.Tensor, list], step: int) -> Optional[dict]:
        """One optimizer step over ``images`` (one batch, or a list of ``grad_accum_steps`` batches).

        Returns the step's logs as device tensors (means over the batches), or None when the
        step was skipped as non-finite (on every rank alike).
        """
        batches = images if isinstance(images, list) else [images]
        snapshot = self._snapshot_buffers()
        self.optimizer.zero_grad(set_to_none=True)
        done = []
        for i, x in enumerate(batches):
            with self._gradient_sync(last=i == len(batches) - 1):
                with autocast(self.precision, self.device):
                    out = self.forward_model(x)
                    losses = self.loss_calculator.compute_total_loss(x, out.recon, out.vq_loss, step,
                                                                     self.model.last_layer)
                self.scaler.scale(losses["total_loss"] / len(batches)).backward()
            losses["total_loss"] = losses["total_loss"].detach()
            done.append((x, out.recon.detach(), {**losses, "perplexity": out.perplexity.detach()}))
        self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.args.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.args.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        logs = {k: sum(d[2][k] for d in done) / len(done) for k in done[0][2]}
        finite = torch.isfinite(logs["total_loss"])
        if not self.scaler.is_enabled():  # with fp16 the scaler skips overflowing steps itself
            finite = finite & torch.isfinite(grad_norm)
        if not self._agree(finite):  # the step's one read from the device
            self.optimizer.zero_grad(set_to_none=True)
            self._restore_buffers(snapshot)
            return None
        self.scaler.step(self.optimizer)
        logs["grad_norm"] = grad_norm
        if self.loss_calculator.discriminator_due(step):
            logs.update(self._step_discriminator(done, step))
        self.scaler.update()  # once per step, after both optimizers stepped
        if self.ema is not None:
            self.ema.update(self.model)
        return logs

    def _gradient_sync(self, last: bool):
        """DDP averages gradients on the last accumulated batch only."""
        return contextlib.nullcontext() if last or self.world_size == 1 else self.forward_model.no_sync()

    def _agree(self, finite: torch.Tensor) -> bool:
        """Read whether the step was finite on every rank; under DDP the same all-reduce tells
        whether any rank was asked to stop (``stop_agreed``)."""
        if self.world_size == 1:
            self.stop_agreed = bool(self.stop)
            return bool(finite)
        flags = torch.stack([finite.float(), torch.tensor(float(not self.stop), device=finite.device)])
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
        finite_everywhere, running_everywhere = flags.tolist()
        self.stop_agreed = not running_everywhere
        return bool(finite_everywhere)

    def _step_discriminator(self, done: list, step: int) -> dict:
        """Backward over the batches and step of the discriminator, its gradients averaged over DDP
        ranks (it is not wrapped in DDP), so every rank keeps the same discriminator."""
        self.optimizer_disc.zero_grad(set_to_none=True)
        logs = []
        for x, recon, _ in done:
            with autocast(self.precision, self.device):
                d_loss, d_logs = self.loss_calculator.discriminator_loss(x, recon, step)
            self.scaler.scale(d_loss / len(done)).backward()
            logs.append(d_logs)
        for p in self.loss_calculator.discriminator.parameters():
            if p.grad is not None:
                all_reduce_mean_(p.grad)
        self.scaler.step(self.optimizer_disc)
        return {k: sum(d[k] for d in logs) / len(logs) for k in logs[0]}

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
                batches = [self._prepare(next(data_iter)[0]) for _ in range(args.grad_accum_steps)]
                logs = self.train_step([frames for frames, _, _ in batches], step)
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
                self.scheduler.step()
                self.running.add(logs)
                if bar is not None:
                    bar.update(1)
                if step % args.log_interval == 0 or step % args.wandb_log_interval == 0 or step == self.num_steps:
                    self._report(step, bar, rate=(step - step_last) / max(time.time() - t_last, 1e-9))
                    t_last, step_last = time.time(), step
                if self.is_main and step % args.wandb_image_interval == 0:
                    frames, _, d = batches[-1]
                    self._log_reconstructions(step, frames, d)
                if step % args.save_interval == 0:
                    self.save(step)
                if self.stop_agreed:  # the ranks agreed on it: they stop at the same step
                    status = "interrupted"
                    break
            if status == "finished" and self.validation_loader is not None and self.start_step < self.num_steps:
                self._validate(step)
        except TrainingDiverged:
            self.files.write_summary("failed", step, nonfinite_skipped=self.nonfinite_skipped)
            raise
        finally:
            if sys.exc_info()[1] is not None:  # an error ends the run here; else the handler stays to the save
                self.stop.uninstall()
            if bar is not None:
                bar.close()
        try:  # a signal during the end stage (prior, final save) still ends with the final checkpoint
            if status == "finished" and args.fit_prior and self.start_step < step:
                self._fit_prior()
            if (self.start_step < step or status == "interrupted") and not self._saved_at(step):
                self.save(step)
        finally:
            self.stop.uninstall()
        self.logger.info("%s at step %d after %s; last checkpoint: %s", status, step,
                         format_duration(time.time() - t_start), self.files.last_checkpoint)
        return self.files.write_summary(status, step, nonfinite_skipped=self.nonfinite_skipped)

    def _report(self, step: int, bar, rate: float) -> None:
        """Read the logs summed since the last report (one transfer) and write them where they go."""
        logs = self.running.means()
        logs["psnr"] = psnr_from_mse(logs["recon_error"] / 4)  # MSE of [-1, 1] frames
        if bar is not None:
            bar.set_postfix(loss=f"{logs['total_loss']:.4f}", psnr=f"{logs['psnr']:.2f}")
        if step % self.args.log_interval == 0 or step == self.num_steps:
            self.logger.info(
                "step %d/%d | loss %.4f | psnr %.2f dB | perplexity %.1f | lr %.2e | %.2f steps/s | ETA %s",
                step, self.num_steps, logs["total_loss"], logs["psnr"], logs["perplexity"],
                self.optimizer.param_groups[0]["lr"], rate, format_duration((self.num_steps - step) / max(rate, 1e-9)))
        if self.is_main and step % self.args.wandb_log_interval == 0:
            self.log_mgr.log_metrics(step, self._train_metrics(logs))

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

    @property
    def inference_model(self):
        """What validation measures and the codec uses: the EMA of the weights if kept, else the weights."""
        return self.ema.model if self.ema is not None else self.model

    def evaluate(self, max_images: int = 10000, keep: Optional[list] = None) -> dict:
        """One pass over the validation clips; the design document's ``val/...`` keys (``keep``: see
        ``train.validation.evaluate``)."""
        return evaluate(self.inference_model, self.validation_loader, self._prepare, self.metrics, self.precision,
                        self.device, max_images, use_images=self.config.use_images,
                        progress=self.args.progress_bar, keep=keep)

    def save(self, step: int) -> Optional[str]:
        """Write the step checkpoint (rank 0 only)."""
        return self.files.save(self.training_state(step), step) if self.is_main else None

    def _saved_at(self, step: int) -> bool:
        """Is the newest checkpoint this step's, with nothing measured since (the code prior)?"""
        last = self.files.last_checkpoint
        return last is not None and last.endswith(f"{step:08d}.pth.tar") and self.code_prior is None

    def _fit_prior(self) -> None:
        """Code statistics over the training videos at their own scale, for the codec's entropy coder."""
        if not self.is_main:
            return
        fit_prior(self.inference_model, self.training_loader.dataset.files, source="training data")
        self.code_prior = self.inference_model.code_prior_state()
