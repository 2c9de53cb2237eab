"""Where and how a run computes: device choice, seeding, determinism, mixed precision, durations."""
import contextlib
import os
import random

import numpy as np
import torch

from core.config_schema import ConfigError


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; a named device must exist here (never a silent CPU run)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"train_args.device = {name!r}: expected auto, cpu, mps, cuda or cuda:N")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train_args.device = {name!r}: no MPS device on this machine (use auto or cpu)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train_args.device = {name!r}: no CUDA device on this machine (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train_args.device = {name!r}: only {torch.cuda.device_count()} CUDA devices")
    return device


def memory_bytes(device: torch.device) -> int:
    """Total memory of ``device``: the GPU's own, or for the CPU the machine's RAM (or its cgroup limit)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:  # no cgroup v2 limit here
        pass
    return total


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on a GPU that computes in bf16, else ``fp32`` (CPU autocast is slow)."""
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def autocast(precision: str, device: torch.device):
    """Autocast context for ``precision`` (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
