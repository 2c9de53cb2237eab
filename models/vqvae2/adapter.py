"""``model_type: VQVAE2`` / ``vqvae2``: the JSON ``model_args`` and the adapter around ``VQVAE``.

The shared JSON names are translated to ``VQVAE``'s own in one table,
``MODEL_ARG_NAMES``; every other field keeps its name. ``scaling_rates`` is the
config's top-level key (one power of 2 per level, bottom level first).
"""
import math
from typing import Any, Union

import attrs
import torch

from models.adapter_base import BaseVqVaeAdapter, VQOutput
from models.quantizers import spec_field
from models.vqvae2.vqvae import VQVAE
from core.config_schema import Invalid, check, non_negative, open_unit, positive

# JSON model_args name -> VQVAE argument name
MODEL_ARG_NAMES = {
    "input_channels": "in_channels",
    "output_channels": "out_channels",
    "n_hid": "hidden_channels",
    "n_init": "embed_dim",
    "vocab_size": "nb_entries",
}


@attrs.frozen
class VQVAEArgs:
    """``model_args`` of VQVAE2; the field names are the JSON keys."""

    # keys of other families -> what this one uses instead (they are ignored with a warning)
    __config_equivalents__ = {"group_count": "nb_levels and scaling_rates", "n_blk_per_group": "nb_res_layers",
                              "beta": "commitment_cost",
                              "ddconfig": "n_hid, res_channels, nb_res_layers, nb_levels and scaling_rates"}

    input_channels: int = attrs.field(default=3, validator=positive)
    output_channels: int = attrs.field(default=3, validator=positive)
    n_hid: int = attrs.field(default=128, validator=check(lambda v: v >= 2, "an integer >= 2"))
    res_channels: int = attrs.field(default=32, validator=positive)
    nb_res_layers: int = attrs.field(default=2, validator=non_negative)
    nb_levels: int = attrs.field(default=2, validator=positive)
    n_init: int = attrs.field(default=64, validator=positive)  # code dimension
    vocab_size: int = attrs.field(default=512, validator=check(lambda v: v >= 2, "an integer >= 2"))
    decay: float = attrs.field(default=0.99, validator=open_unit)
    commitment_cost: float = attrs.field(default=0.25, validator=non_negative)
    # restart codes whose running share of the vectors falls below this fraction of the
    # expected share N/K (capped at 0.1, see models.quantizers.usage); 0: never
    dead_code_threshold: float = attrs.field(default=1.0, validator=non_negative)
    # null: the family's default; a name, {"type": ..., options}, or a list of those, one per level
    quantizer: Union[None, str, dict, list[Union[str, dict]]] = attrs.field(default=None, converter=spec_field)


def model_kwargs(args: Any) -> dict:
    """Keyword arguments of the model: ``args``' fields under the model's names (``quantizer`` is passed apart)."""
    fields = attrs.asdict(args, recurse=False)
    return {MODEL_ARG_NAMES.get(name, name): value for name, value in fields.items() if name != "quantizer"}


def _is_power_of_2(rate: Any) -> bool:
    return isinstance(rate, int) and rate >= 1 and rate & (rate - 1) == 0


class VQVAEAdapter(BaseVqVaeAdapter):
    """VQVAE behind the common interface. Indices are a list per level, bottom level first."""

    args_class = VQVAEArgs
    model_class = VQVAE

    def __init__(self, args: VQVAEArgs, config):
        super().__init__(args, config)
        self.model = self.model_class(**model_kwargs(args), scaling_rates=list(config.scaling_rates),
                                      quantizer=args.quantizer)

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        rates, nb_levels = config.scaling_rates, config.model_args.nb_levels
        spec = config.model_args.quantizer
        if isinstance(spec, list) and len(spec) != nb_levels:
            raise Invalid(f"model_args.quantizer: {len(spec)} quantizers for model_args.nb_levels = {nb_levels}; "
                          "expected one for all levels, or one per level")
        expected = f"a list of model_args.nb_levels ({nb_levels}) powers of 2, the bottom level's downsampling first"
        if rates is None or not all(_is_power_of_2(rate) for rate in rates):
            raise Invalid(f"scaling_rates = {rates!r}: expected {expected}")
        if len(rates) != nb_levels:
            raise Invalid(f"scaling_rates = {rates!r}: expected one rate per level, model_args.nb_levels = {nb_levels}")
        factor = math.prod(rates)
        if any(side % factor for side in config.data_args.frame_size):
            raise Invalid(
                f"data_args.resolution = {config.data_args.resolution!r}: expected multiples of {factor}, "
                f"the product of scaling_rates {rates}"
            )

    def forward(self, x: torch.Tensor) -> VQOutput:
        return self.model(x)

    def encode(self, x: torch.Tensor) -> list:
        return self.model.encode(x)

    def decode(self, indices: list) -> torch.Tensor:
        return self.model.decode(indices)

    @property
    def encoder(self) -> torch.nn.Module:
        """The encoders of all levels (bottom first)."""
        return self.model.encoders

    @property
    def decoder(self) -> torch.nn.Module:
        """The decoders of all levels (bottom first; ``decoder[0]`` makes the frames)."""
        return self.model.decoders

    @property
    def output_channels(self) -> int:
        return self.args.output_channels

    @property
    def last_layer(self) -> torch.Tensor:
        return self.model.last_layer

    @property
    def quantizers(self) -> list:
        return list(self.model.quantizers)

    @property
    def spatial_factor(self) -> int:
        return self.model.spatial_factor
