"""``model_type: VqVae`` / ``vq_vae`` / ``VqVae2``: the JSON ``model_args`` and the adapter around ``VqVae2``."""
from typing import Union

import attrs
import torch

from models.adapter_base import BaseVqVaeAdapter, VQOutput
from models.quantizers import spec_field
from models.vq_vae.vq_vae import VqVae2
from core.config_schema import check, non_negative, open_unit, positive, require


@attrs.frozen
class VqVae2Args:
    """``model_args`` of VqVae2; the field names are the JSON keys."""

    # keys of other families -> what this one uses instead (they are ignored with a warning)
    __config_equivalents__ = {"nb_levels": "group_count", "nb_res_layers": "n_blk_per_group",
                              "res_channels": "n_hid", "beta": "commitment_cost",
                              "ddconfig": "group_count, n_hid and n_blk_per_group"}

    group_count: int = attrs.field(default=4, validator=check(lambda v: 2 <= v <= 5, "an integer in [2, 5]"))
    n_hid: int = attrs.field(default=64, validator=positive)
    n_blk_per_group: int = attrs.field(default=2, validator=positive)
    vocab_size: int = attrs.field(default=1024, validator=check(lambda v: v >= 2, "an integer >= 2"))
    n_init: int = attrs.field(default=256, validator=positive)  # code dimension
    input_channels: int = attrs.field(default=3, validator=positive)
    output_channels: int = attrs.field(default=3, validator=positive)
    commitment_cost: float = attrs.field(default=0.25, validator=non_negative)
    decay: float = attrs.field(default=0.99, validator=open_unit)  # 0: learned codebook; > 0: EMA codebook
    # restart codes whose running share of the vectors falls below this fraction of the
    # expected share N/K (capped at 0.1, see models.quantizers.usage); 0: never
    dead_code_threshold: float = attrs.field(default=1.0, validator=non_negative)
    # null: 'ema' when decay > 0, else 'vq'; or a name / {"type": ..., options} (models.quantizers)
    quantizer: Union[None, str, dict] = attrs.field(default=None, converter=spec_field)

    def __attrs_post_init__(self):
        width = self.group_count * self.n_hid
        require(
            self.n_init % width == 0,
            f"n_init = {self.n_init}: expected a multiple of group_count * n_hid ({width}), "
            "the number of groups of the temporal convs",
        )


class VqVae2Adapter(BaseVqVaeAdapter):
    """VqVae2 behind the common interface; ``sequence_length`` comes from ``data_args``."""

    args_class = VqVae2Args

    def __init__(self, args: VqVae2Args, config):
        super().__init__(args, config)
        self.model = VqVae2(**attrs.asdict(args, recurse=False), sequence_length=config.data_args.sequence_length)

    def forward(self, x: torch.Tensor) -> VQOutput:
        return self.model(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.model.decode(indices)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.model.decoder.last_layer

    @property
    def quantizers(self) -> list:
        return [self.model.quantizer]

    @property
    def spatial_factor(self) -> int:
        return self.model.spatial_factor

    @property
    def frames_per_clip(self) -> int:
        return self.model.sequence_length

    @property
    def output_channels(self) -> int:
        return self.args.output_channels

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        factor = 2 ** (config.model_args.group_count - 1)
        height, width = config.data_args.frame_size
        require(
            height % factor == 0 and width % factor == 0,
            f"data_args.resolution = {config.data_args.resolution!r}: expected height and width "
            f"multiples of {factor} (2 ** (model_args.group_count - 1))",
        )
