"""``python -m codec compress | decompress | info | cut | evaluate | fit-prior``.

Results go to stdout (one summary line, or the ``info``/``evaluate`` table); progress
bars, log lines and any refusal (one ``error:`` line, exit code 1) to stderr.
"""
import argparse
import logging
import math
import os
import sys
import time
from typing import Optional

import torch

from codec.bitstream import CodecError, cut, read_header, unpack
from codec.codec import KEY_INTERVAL, compress, iter_decoded, load_codec_model, read_bitstream
from codec.context import KINDS
from codec.evaluate import DEFAULT_CRFS, evaluate, format_table
from codec.prior import CLIPS_PER_SEQUENCE, CROP, SEQUENCES, fit_prior_into_checkpoint
from codec.video_io import frame_count, iter_frames, video_fps, write_png_frames, write_video
from core.atomic_files import atomic_write
from core.checkpoint import CheckpointError
from core.config_schema import ConfigError


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _size(values: Optional[list]) -> Optional[tuple]:
    return tuple(values) if values else None


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _speed(what: str, frames: int, elapsed: float, times: dict) -> str:
    share = 100.0 * times.get("entropy", 0.0) / max(elapsed, 1e-9)
    return f"{what} {frames / max(elapsed, 1e-9):.1f} frames/s, entropy coding {share:.0f}% of the time"


def _rates(header, size_bytes: int) -> str:
    pixels = header.frames * header.size[0] * header.size[1]
    indices = sum(header.clips * level.indices_per_clip for level in header.levels)
    coders = "/".join(dict.fromkeys(level.coder for level in header.levels))
    bits = 32 * sum(level.words for level in header.levels) / indices
    return f"{8 * size_bytes / pixels:.4f} bpp, {bits:.3f} bits/index ({coders})"


def cmd_compress(args) -> None:
    codec = load_codec_model(args.checkpoint, _device(args.device))
    total = frame_count(args.input) or None
    if total and args.max_frames:
        total = min(total, args.max_frames)
    times = {}
    start = time.perf_counter()
    frames = iter_frames(args.input, _size(args.size), args.max_frames)
    data = compress(codec, frames, video_fps(args.input), coder="adaptive" if args.adaptive else args.coder,
                    rate=args.rate, key_interval=args.key_interval, total=total, progress=not args.quiet, times=times)
    elapsed = time.perf_counter() - start
    atomic_write(args.output, lambda fh: fh.write(data))
    header, _ = read_header(data)
    _say(f"{args.output}: {header.frames} frames {header.size[1]}x{header.size[0]}, {len(data)} bytes, "
         f"{_rates(header, len(data))}, {_speed('encode', header.frames, elapsed, times)}")


def cmd_decompress(args) -> None:
    if not args.output and not args.frames:
        raise CodecError("decompress: give an output video (OUT.mp4), --frames DIR, or both")
    data = read_bitstream(args.input)
    header, _ = unpack(data, args.input)  # refuse a damaged file before loading any model
    checkpoint = args.checkpoint or header.checkpoint_hint
    if not checkpoint or not os.path.isfile(checkpoint):
        raise CodecError(f"{args.input}: pass --checkpoint (the file was coded with "
                         f"{header.checkpoint_hint or 'an unnamed checkpoint'}, weights {header.model_hash[:16]})")
    codec = load_codec_model(checkpoint, _device(args.device))
    times = {}
    start = time.perf_counter()
    header, decoded = iter_decoded(codec, data, args.input, progress=not args.quiet, times=times)
    if args.output and args.frames:
        chunks = list(decoded)  # written twice: keep the chunks
        write_video(args.output, (f for c in chunks for f in c), header.fps)
        write_png_frames(args.frames, (f for c in chunks for f in c))
    elif args.output:
        write_video(args.output, (f for c in decoded for f in c), header.fps)
    else:
        write_png_frames(args.frames, (f for c in decoded for f in c))
    elapsed = time.perf_counter() - start
    target = ", ".join(p for p in (args.output, args.frames) if p)
    _say(f"{target}: {header.frames} frames {header.size[1]}x{header.size[0]} from {len(data)} bytes, "
         f"{_rates(header, len(data))}, {_speed('decode', header.frames, elapsed, times)}")


