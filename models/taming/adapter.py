"""``model_type: TamingVQGAN`` / ``taming_vqgan`` / ``VQGAN`` / ``EMAVQ``: the JSON ``model_args`` and the adapter.

``ddconfig`` and ``lossconfig`` are upstream's YAML sections under the same names (the
``params`` of ``lossconfig``, flattened); the shared names ``vocab_size`` and ``n_init``
become upstream's ``n_embed`` and ``embed_dim``. ``lossconfig`` is read as this family's
defaults of the shared loss keys of ``train_args`` (``LOSS_KEYS``): Taming trains with the
same loss as every family, configured as upstream configures it. With the defaults, the model is the one
of the official ``vqgan_imagenet_f16_1024`` release, whose checkpoint loads with strict keys.
"""
import math
from typing import Literal, Optional, Union

import attrs
import torch

from core.config import TrainArgs
from core.config_schema import check, non_negative, open_unit, positive, require
from models.adapter_base import BaseVqVaeAdapter, VQOutput
from models.quantizers import spec_field
from models.taming.vqgan import EMAVQ, VQModel

#: shared ``model_args`` name -> upstream constructor argument (written once, here)
TRANSLATION = {"vocab_size": "n_embed", "n_init": "embed_dim"}
#: upstream ``lossconfig`` name -> the shared ``train_args`` key it sets the default of
LOSS_KEYS = {
    "disc_start": "disc_start", "codebook_weight": "codebook_weight", "pixelloss_weight": "pixel_loss_factor",
    "disc_num_layers": "disc_layers", "disc_factor": "disc_factor", "disc_weight": "disc_weight",
    "perceptual_weight": "perceptual_loss_factor", "use_actnorm": "disc_actnorm", "disc_ndf": "disc_ndf",
    "disc_loss": "disc_loss",
}
#: upstream's choices that its lossconfig does not name: L1 + LPIPS, a discriminator step every
#: step at the autoencoder's learning rate, Adam betas (0.5, 0.9) for both optimizers
UPSTREAM_TRAINING = {"recon_loss": "l1", "use_perceptual": True, "disc_interval": 1,
                     "betas": [0.5, 0.9], "disc_beta1": 0.5, "disc_beta2": 0.9}

_AT_LEAST_ONE = check(lambda v: len(v) >= 1 and all(m > 0 for m in v), "a non-empty list of positive integers")


def default_num_groups(channel_counts: list) -> int:
    """Upstream's 32 GroupNorm groups, or the largest count <= 32 that divides every width (tiny models)."""
    common = math.gcd(*channel_counts)
    return max(g for g in range(1, 33) if common % g == 0)


class GroupNormWidths:
    """The GroupNorm groups of a model made of ``ch * m`` wide layers (``ch``, ``ch_mult``, ``num_groups``)."""

    @property
    def channel_counts(self) -> list:
        return sorted({self.ch, *(self.ch * m for m in self.ch_mult)})

    @property
    def groups(self) -> int:
        return self.num_groups or default_num_groups(self.channel_counts)

    def check_groups(self) -> None:
        require(all(c % self.groups == 0 for c in self.channel_counts),
                f"num_groups = {self.num_groups}: expected a divisor of every width {self.channel_counts}")


@attrs.frozen
class TamingDDConfig(GroupNormWidths):
    """Upstream's ``ddconfig`` (Encoder/Decoder), defaults of the f16 ImageNet releases."""

    ch: int = attrs.field(default=128, validator=positive)
    ch_mult: list[int] = attrs.field(factory=lambda: [1, 1, 2, 2, 4], validator=_AT_LEAST_ONE)
    num_res_blocks: int = attrs.field(default=2, validator=positive)
    attn_resolutions: list[int] = attrs.field(factory=lambda: [16])  # feature-map sizes that get self-attention
    z_channels: int = attrs.field(default=256, validator=positive)
    resolution: int = attrs.field(default=256, validator=positive)  # only places attention; any frame size works
    in_channels: int = attrs.field(default=3, validator=positive)
    out_ch: int = attrs.field(default=3, validator=positive)
    dropout: float = attrs.field(default=0.0, validator=open_unit)
    double_z: bool = False
    # GroupNorm groups; null: 32 as upstream, fewer when the widths of a tiny model need it
    num_groups: Optional[int] = attrs.field(default=None, validator=positive)

    def __attrs_post_init__(self):
        self.check_groups()
        require(self.in_channels == self.out_ch,
                f"out_ch = {self.out_ch}: expected in_channels ({self.in_channels}), the reconstruction is compared with the input")

    def as_upstream(self) -> dict:
        """The keyword dict upstream's Encoder/Decoder take."""
        fields = attrs.asdict(self)
        fields["num_groups"] = self.groups
        return fields


@attrs.frozen
class TamingLossConfig:
    """Upstream's ``VQLPIPSWithDiscriminator`` arguments and defaults."""

    disc_start: int = attrs.field(default=10000, validator=non_negative)  # upstream requires it; 10000 as in custom_vqgan.yaml
    codebook_weight: float = attrs.field(default=1.0, validator=non_negative)
    pixelloss_weight: float = attrs.field(default=1.0, validator=non_negative)
    disc_num_layers: int = attrs.field(default=3, validator=positive)
    disc_in_channels: int = attrs.field(default=3, validator=positive)
    disc_factor: float = attrs.field(default=1.0, validator=non_negative)
    disc_weight: float = attrs.field(default=1.0, validator=non_negative)
    perceptual_weight: float = attrs.field(default=1.0, validator=non_negative)
    use_actnorm: bool = False
    # accepted so upstream sections paste unchanged; training passes no conditioning input
    disc_conditional: bool = attrs.field(default=False, validator=check(lambda v: not v, "false (no conditioning input)"))
    disc_ndf: int = attrs.field(default=64, validator=positive)
    disc_loss: Literal["hinge", "vanilla"] = "hinge"


