"""Will a configured run fit in memory? An estimate from the config, before anything is allocated.

The model is built on PyTorch's ``meta`` device (shapes, no storage), so its parameters and
buffers are counted exactly; training adds gradients and two Adam moments per trainable
parameter. Frames are counted as a floor: one batch as uint8 and four float32 copies
(input, normalised, reconstruction, its gradient), and the loader's decoded-frame cache.
Activations come on top, so a refusal is certain and a pass is no promise.
"""
import logging

import attrs
import torch

from core.config import Config
from core.config_schema import ConfigError
from core.runtime import memory_bytes
from models.builders import create_model

ADAM_COPIES = 3  # gradient + two moments per trainable parameter
FLOAT_FRAME_COPIES = 4  # input, normalised, reconstruction, its gradient


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def model_bytes(config: Config) -> tuple:
    """``(bytes of the model with its training state, name and shape of its largest tensor)``."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # a throwaway model: its build lines would repeat the real one's
    try:
        with torch.device("meta"):
            model = create_model(config)
    finally:
        logging.disable(previous)
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    trainable = [p for p in model.parameters() if p.requires_grad]
    total = _bytes(tensors.values()) + ADAM_COPIES * _bytes(trainable)
    name, largest = max(tensors.items(), key=lambda item: item[1].numel(), default=("", torch.empty(0)))
    return total, name, tuple(largest.shape)


def _keys_in_shape(config: Config, shape: tuple) -> str:
    """The ``model_args`` integers that are dimensions of ``shape`` (what made the tensor big)."""
    args = attrs.asdict(config.model_args, recurse=False) if attrs.has(type(config.model_args)) else {}
    named = [f"model_args.{k} = {v}" for k, v in args.items()
             if isinstance(v, int) and not isinstance(v, bool) and v > 1 and v in shape]
    return ", ".join(named) or "model_args"


def check_fits_in_memory(config: Config, device: torch.device) -> None:
    """``ConfigError`` naming the keys when the model or the frames cannot fit, before anything is allocated."""
    data = config.data_args
    height, width = data.frame_size
    available = memory_bytes(device)
    where = f"the {_size(available)} of {'GPU memory' if device.type == 'cuda' else 'RAM'} of {device}"
    needed, name, shape = model_bytes(config)
    if needed > available:
        raise ConfigError(f"{_keys_in_shape(config, shape)}: the model needs about {_size(needed)} with its "
                          f"training state (largest tensor {name} of shape {list(shape)}), more than {where}")
    values = data.batch_size * data.sequence_length * 3 * height * width
    frames = values * (1 + 4 * FLOAT_FRAME_COPIES)
    if needed + frames > available:
        raise ConfigError(f"data_args.resolution = {data.resolution!r} with batch_size {data.batch_size} x "
                          f"sequence_length {data.sequence_length}: one batch of frames needs at least "
                          f"{_size(frames)} during a step, more than {where} (with the model's {_size(needed)})")
    ram = memory_bytes(torch.device("cpu"))
    workers = max(1, data.num_threads)
    cache = data.initial_prefetch_size * 3 * height * width * workers
    if cache > ram:
        raise ConfigError(f"data_args.initial_prefetch_size = {data.initial_prefetch_size} frames at "
                          f"{height}x{width} x {workers} loader process(es): the decoded-frame cache needs "
                          f"{_size(cache)}, more than the {_size(ram)} of RAM; lower it")
