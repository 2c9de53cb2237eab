"""The codec's entropy coders on real footage: bits per index of each, and encode/decode speed.

On the built-in validation clip (carphone, 176x144, never seen in training) the script
compresses with a checkpoint's model under each coder kind and checks that every kind
decodes to the very same frames (the coders are lossless on the indices: identical
reconstruction). It prints bits per index for

    fixed length      log2 of the alphabet (what writing each index in binary costs)
    uniform           the same, range coded
    stored prior      the code frequencies stored with the model (``prior``)
    adaptive          frequencies learned from the clip itself
    temporal context  each latent frame conditioned on the previous one, learned from the clip (``context``)
    learned context   the same, starting from the model's fitted conditional prior (``context_prior``)
    default           what ``compress`` picks (``auto``: the cheapest per level)

then encode/decode frames/s of the default (median of ``--repeats`` alternating runs, with
their range: the machine is shared) and the share of that time spent entropy coding.

Without ``--checkpoint`` it first trains one with ``param.json``'s schedule in a temporary
folder (the code prior is fitted at the end of training), so it runs alone on a fresh clone.
The last line is the headline: temporal context / static prior bits per index, and default
/ fixed length (goals: <= 0.75 and <= 1).

    python benchmarks/bench_codec.py [--checkpoint CKPT] [--clip VIDEO] [--repeats 3] [--device cpu]
"""
import argparse
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from benchmarks.common import format_table, write
from codec.bitstream import read_header
from codec.codec import compress, decompress, iter_decoded, load_codec_model
from codec.video_io import read_frames
from core.config import deep_merge
from data_utils.sample_data import sample_video_files
from models.builders import config_from_dict
from train.train_custom_videos import build_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = [("uniform", "uniform"), ("stored prior", "prior"), ("adaptive", "adaptive"),
        ("temporal context", "context"), ("learned context", "context_prior"), ("default", "auto")]


def train_checkpoint(folder: str, device: str) -> str:
    """Train ``param.json``'s model with its own schedule into ``folder``; the last checkpoint's path."""
    with open(os.path.join(ROOT, "param.json"), encoding="utf-8") as fh:
        data = json.load(fh)
    data = deep_merge(data, {"train_args": {"folder_name": folder, "device": device, "progress_bar": False,
                                            "compute_fid": False, "compute_lpips": False}})
    write(f"training param.json's model for {data['train_args']['num_steps']} steps in a temporary folder ...")
    logging.disable(logging.WARNING)  # the trainer's progress lines; this script's output is its table
    try:
        summary = build_trainer(config_from_dict(data, source="param.json")).train()
    finally:
        logging.disable(logging.NOTSET)
    return summary["last_checkpoint"]


def coded_indices(data: bytes) -> tuple:
    """``(bits per index of the payload, indices coded)``."""
    header = read_header(data)[0]
    indices = sum(header.clips * level.indices_per_clip for level in header.levels)
    return 32.0 * sum(level.words for level in header.levels) / indices, indices


def measure(checkpoint: str, clip: str, repeats: int, device: str) -> None:
    codec = load_codec_model(checkpoint, device)
    frames, fps = read_frames(clip)
    vocab = codec.model.vocab_sizes
    fixed = sum(math.log2(v) for v in vocab) / len(vocab)
    write(f"{os.path.basename(clip)}: {len(frames)} frames {frames.shape[2]}x{frames.shape[1]}; "
          f"{codec.config.model_type}, alphabet {vocab}, code prior: "
          f"{codec.model.code_prior.source if codec.model.code_prior else 'none'}")

    rows, results, reference = [], {}, None
    for label, kind in ROWS:
        if kind in ("prior", "context_prior") and codec.model.code_prior is None:
            rows.append([label, float("nan"), float("nan"), float("nan"), "no code prior"])
            continue
        data = compress(codec, frames, fps, coder=kind)
        decoded, _ = decompress(codec, data)
        reference = decoded if reference is None else reference
        same = bool(np.array_equal(decoded, reference))
        bits, indices = coded_indices(data)
        results[kind] = bits
        chosen = "/".join(level.coder for level in read_header(data)[0].levels)
        note = ("identical frames" if same else "FRAMES DIFFER") + (f"; picks {chosen}" if kind == "auto" else "")
        rows.append([label, bits, bits / fixed, 8.0 * len(data) / frames[..., 0].size, note])
    rows.insert(0, ["fixed length", fixed, 1.0, fixed * indices / frames[..., 0].size, "log2 alphabet"])
    write()
    write(format_table(["coder", "bits/index", "x fixed", "bpp", "note"], rows))

    encode, decode, shares = [], [], []
    for _ in range(repeats):
        times = {}
        start = time.perf_counter()
        data = compress(codec, frames, fps, times=times)
        encode.append(time.perf_counter() - start)
        shares.append(times["entropy"] / encode[-1])
        times = {}
        start = time.perf_counter()
        header, chunks = iter_decoded(codec, data, times=times)
        for _ in chunks:
            pass
        decode.append(time.perf_counter() - start)
        shares.append(times["entropy"] / decode[-1])
    write()
    speed = [["encode (default coder)", len(frames) / statistics.median(encode),
              f"{len(frames) / max(encode):.1f} .. {len(frames) / min(encode):.1f}"],
             ["decode", len(frames) / statistics.median(decode),
              f"{len(frames) / max(decode):.1f} .. {len(frames) / min(decode):.1f}"]]
    write(format_table(["run", "frames/s (median)", f"range over {repeats} runs"], speed))
    write(f"entropy coding share of encode+decode time: {100 * min(shares):.0f}% .. {100 * max(shares):.0f}%")
    temporal = results["context"] / results["prior"] if "prior" in results else float("nan")
    write(f"headline: temporal context / static prior bits per index = {temporal:.2f}; "
          f"default / fixed length = {results['auto'] / fixed:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: train param.json's model first)")
    parser.add_argument("--clip", default=None, help="video to code (default: the built-in validation clip)")
    parser.add_argument("--repeats", type=int, default=3, help="timed encode/decode runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machines are shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clip = args.clip or sample_video_files("valid")[0]
    if args.checkpoint:
        measure(args.checkpoint, clip, args.repeats, args.device)
        return
    with tempfile.TemporaryDirectory() as folder:
        measure(train_checkpoint(folder, args.device), clip, args.repeats, args.device)


if __name__ == "__main__":
    main()
