"""``model_type: CausalVideoVQ`` / ``causal_video``: the JSON ``model_args`` and the adapter.

The adapter folds the trainer's ``(batch*sequence, C, H, W)`` frames into clips of
``sequence_length`` frames (one frame each with ``use_images: true``), so the codec's
clips and the training clips are the same length. Width and depth names are
taming-transformers' ``ddconfig`` names, whose 2D checkpoints inflate into this model.
The quantizer is any of ``models.quantizers`` (FSQ by default).
"""
import math
from typing import Literal, Optional, Union

import attrs
import torch
from einops import rearrange

from core.config_schema import check, non_negative, open_unit, positive, require
from models.adapter_base import BaseVqVaeAdapter, VQOutput
from models.causal_video.inflation import inflate_state_dict
from models.causal_video.model import CausalVideoVQ
from models.quantizers import FamilySettings, QuantizerSpec, build_quantizers, fsq_levels, lfq_bits
from models.quantizers import spec_field
from models.taming.adapter import GroupNormWidths

DEFAULT_QUANTIZER = QuantizerSpec("fsq")  # levels from vocab_size: 4096 -> [8, 8, 8, 8]


@attrs.frozen
class CausalVideoArgs(GroupNormWidths):
    """``model_args`` of CausalVideoVQ; the field names are the JSON keys."""

    # keys of other families -> what this one uses instead (they are ignored with a warning)
    __config_equivalents__ = {"group_count": "spatial_compression and ch_mult", "nb_levels": "ch_mult",
                              "n_hid": "ch", "res_channels": "ch", "n_blk_per_group": "num_res_blocks",
                              "nb_res_layers": "num_res_blocks", "ddconfig": "ch, ch_mult, num_res_blocks and "
                              "z_channels", "beta": "commitment_cost"}

    spatial_compression: Literal[4, 8, 16] = 8
    temporal_compression: Literal[1, 2, 4, 8] = 4
    ch: int = attrs.field(default=64, validator=positive)  # base width
    # width multiplier per resolution: log2(spatial_compression) + 1 entries
    ch_mult: list[int] = attrs.field(factory=lambda: [1, 2, 2, 4],
                                     validator=check(lambda v: all(m > 0 for m in v), "a list of positive integers"))
    num_res_blocks: int = attrs.field(default=2, validator=positive)
    z_channels: int = attrs.field(default=16, validator=positive)
    attention: bool = True  # per-frame self-attention at the lowest resolution (blocks and middle)
    dropout: float = attrs.field(default=0.0, validator=open_unit)
    # GroupNorm groups; null: 32, or the largest count <= 32 that divides every width (tiny models)
    num_groups: Optional[int] = attrs.field(default=None, validator=positive)
    input_channels: int = attrs.field(default=3, validator=positive)
    # size of the index alphabet (FSQ: levels whose product is closest, when quantizer names none)
    vocab_size: int = attrs.field(default=4096, validator=check(lambda v: v >= 2, "an integer >= 2"))
    # code dimension; null: one channel per FSQ level or LFQ bit (no projection), z_channels for codebooks
    n_init: Optional[int] = attrs.field(default=None, validator=positive)
    commitment_cost: float = attrs.field(default=0.25, validator=non_negative)
    decay: float = attrs.field(default=0.99, validator=open_unit)  # EMA codebooks (ema, residual_vq, sinkhorn)
    # restart codes whose running share falls below this fraction of N/K (models.quantizers.usage); 0: never
    dead_code_threshold: float = attrs.field(default=1.0, validator=non_negative)
    # null: fsq; or a name / {"type": ..., options} (models.quantizers)
    quantizer: Union[None, str, dict] = attrs.field(default=None, converter=spec_field)

    @property
    def quantizer_spec(self) -> QuantizerSpec:
        return self.quantizer or DEFAULT_QUANTIZER

    @property
    def code_dim(self) -> int:
        """Channels the quantizer sees: ``n_init``, else what the quantizer needs without a projection."""
        spec = self.quantizer_spec
        if self.n_init:
            return self.n_init
        if spec.type == "fsq":
            return len(spec.levels or fsq_levels(self.vocab_size))
        if spec.type == "lfq":
            return lfq_bits(self.vocab_size)
        return self.z_channels

    def __attrs_post_init__(self):
        levels = int(math.log2(self.spatial_compression)) + 1
        require(len(self.ch_mult) == levels,
                f"ch_mult = {self.ch_mult}: expected {levels} entries (log2(spatial_compression "
                f"{self.spatial_compression}) + 1, one per resolution)")
        require(self.temporal_compression <= self.spatial_compression,
                f"temporal_compression = {self.temporal_compression}: expected at most spatial_compression "
                f"({self.spatial_compression}); time is halved only at the spatial downsamplings")
        self.check_groups()


