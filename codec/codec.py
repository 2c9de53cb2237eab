"""A trained checkpoint as a video codec: ``compress()`` and ``decompress()``.

compress:   RGB frames --pad (replicate) to whole clips and multiples of the spatial
            factor--> [-1, 1] --model.encode, a chunk of ``sequence_length`` frames at a
            time--> code indices per level --range coder--> header + payload bytes
decompress: bytes --CRC, model hash, prior hash checked--> indices --model.decode, the
            same chunks--> frames, trimmed back to the original count and size

The bitstream names the model by a hash of its weights, so decoding needs only the
bytes and the checkpoint, and refuses any other checkpoint.
"""
import hashlib
import logging
import math
import os
from typing import Iterable, Iterator, Optional

import attrs
import numpy as np
import torch
from einops import rearrange
from tqdm import tqdm

from codec.bitstream import CodecError, Header, LevelInfo, pack, unpack
from codec.entropy import AdaptiveCoder, StaticCoder, empirical_entropy
from codec.prior import CODE_PRIOR_KEY, CodePrior
from core.indices import as_level_list
from models.loaders import model_from_checkpoint

logger = logging.getLogger(__name__)

PRIOR_SMOOTHING = 0.5  # pseudo-count per code added to the prior's counts
ADAPTIVE_ALPHA = 0.5  # pseudo-count per code of the adaptive model (Krichevsky-Trofimov)
ADAPTIVE_BLOCK = 256  # symbols coded between updates of the adaptive model


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
    """A model ready to code: its weights' identity and its code prior (if fitted)."""

    model: torch.nn.Module
    config: object
    identity: str
    prior: Optional[CodePrior] = None
    checkpoint: str = ""

    @property
    def device(self) -> torch.device:
        return self.model.last_layer.device

    @property
    def chunk_frames(self) -> int:
        """Frames per model call: ``sequence_length`` rounded up to whole clips."""
        per_clip = self.model.frames_per_clip
        return per_clip * math.ceil(self.config.data_args.sequence_length / per_clip)


def load_codec_model(checkpoint: str, device="cpu", allow_unsafe: bool = False) -> CodecModel:
    model, config, ckpt = model_from_checkpoint(checkpoint, device, allow_unsafe)
    if model.output_channels != 3:
        raise CodecError(f"{checkpoint}: the codec handles RGB models; this one has {model.output_channels} channels")
    prior = None
    if ckpt.get(CODE_PRIOR_KEY) is not None:
        prior = CodePrior.from_checkpoint(ckpt[CODE_PRIOR_KEY], model.vocab_sizes, checkpoint)
    return CodecModel(model, config, model_identity(model), prior, checkpoint)


# -- frames <-> model tensors -------------------------------------------------

def _round_up(value: int, multiple: int) -> int:
    return multiple * math.ceil(value / multiple)


def _pad_chunk(frames: np.ndarray, padded_size: tuple, frames_per_clip: int) -> np.ndarray:
    """Replicate the last row, column and frame out to ``padded_size`` and whole clips."""
    count, height, width = frames.shape[:3]
    extra = _round_up(count, frames_per_clip) - count
    pads = ((0, extra), (0, padded_size[0] - height), (0, padded_size[1] - width), (0, 0))
    return np.pad(frames, pads, mode="edge")


