"""The one interface every model family is seen through.

An adapter owns its inner model as a registered submodule named ``model`` and
overrides ``state_dict``/``load_state_dict`` prefixes away, so its keys equal the
inner model's keys and upstream checkpoints load unchanged.
"""
import abc
from typing import Any, ClassVar, Iterable, NamedTuple, Optional

import torch
from einops import rearrange
from torch import nn

from core.checkpoint import CheckpointError
from core.config_schema import Invalid
from core.indices import Indices, as_level_list
from core.pixels import to_model_range, to_pixel_range
from models.code_prior import CodePrior, CodePriorCounter


def check_rgb_channels(args: Any) -> None:
    """The data loader gives RGB frames: a model of other ``input_channels``/``output_channels`` cannot train on them."""
    for key in ("input_channels", "output_channels"):
        value = getattr(args, key, 3)
        if value != 3:
            raise Invalid(f"model_args.{key} = {value}: expected 3 (the data loader gives RGB frames)")


class VQOutput(NamedTuple):
    """What every adapter's ``forward`` returns; unpacks like the seed's 4-tuple."""

    vq_loss: torch.Tensor  # scalar
    recon: torch.Tensor  # shaped like the input, in [-1, 1]
    perplexity: torch.Tensor  # scalar, of this batch's code histogram
    indices: Indices  # integer code indices; a list per level for multi-level models


