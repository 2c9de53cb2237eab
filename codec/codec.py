"""A trained checkpoint as a video codec: ``compress()`` and ``decompress()``.

compress:   RGB frames --pad (replicate) to whole clips and multiples of the spatial
            factor--> clips in [0, 1] --model.encode_clips, a chunk of ``sequence_length``
            frames at a time--> code indices per level (the first ``rate`` residual levels)
            --every ``key_interval`` clips: a group, entropy-coded under each coder kind-->
            the cheapest kind per level --> header + payload bytes
decompress: bytes --CRCs, every header field, model and prior hashes checked--> group by
            group: indices (their CRC checked) --model.decode_clips, the same chunks-->
            frames, trimmed back to the original count and size

The bitstream names the model by a hash of its weights, so decoding needs only the
bytes and the checkpoint, and refuses any other checkpoint.
"""
import hashlib
import logging
import math
import os
import time
from typing import Iterable, Iterator, Optional

import attrs
import numpy as np
import torch
from einops import rearrange
from tqdm import tqdm

from codec.bitstream import pack, unpack
from codec.context import KINDS, PRIOR_KINDS
from codec.header import MAX_KEY_INTERVAL, CodecError, Header
from codec.levels import LevelEncoder, available_kinds, decode_group
from core.indices import as_level_list
from models.loaders import model_from_checkpoint

logger = logging.getLogger(__name__)

KEY_INTERVAL = 32  # clips (latent frames) per group: a key latent frame every 32, so a stream can be cut there


