"""The one interface every model family is seen through.

An adapter owns its inner model as a registered submodule named ``model`` and
overrides ``state_dict``/``load_state_dict`` prefixes away, so its keys equal the
inner model's keys and upstream checkpoints load unchanged.
"""
import abc
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from core.config_schema import Invalid
from core.indices import Indices, as_level_list


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
    #: True when training uses the Taming two-optimizer loss (VQLPIPSWithDiscriminator).
    uses_taming_loss: ClassVar[bool] = False

    def __init__(self, args: Any, config: Any = None):
        super().__init__()
        self.args = args
        self.config = config

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
    def vocab_sizes(self) -> list:
        """Codebook size per level (bottom level first)."""

    @property
    @abc.abstractmethod
    def spatial_factor(self) -> int:
        """Frame height and width must be multiples of this (total downsampling)."""

    @property
    def frames_per_clip(self) -> int:
        """Frames the model codes together (VqVae2 folds ``sequence_length`` frames); 1 if per-frame."""
        return 1

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Cross-section checks of the whole config (raise ``core.config_schema.Invalid``)."""
        check_rgb_channels(config.model_args)

    def latent_shapes(self, frame_shape: tuple) -> list:
        """Index-tensor shape per level for one clip of frames shaped ``(d, C, H, W)``."""
        with torch.no_grad():
            was_training = self.training
            self.eval()
            indices = self.encode(torch.zeros(frame_shape, device=self.last_layer.device))
            self.train(was_training)
        return [tuple(t.shape) for t in as_level_list(indices)]

    # -- keys equal the inner model's keys ------------------------------------
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        return self.model.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)

    def trainable_parameters(self):
        """Parameters the autoencoder optimizer updates (EMA buffers are not parameters)."""
        return [p for p in self.parameters() if p.requires_grad]