@attrs.frozen
class TamingArgs:
    """``model_args`` of the Taming family; the field names are the JSON keys."""

    # the shared channel names go to upstream's ddconfig
    __config_aliases__ = {"input_channels": "ddconfig.in_channels", "output_channels": "ddconfig.out_ch"}
    # keys of other families -> what this one uses instead (they are ignored with a warning)
    __config_equivalents__ = {"group_count": "ddconfig.ch_mult", "nb_levels": "ddconfig.ch_mult",
                              "n_hid": "ddconfig.ch", "res_channels": "ddconfig.ch",
                              "n_blk_per_group": "ddconfig.num_res_blocks", "nb_res_layers": "ddconfig.num_res_blocks",
                              "commitment_cost": "beta", "ch": "ddconfig.ch", "ch_mult": "ddconfig.ch_mult",
                              "num_res_blocks": "ddconfig.num_res_blocks", "z_channels": "ddconfig.z_channels",
                              "dropout": "ddconfig.dropout"}

    vocab_size: int = attrs.field(default=1024, validator=check(lambda v: v >= 2, "an integer >= 2"))  # n_embed
    n_init: int = attrs.field(default=256, validator=positive)  # embed_dim, the code dimension
    beta: float = attrs.field(default=0.25, validator=non_negative)
    legacy: bool = True  # upstream's loss weighting (VQModel): commitment 1, codebook beta
    decay: float = attrs.field(default=0.99, validator=open_unit)  # EMAVQ's codebook EMA
    variant: Optional[Literal["VQModel", "EMAVQ"]] = None  # null: EMAVQ when model_type is EMAVQ
    # restart codes whose running share of the vectors falls below this fraction of the
    # expected share N/K (capped at 0.1, see models.quantizers.usage); 0: never (upstream)
    dead_code_threshold: float = attrs.field(default=0.0, validator=non_negative)
    # null: upstream's codebook (vq, or ema for EMAVQ); or a name / {"type": ..., options} (models.quantizers)
    quantizer: Union[None, str, dict] = attrs.field(default=None, converter=spec_field)
    ddconfig: TamingDDConfig = attrs.field(factory=TamingDDConfig)
    lossconfig: TamingLossConfig = attrs.field(factory=TamingLossConfig)

    def __attrs_post_init__(self):
        require(self.lossconfig.disc_in_channels == self.ddconfig.out_ch,
                f"lossconfig.disc_in_channels = {self.lossconfig.disc_in_channels}: "
                f"expected ddconfig.out_ch ({self.ddconfig.out_ch})")


def resolve_variant(args: TamingArgs, model_type: Optional[str]) -> str:
    return args.variant or ("EMAVQ" if model_type == "EMAVQ" else "VQModel")


def build_model(args: TamingArgs, variant: str) -> VQModel:
    """Upstream's ``VQModel`` or ``EMAVQ`` from ``model_args`` (translated by ``TRANSLATION``)."""
    shared = {upstream: getattr(args, ours) for ours, upstream in TRANSLATION.items()}
    common = dict(ddconfig=args.ddconfig.as_upstream(), beta=args.beta, dead_code_threshold=args.dead_code_threshold,
                  decay=args.decay, legacy=args.legacy, quantizer=args.quantizer)
    return (EMAVQ if variant == "EMAVQ" else VQModel)(**shared, **common)


class TamingVQGANAdapter(BaseVqVaeAdapter):
    """VQModel / EMAVQ behind the common interface."""

    args_class = TamingArgs

    def __init__(self, args: TamingArgs, config=None):
        super().__init__(args, config)
        self.variant = resolve_variant(args, getattr(config, "model_type", None))
        self.model = build_model(args, self.variant)

    def forward(self, x: torch.Tensor) -> VQOutput:
        quant, emb_loss, indices, stats = self.model.encode(x)
        recon = self.model.decode(quant)
        return VQOutput(emb_loss, recon, stats["perplexity"], indices)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices ``(N, h, w)``."""
        return self.model.encode_to_indices(x)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.model.decode_code(indices)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.model.get_last_layer()

    @property
    def quantizers(self) -> list:
        return [self.model.quantize]

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.args.ddconfig.ch_mult) - 1)

    @property
    def output_channels(self) -> int:
        return self.args.ddconfig.out_ch

    @classmethod
    def train_defaults(cls, args: TamingArgs, train_args: dict) -> dict:
        """Upstream's loss, from ``lossconfig``; the discriminator learns at the autoencoder's rate."""
        lossconfig = attrs.asdict(args.lossconfig)
        defaults = {ours: lossconfig[theirs] for theirs, ours in LOSS_KEYS.items()}
        defaults.update(UPSTREAM_TRAINING)
        defaults["disc_lr"] = train_args.get("lr", attrs.fields(TrainArgs).lr.default)
        return defaults

    @classmethod
    def check_config(cls, config) -> None:
        args = config.model_args
        if config.model_type == "EMAVQ":
            require(args.variant in (None, "EMAVQ"),
                    f"model_args.variant = {args.variant!r}: expected 'EMAVQ' or null when model_type is 'EMAVQ'")
        factor = 2 ** (len(args.ddconfig.ch_mult) - 1)
        height, width = config.data_args.frame_size
        require(height % factor == 0 and width % factor == 0,
                f"data_args.resolution = {config.data_args.resolution!r}: expected height and width "
                f"multiples of {factor} (2 ** (len(model_args.ddconfig.ch_mult) - 1))")
        require(args.ddconfig.in_channels == 3,
                f"model_args.ddconfig.in_channels = {args.ddconfig.in_channels}: expected 3 (frames are RGB)")
