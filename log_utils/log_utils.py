"""LogManager: the run's log file, ``metrics.jsonl``, reconstruction grids, and wandb.

Everything lands on disk in the run folder whether or not wandb is on; wandb is an
extra that may be missing, offline or failing without stopping the run.
"""
import hashlib
import json
import logging
import math
import os
import re
import secrets
import socket
import sys
import threading
import time
from typing import Any, Callable, Optional
from urllib.parse import urlparse

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont
from torchvision.io import write_png
from tqdm import tqdm

from core.atomic_files import atomic_write, storage_error

LOGGER_NAME = "vqvc"
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
METRICS_FILE = "metrics.jsonl"
WANDB_DEFAULT_HOST = "api.wandb.ai"
WANDB_PROBE_SECONDS = 2.0
WANDB_ID_MAX_LEN = 64
# reconstruction grids: clips shown, frames enlarged to at least this many pixels, error gain
GRID_CLIPS = 4
GRID_MIN_SIZE = 128
ERROR_GAIN = 4.0
GRID_BORDER = 1  # white pixels around each frame
GRID_GAP = 8  # white columns between original, reconstruction and error
GRID_HEADER = 18
GRID_FONT = 12


class ConsoleHandler(logging.StreamHandler):
    """The console: INFO and above on stderr, in the log file's format, printed above a tqdm
    progress bar instead of into it."""

    def __init__(self, level: int = logging.INFO):
        super().__init__()
        self.setLevel(level)
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    @property
    def stream(self):
        return sys.stderr  # looked up at each line, so a redirected stderr is followed (as logging.lastResort does)

    @stream.setter
    def stream(self, _value) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:  # logging's own rule: a failing handler reports itself, never stops the program
            self.handleError(record)


def console_handler() -> Optional[ConsoleHandler]:
    """The console handler on the root logger, if one is installed."""
    return next((h for h in logging.getLogger().handlers if isinstance(h, ConsoleHandler)), None)


def setup_console(level: int = logging.INFO) -> ConsoleHandler:
    """Install the one console handler on the root logger (once, however often it is called).

    Entry points call it first, so their own messages and a run's look the same, and each
    line appears once. DEBUG lines go only to a run's log file.
    """
    root = logging.getLogger()
    handler = console_handler()
    if handler is None:
        handler = ConsoleHandler(level)
        root.addHandler(handler)
    if root.getEffectiveLevel() > level:
        root.setLevel(level)  # let other modules' INFO lines through
    return handler