def cmd_info(args) -> None:
    data = read_bitstream(args.input)
    header, _ = unpack(data, args.input)
    height, width = header.size
    lines = [
        f"file      {args.input}: {len(data)} bytes ({header.payload_bytes} payload, "
        f"{len(data) - header.payload_bytes} header and framing)",
        f"model     {header.model_type}, weights sha256 {header.model_hash[:16]}"
        + (f", code prior {header.prior_hash[:16]}" if header.prior_hash else "")
        + (f", coded with {header.checkpoint_hint}" if header.checkpoint_hint else ""),
        f"video     {header.frames} frames at {header.fps:.3f} fps, {width}x{height} "
        f"(coded as {header.padded_size[1]}x{header.padded_size[0]}, {header.clips} clips of "
        f"{header.frames_per_clip} frame(s), {header.chunk_frames} frames per model call)",
        f"groups    {header.groups} of {header.key_interval} clips (a key latent frame each; cut there)",
    ]
    for number, level in enumerate(header.levels):
        count = header.clips * level.indices_per_clip
        depth = f", {level.depth} residual level(s)" if level.depth else ""
        lines.append(
            f"level {number}   {count} indices {'x'.join(map(str, level.clip_shape))} per clip{depth}, alphabet "
            f"{level.vocab_size} ({'x'.join(map(str, level.factors))}): {32 * level.words / count:.3f} bits/index "
            f"with {level.coder}")
        tried = ", ".join(f"{kind} {level.costs[kind]:.3f}" for kind in KINDS if kind in level.costs)
        lines.append(f"          bits/index of each coder: {tried}; fixed length {math.log2(level.vocab_size):.3f}, "
                     f"empirical entropy {level.entropy_bits:.3f}")
    lines.append(f"rate      {_rates(header, len(data))}, "
                 f"{8 * len(data) * header.fps / max(header.frames, 1) / 1000:.1f} kbit/s")
    _say("\n".join(lines))


def cmd_cut(args) -> None:
    data, first, end = cut(read_bitstream(args.input), args.start, args.end, args.input)
    atomic_write(args.output, lambda fh: fh.write(data))
    _say(f"{args.output}: frames {first} to {end} of {args.input} ({end - first} frames, {len(data)} bytes)")


def cmd_evaluate(args) -> None:
    points, bd_rates = evaluate(args.clips, args.checkpoints, args.out, crfs=args.crf, size=_size(args.size),
                                max_frames=args.max_frames, coder="adaptive" if args.adaptive else args.coder,
                                rates=args.rates, device=_device(args.device), progress=not args.quiet,
                                vgg_weights=args.vgg_weights)
    _say(format_table(points, bd_rates))
    _say(f"wrote {os.path.join(args.out, 'rd.csv')}, rd.png, bd_rate.csv, side_by_side_*.png")