def model_identity(model: torch.nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the model's state dict."""
    sha = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        sha.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


@attrs.frozen
class CodecModel:
    """A model ready to code: its weights' identity (its code prior lives on the model)."""

    model: torch.nn.Module
    config: object
    identity: str
    checkpoint: str = ""
    _latents: dict = attrs.field(factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return self.model.last_layer.device

    @property
    def chunk_frames(self) -> int:
        """Frames per model call: ``sequence_length`` rounded up to whole clips."""
        per_clip = self.model.frames_per_clip
        return per_clip * math.ceil(self.config.data_args.sequence_length / per_clip)

    @property
    def clips_per_chunk(self) -> int:
        return self.chunk_frames // self.model.frames_per_clip

    @torch.no_grad()
    def latent(self, padded_size: tuple) -> tuple:
        """``(indices are a list, index shape per level for one clip)`` at ``padded_size``."""
        if padded_size not in self._latents:
            probe = torch.zeros(1, self.model.frames_per_clip, 3, *padded_size, device=self.device)
            indices = self.model.encode_clips(probe)
            self._latents[padded_size] = (isinstance(indices, (list, tuple)),
                                          [tuple(t.shape) for t in as_level_list(indices)])
        return self._latents[padded_size]


def load_codec_model(checkpoint: str, device="cpu", allow_unsafe: bool = False) -> CodecModel:
    model, config, ckpt = model_from_checkpoint(checkpoint, device, allow_unsafe)
    if model.output_channels != 3:
        raise CodecError(f"{checkpoint}: the codec handles RGB models; this one has {model.output_channels} channels")
    model.load_code_prior(ckpt.get("code_prior"), checkpoint)
    return CodecModel(model, config, model_identity(model), checkpoint)


# -- frames <-> clips -----------------------------------------------------------

def _round_up(value: int, multiple: int) -> int:
    return multiple * math.ceil(value / multiple)


def pad_chunk(frames: np.ndarray, padded_size: tuple, frames_per_clip: int) -> np.ndarray:
    """Replicate the last row, column and frame out to ``padded_size`` and whole clips."""
    count, height, width = frames.shape[:3]
    extra = _round_up(count, frames_per_clip) - count
    pads = ((0, extra), (0, padded_size[0] - height), (0, padded_size[1] - width), (0, 0))
    return np.pad(frames, pads, mode="edge")


def to_clips(frames: np.ndarray, frames_per_clip: int, device) -> torch.Tensor:
    """uint8 frames ``(n * d, H, W, 3)`` as clips ``(n, d, 3, H, W)`` in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return rearrange(x, "(n d) h w c -> n d c h w", d=frames_per_clip).float() / 255.0


def to_frames(clips: torch.Tensor) -> np.ndarray:
    """Clips ``(n, d, 3, H, W)`` in [0, 1] as uint8 frames ``(n * d, H, W, 3)``."""
    x = (clips.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return rearrange(x, "n d c h w -> (n d) h w c").cpu().numpy()


def _chunks(frames: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Stacks of ``size`` frames (the last may be shorter), every frame RGB uint8 shaped like the first."""
    batch, shape = [], None
    for number, frame in enumerate(frames, start=1):
        shape = shape or frame.shape
        if frame.shape != shape or len(shape) != 3 or shape[2] != 3 or frame.dtype != np.uint8:
            raise CodecError(f"frame {number} is {frame.dtype} {frame.shape}: expected RGB uint8 frames "
                             f"shaped like the first, {shape}")
        batch.append(frame)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


# -- compress -------------------------------------------------------------------

def _kinds(codec: CodecModel, coder: str, level: int, streams: int) -> list:
    kinds = available_kinds(codec.model.code_prior, level, streams)
    if coder == "auto":
        return kinds
    if coder not in kinds:
        reason = "has no code prior" if coder == "prior" else "has no fitted temporal statistics"
        raise CodecError(f"coder {coder!r}: {codec.checkpoint or 'the model'} {reason} "
                         f"(run `python -m codec fit-prior`); available: {', '.join(kinds)}")
    return [coder]


def _keep_rate(levels: list, depths: list, rate: Optional[int]) -> list:
    """The first ``rate`` residual levels of each level that has them."""
    if rate is None:
        return levels
    if not any(depths):
        raise CodecError(f"--rate {rate}: the model has no residual quantizer levels to drop")
    if rate < 1:
        raise CodecError(f"--rate {rate}: expected at least 1 residual level")
    return [level[:, :rate] if depth else level for level, depth in zip(levels, depths)]


def _level_encoders(codec: CodecModel, levels: list, coder: str) -> list:
    """One ``LevelEncoder`` per level, for the residual depth the first indices show."""
    model, encoders = codec.model, []
    for i, (level, has_depth) in enumerate(zip(levels, model.code_depths)):
        depth = level.shape[1] if has_depth else 0
        kinds = _kinds(codec, coder, i, max(depth, 1))
        encoders.append(LevelEncoder(model.vocab_sizes[i], model.code_factors[i], depth, kinds, model.code_prior, i))
    return encoders


@torch.no_grad()
def compress(codec: CodecModel, frames: Iterable[np.ndarray], fps: float, coder: str = "auto",
             rate: Optional[int] = None, key_interval: int = KEY_INTERVAL, total: Optional[int] = None,
             progress: bool = False, times: Optional[dict] = None) -> bytes:
    """The ``.vqv`` bytes of RGB uint8 frames (an array ``(T, H, W, 3)`` or any iterable of frames).

    ``coder``: ``auto`` (the cheapest kind per level) or one of ``codec.context.KINDS``;
    ``rate``: residual levels kept; ``times`` (a dict) receives the seconds spent in the
    model (``model``) and in entropy coding (``entropy``).
    """
    if coder != "auto" and coder not in KINDS:
        raise CodecError(f"coder {coder!r}: expected auto or one of {', '.join(KINDS)}")
    if not 1 <= key_interval <= MAX_KEY_INTERVAL:
        raise CodecError(f"key interval {key_interval}: expected 1 to {MAX_KEY_INTERVAL} clips")
    model = codec.model.eval()
    per_clip, factor, per_chunk = model.frames_per_clip, model.spatial_factor, codec.clips_per_chunk
    if per_chunk > MAX_KEY_INTERVAL:
        raise CodecError(f"sequence_length {codec.chunk_frames}: a group holds at most {MAX_KEY_INTERVAL} clips")
    key_interval = min(_round_up(key_interval, per_chunk), MAX_KEY_INTERVAL // per_chunk * per_chunk)
    depths = model.code_depths
    spent = {"model": 0.0, "entropy": 0.0}
    encoders, pending, pending_clips, count, size = None, [], 0, 0, None

    def code_groups(final: bool):
        nonlocal pending, pending_clips
        while pending_clips >= key_interval or (final and pending_clips):
            clips = min(key_interval, pending_clips)
            start = time.perf_counter()
            joined = [np.concatenate(level) for level in zip(*pending)]
            split = [len(level) * clips // pending_clips for level in joined]
            for encoder, level, cut in zip(encoders, joined, split):
                encoder.add_group(level[:cut], clips)
            pending = [[level[cut:] for level, cut in zip(joined, split)]]
            pending_clips -= clips
            spent["entropy"] += time.perf_counter() - start

    with tqdm(total=total, desc="compress", unit="frame", disable=not progress) as bar:
        for chunk in _chunks(frames, codec.chunk_frames):
            if size is None:
                size = tuple(chunk.shape[1:3])
                padded_size = (_round_up(size[0], factor), _round_up(size[1], factor))
            start = time.perf_counter()
            padded = pad_chunk(chunk, padded_size, per_clip)
            levels = as_level_list(model.encode_clips(to_clips(padded, per_clip, codec.device)))
            levels = _keep_rate([t.cpu().numpy() for t in levels], depths, rate)
            spent["model"] += time.perf_counter() - start
            encoders = encoders or _level_encoders(codec, levels, coder)
            pending.append(levels)
            pending_clips += len(padded) // per_clip
            count += len(chunk)
            code_groups(final=False)
            bar.update(len(chunk))
    if not count:
        raise CodecError("no frames to compress")
    code_groups(final=True)
    start = time.perf_counter()
    finished = [encoder.finish() for encoder in encoders]
    spent["entropy"] += time.perf_counter() - start
    infos = tuple(info for info, _ in finished)
    uses_prior = any(info.coder in PRIOR_KINDS for info in infos)
    header = Header(
        model_type=codec.config.model_type, model_hash=codec.identity,
        prior_hash=model.code_prior.digest if uses_prior else None, frames=count, fps=float(fps), size=size,
        padded_size=padded_size, frames_per_clip=per_clip, chunk_frames=codec.chunk_frames,
        clips=-(-count // per_clip), key_interval=key_interval, levels=infos,
        checkpoint_hint=codec.checkpoint or None,
    )
    if times is not None:
        times.update(spent)
    return pack(header, [list(group) for group in zip(*(words for _, words in finished))])


# -- decompress -----------------------------------------------------------------

def check_model(header: Header, codec: CodecModel, name: str) -> None:
    """Refuse a checkpoint (or prior) other than the one ``name`` was coded with, and any header
    field that disagrees with it, naming both."""
    model = codec.model
    if header.model_hash != codec.identity:
        raise CodecError(
            f"{name} was coded with model weights {header.model_hash[:16]} ({header.model_type}), "
            f"but {codec.checkpoint or 'the given model'} has {codec.identity[:16]}: "
            f"decompress with the checkpoint it was coded with"
            + (f" ({header.checkpoint_hint})" if header.checkpoint_hint else ""))

    def expect(field: str, value, wanted) -> None:
        if value != wanted:
            raise CodecError(f"{name}: header field {field} = {value!r}, but the checkpoint's model has {wanted!r}")

    expect("model_type", header.model_type, codec.config.model_type)
    expect("frames_per_clip", header.frames_per_clip, model.frames_per_clip)
    expect("chunk_frames", header.chunk_frames, codec.chunk_frames)
    factor = model.spatial_factor
    expect("padded_size", header.padded_size, tuple(_round_up(s, factor) for s in header.size))
    expect("levels (count)", len(header.levels), len(model.vocab_sizes))
    shapes = codec.latent(header.padded_size)[1]
    for i, (level, shape, depth) in enumerate(zip(header.levels, shapes, model.code_depths)):
        expect(f"levels[{i}].vocab_size", level.vocab_size, model.vocab_sizes[i])
        expect(f"levels[{i}].factors", list(level.factors), [int(f) for f in model.code_factors[i]])
        if depth and not 1 <= level.depth <= shape[1]:
            raise CodecError(f"{name}: header field levels[{i}].depth = {level.depth}: expected 1 to the "
                             f"{shape[1]} residual levels of the checkpoint's model")
        if depth:
            shape = shape[:1] + (level.depth,) + shape[2:]
        else:
            expect(f"levels[{i}].depth", level.depth, 0)
        expect(f"levels[{i}].clip_shape", level.clip_shape, shape)
        if level.coder in PRIOR_KINDS and level.coder not in available_kinds(model.code_prior, i, max(level.depth, 1)):
            raise CodecError(f"{name}: level {i} was coded with the code prior ({level.coder}), "
                             f"but {codec.checkpoint or 'the model'} has none that fits")
    if header.prior_hash is not None:
        held = model.code_prior.digest if model.code_prior is not None else None
        if held != header.prior_hash:
            raise CodecError(f"{name} was coded with code prior {header.prior_hash[:16]}, but {codec.checkpoint} "
                             + (f"holds code prior {held[:16]} (refitted since?)" if held else "has no code prior"))


def decode_indices(codec: CodecModel, data: bytes, name: str = "input") -> tuple:
    """``(header, indices per level)`` of a ``.vqv`` file's bytes (the whole clip), after every check."""
    header, streams = unpack(data, name)
    check_model(header, codec, name)
    groups = [_decode_group(codec, header, streams, g, name) for g in range(header.groups)]
    return header, [np.concatenate(level) for level in zip(*groups)]


def _decode_group(codec: CodecModel, header: Header, streams: list, group: int, name: str) -> list:
    clips = len(header.group_clips(group))
    return [decode_group(level, streams[group][i], clips, codec.model.code_prior, i, group, name)
            for i, level in enumerate(header.levels)]


@torch.no_grad()
def iter_decoded(codec: CodecModel, data: bytes, name: str = "input", progress: bool = False,
                 times: Optional[dict] = None) -> tuple:
    """``(header, iterator of decoded RGB uint8 frame chunks (n, H, W, 3))``: checked, decoded group by group."""
    header, streams = unpack(data, name)
    check_model(header, codec, name)
    return header, _frames(codec, header, streams, name, progress, times if times is not None else {})


def _frames(codec, header, streams, name, progress, times) -> Iterator[np.ndarray]:
    model = codec.model.eval()
    as_list = codec.latent(header.padded_size)[0]
    height, width = header.size
    remaining, per_chunk = header.frames, codec.clips_per_chunk
    times.update(model=0.0, entropy=0.0)
    with tqdm(total=header.frames, desc="decompress", unit="frame", disable=not progress) as bar:
        for group in range(header.groups):
            start = time.perf_counter()
            levels = _decode_group(codec, header, streams, group, name)
            times["entropy"] += time.perf_counter() - start
            clips = len(header.group_clips(group))
            for first in range(0, clips, per_chunk):
                start = time.perf_counter()
                last = min(first + per_chunk, clips)
                chunk = [torch.from_numpy(level[first * info.clip_shape[0]: last * info.clip_shape[0]]).to(codec.device)
                         for level, info in zip(levels, header.levels)]
                frames = to_frames(model.decode_clips(chunk if as_list else chunk[0], last - first))
                frames = frames[:remaining, :height, :width]
                times["model"] += time.perf_counter() - start
                remaining -= len(frames)
                bar.update(len(frames))
                yield frames


def decompress(codec: CodecModel, data: bytes, name: str = "input", progress: bool = False) -> tuple:
    """``(frames (T, H, W, 3) uint8, header)`` of a ``.vqv`` file's bytes."""
    header, chunks = iter_decoded(codec, data, name, progress)
    return np.concatenate(list(chunks)), header


def read_bitstream(path: str) -> bytes:
    if not os.path.isfile(path):
        raise CodecError(f"{path}: no such file")
    with open(path, "rb") as fh:
        return fh.read()