class LogManager:
    """Local logging plus optional wandb for one run (``is_main=False`` on DDP ranks > 0).

    The handlers go on the root logger, so warnings from every module (data loading,
    weights, ...) reach the same file; ``self.logger`` ('vqvc') also logs DEBUG there, and only
    there: the console (one ``ConsoleHandler``, shared with the entry point) shows INFO and above.
    ``resume`` is the seed's argument: wandb always resumes a run of the same id
    ("allow"), so a resumed training continues its curves. With ``start_wandb=False`` wandb
    waits for ``start_run``, which the trainer calls with the run id stored in the checkpoint
    it resumes from (or none, for a new run).
    """

    def __init__(
        self,
        log_dir: str,
        use_wandb: bool = False,
        project_name: Optional[str] = None,
        config: Any = None,
        resume: bool = False,
        id_name: str = "",
        wandb_dir: Optional[str] = None,
        is_main: bool = True,
        use_tensorboard: bool = False,
        start_wandb: bool = True,
    ):
        self.log_dir = log_dir
        self.is_main = is_main
        self.id_name = id_name
        self.run_id: Optional[str] = id_name if start_wandb else None
        self.metrics_path = os.path.join(log_dir, METRICS_FILE)
        self.log_file: Optional[str] = None
        self._handlers: list = []
        self._wandb = None
        self.run_wandb = None
        if is_main:
            os.makedirs(log_dir, exist_ok=True)
        self.logger = self._build_logger()
        self._wandb_settings = (project_name, config, wandb_dir or log_dir) if is_main and use_wandb else None
        if self._wandb_settings and start_wandb:
            self._start_wandb(*self._wandb_settings[:2], id_name, self._wandb_settings[2])
        self.tensorboard = None
        if is_main and use_tensorboard:
            # optional heavy dependency, imported only when asked for
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir)

    def start_run(self, run_id: Optional[str] = None, step: int = 0) -> str:
        """Log from ``step`` on as run ``run_id`` (None: a new run, a new id); returns the id.

        ``metrics.jsonl`` keeps what was logged before ``step`` (a resumed run writes each step
        once), and wandb, if on, continues the run of that id -- only a resume passes one.
        """
        if run_id is None and self.run_wandb is not None:
            run_id = self.run_wandb.id  # wandb started with the manager (the seed's way): keep its id
        self.run_id = run_id or new_run_id(self.id_name)
        if self.is_main:
            rewind_metrics(self.metrics_path, step)
            if self._wandb_settings and self.run_wandb is None:
                self._start_wandb(*self._wandb_settings[:2], self.run_id, self._wandb_settings[2])
        return self.run_id

    # -- local logging ---------------------------------------------------------
    def _build_logger(self) -> logging.Logger:
        root = logging.getLogger()
        if self.is_main and root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)  # let other modules' INFO lines through
        formatter = logging.Formatter(LOG_FORMAT)
        console = console_handler()
        if console is None:  # no entry point installed one: this run's own, removed on close
            console = ConsoleHandler()
            self._handlers.append(console)
        if not self.is_main:
            console.setLevel(logging.WARNING)  # DDP ranks > 0: the process shows only its problems
        if self.is_main:
            stamp = time.strftime("%Y%m%d_%H%M%S")
            self.log_file = os.path.join(self.log_dir, f"training_{stamp}.log")
            file_handler = logging.FileHandler(self.log_file, encoding="utf-8")
            file_handler.setLevel(logging.DEBUG)
            self._handlers.append(file_handler)
        for handler in self._handlers:
            handler.setFormatter(formatter)
            root.addHandler(handler)
        logger = logging.getLogger(LOGGER_NAME)
        logger.setLevel(logging.DEBUG if self.is_main else logging.WARNING)
        return logger

    def log_metrics(self, step: int, metrics: dict) -> None:
        """Append ``{"step": step, **metrics}`` as one JSON line, and send it to wandb."""
        if not self.is_main:
            return
        values = {key: _plain(value) for key, value in metrics.items()}
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": int(step), **values}) + "\n")
        except OSError as err:  # a full disk or a folder made read-only: one line, not a traceback
            raise storage_error(self.metrics_path, err) from None
        if self.run_wandb is not None:
            self.run_wandb.log({k: v for k, v in values.items() if v is not None}, step=int(step))
        if self.tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tensorboard.add_scalar(key, value, int(step))

    def log_images(
        self,
        step: int,
        images: torch.Tensor,
        images_recon: torch.Tensor,
        b: int,
        d: int,
        unnormalize: Callable[[torch.Tensor], torch.Tensor],
        n_show: int = 4,
        tag: str = "recon",
    ) -> Optional[str]:
        """Write ``images/{tag}_step{step}.png`` (``reconstruction_grid``: a row per clip, original |
        reconstruction | amplified error, PSNR per frame) and send it to wandb; return its path.

        ``images`` are ``(b*d, C, H, W)`` normalised frames, clip by clip. ``b`` keeps the seed's
        call; the layout needs only ``d``.
        """
        if not self.is_main:
            return None
        grid = reconstruction_grid(images, images_recon, d, unnormalize, n_show, step=int(step))
        path = os.path.join(self.log_dir, "images", f"{tag}_step{int(step):07d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_png(grid, path)
        if self.run_wandb is not None:
            caption = f"rows: clips; original | reconstruction | |error| x{ERROR_GAIN:g}; PSNR per frame"
            picture = self._wandb.Image(grid.permute(1, 2, 0).numpy(), caption=caption)
            self.run_wandb.log({f"viz/{tag}-original": picture}, step=int(step))
        if self.tensorboard is not None:
            self.tensorboard.add_image(f"viz/{tag}-original", grid, int(step))
        return path

    def close(self) -> None:
        """Finish wandb, then detach this run's handlers (flushes the log file)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.run_wandb is not None:
            self.run_wandb.finish()
            self._wandb.teardown()  # stops wandb's service process once its files are written
            self.run_wandb = None
        root = logging.getLogger()
        for handler in self._handlers:
            root.removeHandler(handler)
            handler.close()
        self._handlers = []

    # -- wandb -------------------------------------------------------------------
    def _start_wandb(self, project_name, config, id_name, wandb_dir) -> None:
        try:
            import wandb
        except ImportError:
            self.logger.warning("use_wandb is true but wandb is not installed: logging locally only")
            return
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_reachable() else "offline")
        os.makedirs(wandb_dir, exist_ok=True)
        try:
            self.run_wandb = wandb.init(
                project=project_name,
                job_type="train_model",
                config=_config_dict(config),
                id=id_name or None,
                resume="allow",
                dir=wandb_dir,
                mode=mode,
            )
        except Exception as err:  # wandb raises many kinds; none of them may stop training
            self.logger.warning("wandb failed to start (%s): logging locally only", " ".join(str(err).split()))
            return
        self._wandb = wandb
        if mode == "offline":
            self.logger.info("wandb is offline; to upload later run: wandb sync %s",
                             os.path.dirname(self.run_wandb.dir))


def frame_psnr(pixels: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each frame (leading dimensions kept) of [0, 1] pixels ``(..., c, h, w)``, at most 100."""
    mse = (pixels.float() - reference.float()).pow(2).flatten(-3).mean(dim=-1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def reconstruction_grid(images, images_recon, d: int, unnormalize, n_show: int = 4, n_clips: int = GRID_CLIPS,
                        step: Optional[int] = None, gain: float = ERROR_GAIN,
                        min_size: int = GRID_MIN_SIZE) -> torch.Tensor:
    """``(3, H, W)`` uint8: one row per clip (the first ``n_clips``), each row its first ``n_show``
    frames as original | reconstruction | absolute error x ``gain``, with each reconstructed frame's
    PSNR written on it and the step above. Frames smaller than ``min_size`` are enlarged (nearest).
    """
    def clips_of(frames):
        pixels = unnormalize(frames.detach().float()).clamp(0, 1).cpu()
        return rearrange(pixels, "(b d) c h w -> b d c h w", d=d)[:n_clips, :n_show]

    orig, recon = clips_of(images), clips_of(images_recon)
    error = ((orig - recon).abs() * gain).clamp(0, 1)
    b, f, _, h, w = orig.shape
    scale = max(1, math.ceil(min_size / min(h, w)))
    panels = torch.stack([orig, recon, error], dim=1)  # (b, 3, f, c, h, w)
    panels = panels.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    panels = F.pad(panels, (GRID_BORDER,) * 4, value=1.0)  # white lines between frames
    columns = [rearrange(panels[:, p], "b f c h w -> (b h) (f w) c") for p in range(3)]
    gap = torch.ones(columns[0].shape[0], GRID_GAP, 3)
    grid = torch.cat([columns[0], gap, columns[1], gap, columns[2]], dim=1)
    picture = Image.new("RGB", (grid.shape[1], grid.shape[0] + GRID_HEADER), "white")
    picture.paste(Image.fromarray((grid * 255).round().to(torch.uint8).numpy()), (0, GRID_HEADER))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=GRID_FONT)
    title = f"step {step}: " if step is not None else ""
    draw.text((4, 2), f"{title}original | reconstruction | |error| x{gain:g}    (PSNR per frame)",
              fill="black", font=font)
    cell_h, cell_w = h * scale + 2 * GRID_BORDER, w * scale + 2 * GRID_BORDER
    for row, values in enumerate(frame_psnr(recon, orig).tolist()):
        for col, value in enumerate(values):
            x, y = (f + col) * cell_w + GRID_GAP + GRID_BORDER + 2, GRID_HEADER + row * cell_h + GRID_BORDER + 2
            label = f"{value:.1f} dB"
            draw.rectangle(draw.textbbox((x, y), label, font=font), fill="black")
            draw.text((x, y), label, fill="white", font=font)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)


