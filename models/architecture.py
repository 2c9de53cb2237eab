"""A readable report of a model: where its parameters are, and how much it compresses.

Written to the run folder at start-up, so a run's folder says what was trained.
"""
import logging
import math
import os

from torch import nn

TENSOR_RECORD_BYTES = 288  # what torch.save adds per tensor (zip headers, 64-byte alignment), measured


def _count(tensors) -> int:
    return sum(t.numel() for t in tensors)


def module_table(root: nn.Module, depth: int = 2) -> list:
    """``(name, class, trainable, frozen, buffer elements)``: the whole model, then its top ``depth`` levels."""
    rows = []
    for name, module in root.named_modules():
        if name.count(".") >= depth:
            continue
        params = list(module.parameters())
        rows.append((
            name or "(whole model)",
            type(module).__name__,
            _count(p for p in params if p.requires_grad),
            _count(p for p in params if not p.requires_grad),
            _count(module.buffers()),
        ))
    return rows


def rate_summary(model, input_shape: tuple) -> dict:
    """Compression in time and space, latent shape per level, bits per frame and pixel, ratio against raw 8-bit frames.

    ``input_shape`` is one clip ``(frames, C, H, W)``; each code costs ``log2(V)`` bits
    before entropy coding, so this is the rate of the fixed-length code.
    """
    frames, channels, height, width = input_shape
    shapes = model.latent_shapes(tuple(input_shape))
    vocab_sizes = list(model.vocab_sizes)
    bits = sum(math.prod(shape) * math.log2(vocab) for shape, vocab in zip(shapes, vocab_sizes))
    bits_per_frame = bits / frames
    return {
        "temporal_factor": model.temporal_factor,
        "spatial_factor": model.spatial_factor,
        "quantizers": [quantizer.describe() for quantizer in model.quantizers],
        "latent_shapes": shapes,
        "vocab_sizes": vocab_sizes,
        "bits_per_frame": bits_per_frame,
        "bits_per_pixel": bits_per_frame / (height * width),
        "compression_ratio": height * width * channels * 8 / bits_per_frame,
    }


def checkpoint_bytes(model: nn.Module, companions=()) -> dict:
    """Estimated file sizes: ``weights`` (a ``best_*`` file: the model's state dict) and
    ``resumable`` (a step checkpoint: also Adam's state of every trained parameter, and the state
    of ``companions`` trained beside the model, e.g. the discriminator)."""
    companions = [m for m in companions if m is not None]

    def stored(tensors) -> int:  # torch.save keeps each tensor as its own zip record
        return sum(t.numel() * t.element_size() + TENSOR_RECORD_BYTES for t in tensors)

    weights = stored(model.state_dict().values())
    trained = [p for m in (model, *companions) for p in m.parameters() if p.requires_grad]
    adam = 2 * stored(trained) + TENSOR_RECORD_BYTES * len(trained)  # exp_avg, exp_avg_sq and a step count
    extra = sum(stored(m.state_dict().values()) for m in companions)
    return {"weights": weights, "resumable": weights + extra + adam}


def analyze_model_architecture(model, input_shape: tuple, architecture_file: str, logger: logging.Logger,
                               companions=()) -> dict:
    """Write the parameter table and the rate of ``model`` (an adapter) to ``architecture_file``.

    Trainable parameters are what the optimizer updates; buffers (EMA codebook
    statistics, BatchNorm running stats) are state, not parameters. The log line also says
    what one checkpoint will weigh (``checkpoint_bytes``; ``companions`` as there).
    """
    root = getattr(model, "model", model)  # an adapter's keys are its inner model's
    params = list(model.parameters())
    rows = module_table(root)
    summary = {
        "trainable_params": _count(p for p in params if p.requires_grad),
        "frozen_params": _count(p for p in params if not p.requires_grad),
        "buffer_elements": _count(model.buffers()),
        "modules": {name: trainable + frozen for name, _, trainable, frozen, _ in rows},
        "checkpoint_bytes": checkpoint_bytes(model, companions),
        **rate_summary(model, input_shape),
    }
    os.makedirs(os.path.dirname(architecture_file) or ".", exist_ok=True)
    with open(architecture_file, "w", encoding="utf-8") as fh:
        fh.write(_report(model, input_shape, summary, rows))
    sizes = summary["checkpoint_bytes"]
    logger.info(
        "model %s: %s trainable parameters, %s buffer elements, %.1f bits/frame (%.1fx vs raw 8-bit); "
        "one checkpoint ~%s (best_* files ~%s); see %s",
        type(model).__name__, f"{summary['trainable_params']:,}", f"{summary['buffer_elements']:,}",
        summary["bits_per_frame"], summary["compression_ratio"], _mib(sizes["resumable"]), _mib(sizes["weights"]),
        architecture_file,
    )
    return summary


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def _report(model, input_shape, summary: dict, rows: list) -> str:
    frames, channels, height, width = input_shape
    labels = ["  " * name.count(".") + name for name, *_ in rows]
    name_width = max([len("module")] + [len(label) for label in labels])
    lines = [
        f"Model: {type(model).__name__}",
        f"Input clip: {frames} frames x {channels} x {height} x {width}",
        "",
        f"{'module':<{name_width}}  {'class':<24} {'trainable':>12} {'frozen':>10} {'buffers':>10}",
    ]
    for label, (_, cls, trainable, frozen, buffers) in zip(labels, rows):
        lines.append(f"{label:<{name_width}}  {cls:<24} {trainable:>12,} {frozen:>10,} {buffers:>10,}")
    lines += [
        "",
        f"Trainable parameters: {summary['trainable_params']:,}",
        f"Frozen parameters:    {summary['frozen_params']:,}",
        f"Buffer elements:      {summary['buffer_elements']:,}  (EMA statistics etc.; not trained by the optimizer)",
        f"Checkpoint size:      ~{_mib(summary['checkpoint_bytes']['resumable'])} per step checkpoint (weights, "
        f"optimizer moments, discriminator), ~{_mib(summary['checkpoint_bytes']['weights'])} per best_* file (weights)",
        "",
        "Quantizers (resolved options):",
        *(f"  level {level}: {text}" for level, text in enumerate(summary["quantizers"])),
        "",
        f"Compression:          {summary['temporal_factor']}x in time, "
        f"{summary['spatial_factor']}x{summary['spatial_factor']} in space",
        "Latent codes per clip:",
    ]
    for level, (shape, vocab) in enumerate(zip(summary["latent_shapes"], summary["vocab_sizes"])):
        lines.append(f"  level {level}: shape {tuple(shape)}, vocabulary {vocab} ({math.log2(vocab):.2f} bits/code)")
    lines += [
        f"Bits per frame:       {summary['bits_per_frame']:,.1f}",
        f"Bits per pixel:       {summary['bits_per_pixel']:.4f}",
        f"Compression ratio:    {summary['compression_ratio']:,.1f}x against raw 8-bit "
        f"({height * width * channels * 8:,} bits per frame), before entropy coding",
        "",
    ]
    return "\n".join(lines)
