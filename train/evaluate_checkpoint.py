"""``vqvc eval``: a checkpoint measured the same way every time, the protocol written beside the numbers.

    vqvc eval --checkpoint CKPT --data DATA [--frames N] [--out DIR]

DATA is what ``data_process`` takes: folders, files or ``builtin:valid``. The clips are the
validation loader's fixed ones (``clips_per_file`` evenly spaced clips per file, whole frames
resized to the checkpoint's resolution), so every run sees the same frames. One pass gives PSNR,
SSIM, LPIPS, rFID (when its weights are present), codebook usage and the fixed-length rate; a
second pass codes the same frames with ``codec.compress`` for the entropy-coded rate.
Writes ``eval.json`` (protocol and metrics) and ``eval.md`` (the same as Markdown tables).
"""
import argparse
import json
import logging
import math
import os
import sys
from typing import Optional

import attrs
import torch
from tqdm import tqdm

from codec.bitstream import CodecError, read_header
from codec.codec import compress, load_codec_model
from core.atomic_files import atomic_write
from core.checkpoint import CheckpointError
from core.config_schema import ConfigError
from core.indices import as_level_list
from core.runtime import select_device
from data_utils.files import resolve_data_files
from data_utils.loader import build_loader
from log_utils.log_utils import setup_console
from metric_utils.metric_utils import Metrics, resolve_metric_weights
from models.loaders import model_from_checkpoint
from models.perceptual import build_lpips

logger = logging.getLogger("vqvc")