class BaseVqVaeAdapter(nn.Module, metaclass=abc.ABCMeta):
    """Uniform face of a VQ model: forward/encode/decode plus encoder/decoder handles.

    Subclasses set ``args_class`` (an attrs class validated from ``model_args``) and
    build ``self.model`` in ``__init__(args, config)``.
    """

    args_class: ClassVar[type]

    def __init__(self, args: Any, config: Any = None):
        super().__init__()
        self.args = args
        self.config = config
        # statistics of the codes for the codec's entropy coder; a plain attribute, so the
        # state-dict keys stay the inner model's (the checkpoint keeps it under ``code_prior``)
        self.code_prior: Optional[CodePrior] = None

    # -- the contract -------------------------------------------------------
    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> VQOutput:
        """``x``: ``(batch*sequence, C, H, W)`` in [-1, 1]."""

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> Indices:
        """Code indices of ``x``; never mutates model state (no EMA update, no BN stats)."""

    @abc.abstractmethod
    def decode(self, indices: Indices) -> torch.Tensor:
        """Frames in [-1, 1] from the indices ``encode`` returned."""

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.model.decoder

    @property
    def output_channels(self) -> int:
        return 3

    @property
    @abc.abstractmethod
    def last_layer(self) -> torch.Tensor:
        """Weight of the decoder's final layer (for the adaptive GAN weight)."""

    @property
    @abc.abstractmethod
    def quantizers(self) -> list:
        """The quantizer of each level (bottom level first), ``models.quantizers.Quantizer`` instances."""

    @property
    def vocab_sizes(self) -> list:
        """Size of the index alphabet per level (bottom level first)."""
        return [quantizer.vocab_size for quantizer in self.quantizers]

    @property
    def code_factors(self) -> list:
        """Per level, the mixed-radix digits an index splits into (see ``models.quantizers``)."""
        return [list(quantizer.code_factors) for quantizer in self.quantizers]

    @property
    @abc.abstractmethod
    def spatial_factor(self) -> int:
        """Frame height and width must be multiples of this (total downsampling)."""

    @property
    def frames_per_clip(self) -> int:
        """Frames the model codes together (VqVae2 folds ``sequence_length`` frames); 1 if per-frame."""
        return 1

    @property
    def temporal_factor(self) -> int:
        """Input frames per latent frame: the whole clip for a model that folds it, 1 for per-frame models."""
        return self.frames_per_clip

    @classmethod
    def train_defaults(cls, args: Any, train_args: dict) -> dict:
        """``train_args`` defaults of this family (under the user's own ``train_args``)."""
        return {}

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Cross-section checks of the whole config (raise ``core.config_schema.Invalid``)."""
        check_rgb_channels(config.model_args)

    # -- clips in, frames for the model ---------------------------------------------
    def clips_to_input(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips ``(b, d, h, w, c)`` (uint8, or float in [0, 1]) -> the model's input ``((b d), c, h, w)`` in [-1, 1].

        The one place where pixels become model inputs: the normalisation and the fold of
        a clip's frames into the batch belong to the model.
        """
        pixels = clips.float() / 255.0 if clips.dtype == torch.uint8 else clips.float()
        return to_model_range(rearrange(pixels, "b d h w c -> (b d) c h w"))

    def latent_shapes(self, frame_shape: tuple) -> list:
        """Index-tensor shape per level for one clip of frames shaped ``(d, C, H, W)``."""
        with torch.no_grad():
            was_training = self.training
            self.eval()
            indices = self.encode(torch.zeros(frame_shape, device=self.last_layer.device))
            self.train(was_training)
        return [tuple(t.shape) for t in as_level_list(indices)]

    def adopt_weights(self, state: dict, source: str) -> dict:
        """This model's state dict from the weights of a file (``train_args.init_from``): as they are,
        unless a family converts another's (CausalVideoVQ inflates 2D Taming kernels)."""
        return state

    # -- the codec's face (as CompressAI's models): clips in [0, 1], indices, the code prior --
    @property
    def code_depths(self) -> list:
        """Per level, the residual quantizers whose indices form the axis right after the batch
        axis, ``(b, depth, h, w)``; 0 for a level without that axis. ``decode`` accepts fewer."""
        return [quantizer.residual_depth for quantizer in self.quantizers]

    def encode_clips(self, clips: torch.Tensor) -> Indices:
        """Code indices of clips ``(b, d, C, H, W)`` in [0, 1]; this model's normalisation and clip fold."""
        return self.encode(to_model_range(rearrange(clips, "b d c h w -> (b d) c h w")))

    def decode_clips(self, indices: Indices, clips: int) -> torch.Tensor:
        """Clips ``(clips, d, C, H, W)`` in [0, 1] from the indices ``encode_clips`` gave."""
        frames = to_pixel_range(self.decode(indices).float()).clamp(0.0, 1.0)
        return rearrange(frames, "(b d) c h w -> b d c h w", b=clips)

    def whole_clips(self, frames: torch.Tensor) -> torch.Tensor:
        """Consecutive frames ``(T, C, H, W)`` as clips ``(n, frames_per_clip, C, H, W)``, the last
        clip filled by repeating the final frame."""
        extra = -len(frames) % self.frames_per_clip
        frames = torch.cat([frames, frames[-1:].expand(extra, *frames.shape[1:])]) if extra else frames
        return rearrange(frames, "(n d) c h w -> n d c h w", d=self.frames_per_clip)

    @torch.no_grad()
    def update_code_prior(self, sequences: Iterable[torch.Tensor], source: str = "") -> CodePrior:
        """Refit the code prior (CompressAI's ``update()``) on runs of consecutive frames
        ``(T, C, H, W)`` in [0, 1]; keeps it in ``code_prior`` and returns it."""
        counter = CodePriorCounter(self.code_factors, self.code_depths)
        was_training = self.training
        self.eval()
        try:
            for frames in sequences:
                clips = self.whole_clips(frames.to(self.last_layer.device))
                levels = as_level_list(self.encode_clips(clips))
                counter.observe([t.cpu().numpy() for t in levels], len(clips))
        finally:
            self.train(was_training)
        self.code_prior = counter.prior(source or "the given clips")
        return self.code_prior

    def code_prior_state(self) -> Optional[dict]:
        """The code prior as the checkpoint's ``code_prior`` entry (None when never fitted)."""
        return None if self.code_prior is None else self.code_prior.to_state()

    def load_code_prior(self, entry: Optional[dict], name: str = "checkpoint") -> None:
        """Adopt a checkpoint's ``code_prior`` entry (None: no prior); ``CheckpointError`` if it does not fit."""
        if entry is not None and not isinstance(entry, dict):
            raise CheckpointError(f"{name}: code_prior is malformed (a {type(entry).__name__})")
        self.code_prior = None if entry is None else CodePrior.from_state(entry, self.code_factors, name)

    # -- keys equal the inner model's keys ------------------------------------
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        return self.model.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)

    def trainable_parameters(self):
        """Parameters the autoencoder optimizer updates (EMA buffers are not parameters)."""
        return [p for p in self.parameters() if p.requires_grad]