def build_model(args: CausalVideoArgs) -> CausalVideoVQ:
    settings = FamilySettings(commitment_cost=args.commitment_cost, decay=args.decay,
                              dead_code_threshold=args.dead_code_threshold)
    (quantizer,) = build_quantizers([args.quantizer_spec], args.code_dim, args.vocab_size, settings)
    return CausalVideoVQ(ch=args.ch, ch_mult=list(args.ch_mult), num_res_blocks=args.num_res_blocks,
                         z_channels=args.z_channels, in_channels=args.input_channels,
                         temporal_compression=args.temporal_compression, attention=args.attention,
                         quantizer=quantizer, code_dim=args.code_dim, dropout=args.dropout, num_groups=args.groups)


class CausalVideoAdapter(BaseVqVaeAdapter):
    """CausalVideoVQ behind the common interface; clips of ``frames_per_clip`` frames."""

    args_class = CausalVideoArgs

    def __init__(self, args: CausalVideoArgs, config):
        super().__init__(args, config)
        self.clip_frames = 1 if config.use_images else config.data_args.sequence_length
        self.model = build_model(args)

    def _clips(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[0] % self.clip_frames:
            raise ValueError(f"CausalVideoVQ expects frames shaped (batch*{self.clip_frames}, C, H, W) "
                             f"(clips of {self.clip_frames} frames), got {tuple(x.shape)}")
        return rearrange(x, "(b t) c h w -> b c t h w", t=self.clip_frames)

    @staticmethod
    def _frames(clips: torch.Tensor) -> torch.Tensor:
        return rearrange(clips, "b c t h w -> (b t) c h w")

    def forward(self, x: torch.Tensor) -> VQOutput:
        recon, result = self.model(self._clips(x))
        return VQOutput(result.loss, self._frames(recon), result.stats["perplexity"], result.indices)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices ``(clips, latent frames, H/s, W/s)`` (a depth axis after the clips for residual VQ)."""
        return self.model.encode(self._clips(x))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self._frames(self.model.decode(indices, frames=self.clip_frames))

    def adopt_weights(self, state: dict, source: str) -> dict:
        """A 2D Taming model's weights inflated into this model (a CausalVideoVQ's own pass unchanged)."""
        return inflate_state_dict(state, self.state_dict(), source)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.model.decoder.conv_out.weight

    @property
    def quantizers(self) -> list:
        return [self.model.quantize]

    @property
    def spatial_factor(self) -> int:
        return self.args.spatial_compression

    @property
    def temporal_factor(self) -> int:
        return self.args.temporal_compression

    @property
    def frames_per_clip(self) -> int:
        return self.clip_frames

    @property
    def output_channels(self) -> int:
        return self.args.input_channels

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        args = config.model_args
        height, width = config.data_args.frame_size
        require(height % args.spatial_compression == 0 and width % args.spatial_compression == 0,
                f"data_args.resolution = {config.data_args.resolution!r}: expected height and width "
                f"multiples of model_args.spatial_compression ({args.spatial_compression})")
        require(not config.train_args.channels_last,
                "train_args.channels_last = true: expected false for CausalVideoVQ (its convolutions are 3D)")