def new_run_id(base: str = "") -> str:
    """A new wandb-safe run id: ``base`` (e.g. ``build_id_name``) and a random suffix, at most 64 characters."""
    suffix = secrets.token_hex(4)
    return f"{base[: WANDB_ID_MAX_LEN - len(suffix) - 1]}-{suffix}" if base else suffix


def rewind_metrics(path: str, step: int) -> int:
    """Drop what ``metrics.jsonl`` holds from ``step`` on (validation at ``step`` included: the resumed
    run validates there again), and torn lines of a killed writer; returns how many lines went."""
    if not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
                at = int(record["step"])
            except (ValueError, KeyError, TypeError):
                dropped += 1
                continue
            if at < step or (at == step and not any(str(k).startswith("val/") for k in record)):
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        atomic_write(path, lambda fh: fh.write("".join(kept).encode("utf-8")))
    return dropped


def _wandb_reachable(timeout: float = WANDB_PROBE_SECONDS) -> bool:
    """Can wandb's server be reached? Probed in a thread: name resolution has no timeout of its own."""
    host = urlparse(os.environ.get("WANDB_BASE_URL", "")).hostname or WANDB_DEFAULT_HOST
    reached = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(reached)


def _config_dict(config: Any) -> Optional[dict]:
    if config is None or isinstance(config, dict):
        return config
    return config.to_dict()


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars as Python numbers (NaN stays NaN, as Python's json writes it)."""
    return value.item() if hasattr(value, "item") else value


def build_id_name(config) -> str:
    """A deterministic, wandb-safe run id from the hyper-parameters (same config -> same id).

    Readable key values first, then a short hash of all ``model_args`` so two
    families with equal key values still differ.
    """
    args = attrs.asdict(config.model_args) if attrs.has(type(config.model_args)) else dict(config.model_args)
    parts = [config.run_name] if config.run_name != config.model_type else []
    parts.append(config.model_type)
    for key, tag in (("vocab_size", "v"), ("n_init", "e"), ("n_hid", "h"), ("group_count", "g")):
        if key in args:
            parts.append(f"{tag}{args[key]}")
    if config.scaling_rates:
        parts.append("r" + "x".join(str(r) for r in config.scaling_rates))
    parts += [
        f"lr{config.train_args.lr:g}",
        f"b{config.data_args.batch_size}",
        f"s{config.data_args.sequence_length}",
    ]
    digest = hashlib.sha1(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()[:6]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(str(p) for p in parts))
    return f"{name[: WANDB_ID_MAX_LEN - 7]}-{digest}"