def cmd_fit_prior(args) -> None:
    prior = fit_prior_into_checkpoint(args.checkpoint, args.data, _device(args.device), progress=not args.quiet,
                                      sequences=args.sequences, clips=args.clips, crop=args.crop, size=_size(args.size))
    _say(f"{args.checkpoint}: code prior of {prior.num_indices} indices over {len(prior.levels)} level(s) "
         f"from {args.data}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m codec", description="vqvc video codec: a checkpoint as a codec")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=func)
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        return sub

    def coder_options(sub):
        sub.add_argument("--coder", default="auto", choices=("auto",) + KINDS,
                         help="entropy coder; auto: the cheapest per level (never above fixed length)")
        sub.add_argument("--adaptive", action="store_true", help="the same as --coder adaptive")

    def model_options(sub, required=True):
        sub.add_argument("--checkpoint", required=required, help="training checkpoint (.pth.tar)")
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")

    sub = command("compress", cmd_compress, "compress a video (or image, or folder of frames) to a .vqv file")
    sub.add_argument("input")
    sub.add_argument("output")
    model_options(sub)
    coder_options(sub)
    sub.add_argument("--rate", type=int, metavar="N", help="keep the first N residual quantizer levels")
    sub.add_argument("--key-interval", type=int, default=KEY_INTERVAL, metavar="N",
                     help=f"clips per group: a key latent frame every N, where a stream can be cut "
                          f"(default {KEY_INTERVAL})")
    sub.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize frames first")
    sub.add_argument("--max-frames", type=int, help="compress only the first N frames")

    sub = command("decompress", cmd_decompress, "decode a .vqv file to a lossless mp4 and/or PNG frames")
    sub.add_argument("input")
    sub.add_argument("output", nargs="?", help="output video (.mp4)")
    sub.add_argument("--frames", metavar="DIR", help="also (or only) write PNG frames into DIR")
    model_options(sub, required=False)

    sub = command("info", cmd_info, "show a .vqv file's header, sizes and bits per index")
    sub.add_argument("input")

    sub = command("cut", cmd_cut, "keep the groups holding a range of frames, as a .vqv file of its own")
    sub.add_argument("input")
    sub.add_argument("output")
    sub.add_argument("--from", dest="start", type=int, required=True, metavar="FRAME", help="first frame wanted")
    sub.add_argument("--to", dest="end", type=int, required=True, metavar="FRAME", help="frame after the last wanted")

    sub = command("evaluate", cmd_evaluate, "rate-distortion of checkpoints against x264/x265")
    sub.add_argument("--clips", nargs="+", required=True, help="videos (or folders of frames)")
    sub.add_argument("--checkpoints", nargs="+", required=True, metavar="[LABEL=]CKPT",
                     help="rate points; checkpoints with the same label form one curve")
    sub.add_argument("--out", required=True, help="folder for rd.csv, rd.png, bd_rate.csv, side_by_side_*.png")
    sub.add_argument("--crf", type=int, nargs="+", default=list(DEFAULT_CRFS), help="x264/x265 CRF values")
    sub.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize frames first")
    sub.add_argument("--max-frames", type=int, help="use only the first N frames of each clip")
    coder_options(sub)
    sub.add_argument("--rates", type=int, nargs="+", metavar="N",
                     help="residual levels kept, one rate point each (default: every rate the model has)")
    sub.add_argument("--vgg-weights", metavar="FILE",
                     help="torchvision VGG16 weights for LPIPS (default: the torch hub cache; LPIPS is skipped "
                          "when absent)")
    sub.add_argument("--device", default="auto")

    sub = command("fit-prior", cmd_fit_prior, "measure code statistics on video and store them in the checkpoint")
    model_options(sub)
    sub.add_argument("--data", required=True, help="folder of videos (or images), or builtin:train")
    sub.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                     help="resize frames first: fit at the size you will code at (default: their own size)")
    sub.add_argument("--crop", type=int, default=CROP, help=f"largest crop side in pixels (default {CROP})")
    sub.add_argument("--sequences", type=int, default=SEQUENCES, help=f"runs of frames read (default {SEQUENCES})")
    sub.add_argument("--clips", type=int, default=CLIPS_PER_SEQUENCE,
                     help=f"clips per run (default {CLIPS_PER_SEQUENCE})")
    return parser


class _Formatter(logging.Formatter):
    def format(self, record):
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def main(argv: Optional[list] = None) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    # the codec's own notes on stderr; the models' construction notes (quantizer options, ...) are not news here
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("codec").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CodecError, CheckpointError, ConfigError, OSError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    return 0