PROTOCOL_VERSION = 1
CODEC_FPS = 25.0  # written into the bitstream header only; it does not change the rate per pixel
ROWS = [  # (key in metrics, label, format)
    ("psnr", "PSNR (dB)", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("lpips", "LPIPS", "{:.4f}"),
    ("rfid", "rFID", "{:.2f}"),
    ("codebook_usage", "codebook usage", "{:.1%}"),
    ("perplexity", "code perplexity", "{:.1f}"),
    ("bpp_fixed", "bpp, fixed-length indices", "{:.4f}"),
    ("bpp_entropy_payload", "bpp, entropy-coded indices", "{:.4f}"),
    ("bpp_entropy_coded", "bpp, whole .vqv file", "{:.4f}"),
]


def _lpips_note(train_args, used: bool) -> str:
    if not used:
        return "skipped: VGG16 weights not found (vgg_weights)"
    if train_args.perceptual_backbone == "random":
        return "LPIPS with a random backbone (the checkpoint's setting): for smoke tests only, not comparable"
    return "LPIPS (lpips package, VGG16 backbone), mean over frames"


def _protocol(checkpoint, ckpt, config, data, files, clips_per_file, train_args, use_lpips, use_fid) -> dict:
    height, width = config.data_args.frame_size
    return {
        "version": PROTOCOL_VERSION,
        "checkpoint": checkpoint,
        "steps": int(ckpt.get("steps", 0)),
        "model_type": config.model_type,
        "data": data,
        "files": len(files),
        "clip_selection": f"{clips_per_file} clips per file, evenly spaced starts (the validation loader)",
        "resolution": [height, width],
        "crop": "none: whole frames resized to the resolution (area filter when shrinking, bilinear when enlarging)",
        "frames_per_clip": config.data_args.sequence_length,
        "psnr": "per frame, RGB frames clamped to [0, 1], 10 log10(1 / MSE), capped at 100 dB; mean over frames",
        "ssim": "torchmetrics SSIM, data range 1, 11x11 Gaussian window (smaller for tiny frames); mean over frames",
        "lpips": _lpips_note(train_args, use_lpips),
        "rfid": ("FID (pytorch-fid Inception pool features) between original and reconstructed frames"
                 if use_fid else "skipped: Inception weights not found (fid_weights)"),
        "codebook_usage": "share of codes used at least once over the whole pass; mean over levels",
        "bpp_fixed": "indices x log2(codebook size), summed over levels, per pixel",
        "bpp_entropy_payload": ("all clips coded as one .vqv stream by codec.compress with "
                                + ("the checkpoint's code prior" if ckpt.get("code_prior") is not None
                                   else "no stored code prior") + "; the coded indices only"),
        "bpp_entropy_coded": "the same stream, the whole file (header and framing included)",
    }


@torch.no_grad()
def evaluate_checkpoint(checkpoint: str, data, out_dir: str, frames: Optional[int] = None, clips_per_file: int = 8,
                        device="cpu", progress: bool = True, vgg_weights: Optional[str] = None,
                        fid_weights: Optional[str] = None) -> dict:
    """Measure ``checkpoint`` on ``data``; write ``eval.json`` and ``eval.md`` into ``out_dir``; return the record."""
    device = torch.device(device)
    model, config, ckpt = model_from_checkpoint(checkpoint, device)
    if frames is not None:
        if frames <= 0 or frames % model.frames_per_clip:
            raise ConfigError(f"--frames {frames}: expected a positive multiple of {model.frames_per_clip} "
                              f"(the frames this model codes together)")
        config = attrs.evolve(config, data_args=attrs.evolve(config.data_args, sequence_length=frames))
    files = resolve_data_files(data, config.use_images, "--data")
    if not files:
        raise ConfigError(f"--data {data!r}: no files")
    loader = build_loader(files, config.data_args, config.use_images, validation=True,
                          clips_per_file=clips_per_file, folder="--data")
    train_args = attrs.evolve(config.train_args, compute_fid="auto", compute_lpips="auto",
                              vgg_weights=vgg_weights or config.train_args.vgg_weights,
                              fid_weights=fid_weights or config.train_args.fid_weights)
    use_fid, use_lpips = resolve_metric_weights(train_args, logger)
    lpips = None
    if use_lpips:
        lpips = build_lpips(train_args.perceptual_backbone, train_args.vgg_weights, train_args.lpips_weights)
    metrics = Metrics(device, model.vocab_sizes, use_fid=use_fid, lpips=lpips.to(device) if lpips else None,
                      fid_weights=train_args.fid_weights)

    sums, frame_count, pixels, fixed_bits, clip_count = {}, 0, 0, 0.0, 0
    for clips, _paths in tqdm(loader, desc="eval", unit="batch", disable=not progress, dynamic_ncols=True):
        b, d, height, width = clips.shape[:4]
        x = model.clips_to_input(clips.to(device))
        out = model(x)
        values = metrics.compute_all(x, out.recon.float(), None, out.perplexity, out.indices, b, d)
        for key in ("psnr", "ssim", "lpips"):
            if values.get(key) is not None:  # batch means, weighted by frames: a mean over frames
                sums[key] = sums.get(key, 0.0) + values[key] * b * d
        fixed_bits += sum(t.numel() * math.log2(v) for t, v in zip(as_level_list(out.indices), model.vocab_sizes))
        frame_count, pixels, clip_count = frame_count + b * d, pixels + b * d * height * width, clip_count + b
    final = metrics.finalize()

    codec = load_codec_model(checkpoint, device)
    stream = (frame for clips, _ in loader for clip in clips.numpy() for frame in clip)
    coded = compress(codec, stream, CODEC_FPS, total=frame_count, progress=progress)
    header, _ = read_header(coded)

    results = {key: value / frame_count for key, value in sums.items()}
    results.update(rfid=final.get("fid"), codebook_usage=final.get("codebook_usage"),
                   perplexity=final.get("perplexity"), bpp_fixed=fixed_bits / pixels,
                   bpp_entropy_payload=8 * header.payload_bytes / pixels, bpp_entropy_coded=8 * len(coded) / pixels,
                   clips=clip_count, frames=frame_count,
                   bytes_entropy_coded=len(coded))
    results.update({k: v for k, v in final.items() if "/level" in k})
    protocol = _protocol(checkpoint, ckpt, config, data, files, clips_per_file, train_args, use_lpips, use_fid)
    record = {"protocol": protocol, "metrics": results}
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(os.path.join(out_dir, "eval.json"), lambda fh: fh.write(text.encode("utf-8")))
    markdown = format_markdown(record)
    atomic_write(os.path.join(out_dir, "eval.md"), lambda fh: fh.write(markdown.encode("utf-8")))
    return record


def format_markdown(record: dict) -> str:
    """The metrics, then the protocol, as Markdown tables."""
    metrics, protocol = record["metrics"], record["protocol"]
    lines = [f"# vqvc eval: {protocol['checkpoint']} (step {protocol['steps']})", "",
             f"{metrics['clips']} clips, {metrics['frames']} frames of {protocol['data']}", "",
             "| metric | value |", "|---|---|"]
    for key, label, fmt in ROWS:
        value = metrics.get(key)
        lines.append(f"| {label} | {fmt.format(value) if value is not None else 'n/a'} |")
    lines += ["", "## Protocol", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in protocol.items()]
    return "\n".join(lines) + "\n"


def default_out_dir(checkpoint: str) -> str:
    """``eval_<checkpoint name>`` beside the checkpoint."""
    name = os.path.basename(checkpoint).removesuffix(".tar").removesuffix(".pth")
    return os.path.join(os.path.dirname(checkpoint), f"eval_{name}")


def main(argv=None, prog=None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a vqvc checkpoint (.pth.tar)")
    parser.add_argument("--data", required=True, nargs="+", help="folders, files, or builtin:valid")
    parser.add_argument("--frames", type=int, help="frames per clip (default: the checkpoint's sequence_length)")
    parser.add_argument("--clips-per-file", type=int, default=8, help="evenly spaced clips per file (default 8)")
    parser.add_argument("--out", help="folder for eval.json and eval.md (default: eval_<name> beside the checkpoint)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    parser.add_argument("--vgg-weights", help="torchvision vgg16 weights file, for LPIPS")
    parser.add_argument("--fid-weights", help="pytorch-fid Inception weights file, for rFID")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    setup_console()
    data = args.data[0] if len(args.data) == 1 else args.data
    out_dir = args.out or default_out_dir(args.checkpoint)
    try:
        record = evaluate_checkpoint(args.checkpoint, data, out_dir, args.frames, args.clips_per_file,
                                     select_device(args.device), not args.quiet, args.vgg_weights, args.fid_weights)
    except (ConfigError, CheckpointError, CodecError, OSError) as err:
        logger.error("%s", err)
        return 2
    sys.stdout.write(format_markdown(record).split("## Protocol")[0])
    sys.stdout.write(f"wrote {os.path.join(out_dir, 'eval.json')} and eval.md\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