def _to_model(frames: np.ndarray, device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return (rearrange(x, "d h w c -> d c h w").float() / 255.0 - 0.5) / 0.5


def _to_frames(x: torch.Tensor) -> np.ndarray:
    x = ((x.float() * 0.5 + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return rearrange(x, "d c h w -> d h w c").cpu().numpy()


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

def _coders(coder: dict, codec: CodecModel) -> list:
    """One entropy coder per level, as the header's coder parameters say."""
    sizes = codec.model.vocab_sizes
    if coder["kind"] == "adaptive":
        return [AdaptiveCoder(v, coder["alpha"], coder["block"]) for v in sizes]
    if coder["kind"] == "prior":
        return [StaticCoder(codec.prior.weights(level, coder["smoothing"])) for level in range(len(sizes))]
    if coder["kind"] == "uniform":
        return [StaticCoder(np.ones(v)) for v in sizes]
    raise CodecError(f"unknown entropy coder {coder['kind']!r}")


def _coder_params(codec: CodecModel, adaptive: bool) -> dict:
    if adaptive:
        return {"kind": "adaptive", "alpha": ADAPTIVE_ALPHA, "block": ADAPTIVE_BLOCK}
    if codec.prior is not None:
        return {"kind": "prior", "smoothing": PRIOR_SMOOTHING, "prior_hash": codec.prior.digest}
    logger.warning("%s has no code prior: coding indices uniformly (log2 of the codebook size each); "
                   "run `python -m codec fit-prior --checkpoint %s --data DIR` or compress with --adaptive",
                   codec.checkpoint or "the model", codec.checkpoint or "CKPT")
    return {"kind": "uniform"}


@torch.no_grad()
def encode_frames(codec: CodecModel, frames: Iterable[np.ndarray], total: Optional[int] = None,
                  progress: bool = False) -> dict:
    """Code indices of RGB uint8 frames, padded to what the model needs.

    Returns ``frames``, ``size``, ``padded_size``, ``clips``, ``indices`` (an int64 array
    per level, clips stacked along the first axis) and ``as_list`` (the model's index type).
    """
    model = codec.model
    model.eval()
    per_clip, factor = model.frames_per_clip, model.spatial_factor
    chunks, count, size, clips, as_list = [], 0, None, 0, False
    with tqdm(total=total, desc="encode", unit="frame", disable=not progress) as bar:
        for chunk in _chunks(frames, codec.chunk_frames):
            if size is None:
                size = tuple(chunk.shape[1:3])
                padded_size = (_round_up(size[0], factor), _round_up(size[1], factor))
            padded = _pad_chunk(chunk, padded_size, per_clip)
            indices = model.encode(_to_model(padded, codec.device))
            as_list = isinstance(indices, (list, tuple))
            chunks.append([t.cpu().numpy().astype(np.int64) for t in as_level_list(indices)])
            count += len(chunk)
            clips += len(padded) // per_clip
            bar.update(len(chunk))
    if not count:
        raise CodecError("no frames to compress")
    levels = [np.concatenate(level) for level in zip(*chunks)]
    return dict(frames=count, size=size, padded_size=padded_size, clips=clips, indices=levels, as_list=as_list)


def compress(codec: CodecModel, frames: Iterable[np.ndarray], fps: float, adaptive: bool = False,
             total: Optional[int] = None, progress: bool = False) -> bytes:
    """The ``.vqv`` bytes of RGB uint8 frames (an array ``(T, H, W, 3)`` or any iterable of frames)."""
    coded = encode_frames(codec, frames, total, progress)
    coder = _coder_params(codec, adaptive)
    levels, streams = [], []
    for indices, vocab_size, entropy_coder in zip(coded["indices"], codec.model.vocab_sizes, _coders(coder, codec)):
        clip_shape = (indices.shape[0] // coded["clips"],) + tuple(indices.shape[1:])
        words = entropy_coder.encode(indices)
        streams.append(words)
        levels.append(LevelInfo(vocab_size, clip_shape, len(words), empirical_entropy(indices, vocab_size)))
    header = Header(
        model_type=codec.config.model_type, model_hash=codec.identity, frames=coded["frames"], fps=float(fps),
        size=coded["size"], padded_size=coded["padded_size"], frames_per_clip=codec.model.frames_per_clip,
        chunk_frames=codec.chunk_frames, clips=coded["clips"], levels=tuple(levels), coder=coder,
        indices_as_list=coded["as_list"], checkpoint_hint=codec.checkpoint or None,
    )
    return pack(header, streams)


# -- decompress -----------------------------------------------------------------

def check_model(header: Header, codec: CodecModel, name: str) -> None:
    """Refuse a checkpoint (or prior) other than the one ``name`` was coded with, naming both."""
    if header.model_hash != codec.identity:
        raise CodecError(
            f"{name} was coded with model weights {header.model_hash[:16]} ({header.model_type}), "
            f"but {codec.checkpoint or 'the given model'} has {codec.identity[:16]}: "
            f"decompress with the checkpoint it was coded with"
            + (f" ({header.checkpoint_hint})" if header.checkpoint_hint else "")
        )
    if header.coder["kind"] == "prior":
        expected = header.coder["prior_hash"]
        if codec.prior is None:
            raise CodecError(f"{name} was coded with code prior {expected[:16]}, "
                             f"but {codec.checkpoint} has no code prior")
        if codec.prior.digest != expected:
            raise CodecError(f"{name} was coded with code prior {expected[:16]}, but {codec.checkpoint} "
                             f"holds code prior {codec.prior.digest[:16]} (refitted since?)")


def decode_indices(codec: CodecModel, data: bytes, name: str = "input") -> tuple:
    """``(header, indices per level)`` of a ``.vqv`` file's bytes, after every check."""
    header, streams = unpack(data, name)
    check_model(header, codec, name)
    indices = []
    for level, stream, entropy_coder in zip(header.levels, streams, _coders(header.coder, codec)):
        symbols = entropy_coder.decode(stream, header.clips * level.indices_per_clip)
        shape = (header.clips * level.clip_shape[0],) + tuple(level.clip_shape[1:])
        indices.append(symbols.astype(np.int64).reshape(shape))
    return header, indices


@torch.no_grad()
def iter_decoded(codec: CodecModel, header: Header, indices: list, progress: bool = False) -> Iterator[np.ndarray]:
    """Decoded RGB uint8 frames, a chunk ``(n, H, W, 3)`` at a time, trimmed to the original clip."""
    model = codec.model
    model.eval()
    clips_per_chunk = header.chunk_frames // header.frames_per_clip
    height, width = header.size
    remaining = header.frames
    with tqdm(total=header.frames, desc="decode", unit="frame", disable=not progress) as bar:
        for first in range(0, header.clips, clips_per_chunk):
            last = min(first + clips_per_chunk, header.clips)
            chunk = [torch.from_numpy(level[first * info.clip_shape[0]: last * info.clip_shape[0]]).to(codec.device)
                     for level, info in zip(indices, header.levels)]
            frames = _to_frames(model.decode(chunk if header.indices_as_list else chunk[0]))
            frames = frames[:remaining, :height, :width]
            remaining -= len(frames)
            bar.update(len(frames))
            yield frames


def decompress(codec: CodecModel, data: bytes, name: str = "input", progress: bool = False) -> tuple:
    """``(frames (T, H, W, 3) uint8, header)`` of a ``.vqv`` file's bytes."""
    header, indices = decode_indices(codec, data, name)
    return np.concatenate(list(iter_decoded(codec, header, indices, progress))), header


def read_bitstream(path: str) -> bytes:
    if not os.path.isfile(path):
        raise CodecError(f"{path}: no such file")
    with open(path, "rb") as fh:
        return fh.read()
