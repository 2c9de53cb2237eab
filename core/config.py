"""The configuration file, read once into typed, validated objects.

The JSON keeps the design document's shape (``model_type``, ``use_images``,
``scaling_rates``, ``model_args``, ``data_args``, ``train_args``, ``data_process``,
``use_wandb``, ``project_name``). ``model_args`` is checked by the chosen model
family's own ``args_class``; the family is found by a lookup the caller passes in
(``models.builders`` passes its registry), so this floor never imports the models.
"""
import copy
import json
import logging
import os
import re
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping, Optional, Protocol, Union

import attrs

from core.atomic_files import atomic_write
from core.config_schema import (
    ConfigError,
    Invalid,
    check,
    closest_key,
    config_keys,
    non_negative,
    open_unit,
    positive,
    require,
    shown_key,
    structure,
    unknown_keys,
    unknown_keys_error,
)

logger = logging.getLogger(__name__)

AutoBool = Union[bool, Literal["auto"]]
DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# run_name is one folder inside folder_name: never a path that leads elsewhere
plain_name = check(lambda v: v not in ("", ".", "..") and not any(c in v for c in "/\\\0"),
                   "a plain folder name (no '/', '\\' or '..'): the run folder is folder_name/run_name")


@attrs.frozen
class DataProcess:
    """Where the clips (or images) are: a folder, a list of folders/files, or ``builtin:train``."""

    __config_aliases__ = {"valid": "vaild"}  # the seed spells it 'vaild'; accept both

    train: Union[str, list[str]]
    vaild: Optional[Union[str, list[str]]] = None


@attrs.frozen
class DataArgs:
    batch_size: int = attrs.field(default=2, validator=positive)
    num_threads: int = attrs.field(default=0, validator=non_negative)  # DataLoader workers
    device_id: int = attrs.field(default=0, validator=non_negative)
    training_data_files: list[str] = attrs.field(factory=list)
    validation_data_files: list[str] = attrs.field(factory=list)
    seed: int = attrs.field(default=2025, validator=check(lambda v: 0 <= v < 2**32, "an integer in [0, 2**32 - 1]"))
    sequence_length: int = attrs.field(default=8, validator=positive)
    # This run's share of the data (default: all of it), split again among torchrun's ranks.
    shard_id: Optional[int] = attrs.field(default=None, validator=non_negative)
    num_shards: Optional[int] = attrs.field(default=None, validator=positive)
    # Frames the loader keeps decoded per worker (resized, before any crop) to cut clips from.
    initial_prefetch_size: int = attrs.field(default=2048, validator=positive)
    # (height, width) every frame is resized to on read; an int means square.
    resolution: Union[int, list[int]] = attrs.field(default=64)
    # How frames of another aspect ratio reach `resolution`: short side resized, then cropped
    # (at random for training, centred for validation); fitted inside and padded; or stretched.
    resize_mode: Literal["crop", "pad", "stretch"] = "crop"
    prefetch_factor: int = attrs.field(default=2, validator=positive)
    persistent_workers: bool = True
    pin_memory: AutoBool = "auto"

    def __attrs_post_init__(self):
        size = self.resolution
        ok = (isinstance(size, int) and size > 0) or (
            isinstance(size, list) and len(size) == 2 and all(v > 0 for v in size)
        )
        require(ok, f"resolution = {size!r}: expected a positive int or [height, width]")
        if self.shard_id is not None:
            require(
                self.shard_id < (self.num_shards or 1),
                f"shard_id = {self.shard_id}: expected < num_shards ({self.num_shards or 1})",
            )

    @property
    def frame_size(self) -> tuple:
        """(height, width)."""
        if isinstance(self.resolution, int):
            return (self.resolution, self.resolution)
        return tuple(self.resolution)


@attrs.frozen
class TrainArgs:
    num_steps: int = attrs.field(default=100000, validator=positive)
    lr: float = attrs.field(default=1e-4, validator=positive)
    scale_lr: bool = False  # upstream Taming's scale_lr: lr x batch_size x processes (lr read as base_learning_rate)
    lr_decay: float = attrs.field(default=0.99, validator=check(lambda v: 0 < v <= 1, "a value in (0, 1]"))
    lr_decay_interval: int = attrs.field(default=1000, validator=positive)
    # "exponential": x lr_decay every lr_decay_interval steps (the seed's); "cosine": down to lr_min by num_steps
    lr_schedule: Literal["exponential", "cosine", "constant"] = "exponential"
    warmup_steps: int = attrs.field(default=0, validator=non_negative)  # linear warm-up from 0 to lr
    lr_min: float = attrs.field(default=0.0, validator=non_negative)  # where the cosine ends
    grad_accum_steps: int = attrs.field(default=1, validator=positive)  # batches per optimizer step
    ema_decay: Optional[float] = attrs.field(default=None, validator=open_unit)  # EMA of the weights, for validation
    folder_name: str = "runs"
    run_name: Optional[str] = attrs.field(default=None, validator=plain_name)  # default: the config file's name
    checkpoint_path: Optional[str] = None  # resume from this file
    resume: Optional[Literal["auto"]] = None  # "auto": newest good checkpoint of the run folder
    init_from: Optional[str] = None  # model weights only (e.g. an upstream release)
    allow_unsafe_load: bool = False  # permit full unpickling of foreign checkpoints
    device: str = attrs.field(default="auto", validator=check(lambda v: bool(DEVICE_NAME.fullmatch(v)),
                                                              "auto, cpu, mps, cuda or cuda:N"))
    save_interval: int = attrs.field(default=10000, validator=positive)
    keep_last: int = attrs.field(default=3, validator=positive)
    validation_interval: int = attrs.field(default=1000, validator=positive)
    val_max_images: int = attrs.field(default=10000, validator=positive)
    log_interval: int = attrs.field(default=100, validator=positive)
    wandb_log_interval: int = attrs.field(default=100, validator=positive)
    wandb_image_interval: int = attrs.field(default=1000, validator=positive)
    wandb_dir: Optional[str] = None  # default: the run folder
    progress_bar: AutoBool = "auto"
    betas: list[float] = attrs.field(factory=lambda: [0.9, 0.999], validator=check(
        lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two values in [0, 1)"))  # the autoencoder's Adam
    # losses (one set of names for every family; a family may change the defaults, e.g. Taming's lossconfig)
    recon_loss: Literal["mse", "l1"] = "mse"
    pixel_loss_factor: float = attrs.field(default=1.0, validator=non_negative)
    perceptual_loss_factor: float = attrs.field(default=1.0, validator=non_negative)
    use_perceptual: Optional[bool] = None  # default: on when use_gan is on
    codebook_weight: float = attrs.field(default=1.0, validator=non_negative)  # weight of the model's VQ loss
    perceptual_backbone: Literal["vgg", "random"] = "vgg"
    vgg_weights: Optional[str] = None  # local torchvision vgg16 weights file
    lpips_weights: Optional[str] = None  # local LPIPS linear-layer weights file
    use_gan: bool = False
    disc_factor: float = attrs.field(default=1.0, validator=non_negative)
    disc_start: int = attrs.field(default=20000, validator=non_negative)
    disc_weight: float = attrs.field(default=1.0, validator=non_negative)
    disc_interval: int = attrs.field(default=3, validator=positive)
    disc_lr: float = attrs.field(default=1e-5, validator=positive)
    disc_beta1: float = attrs.field(default=0.5, validator=open_unit)
    disc_beta2: float = attrs.field(default=0.9, validator=open_unit)
    disc_layers: int = attrs.field(default=3, validator=positive)
    disc_ndf: int = attrs.field(default=64, validator=positive)
    disc_loss: Literal["hinge", "vanilla"] = "hinge"
    disc_actnorm: bool = False  # ActNorm instead of BatchNorm in the PatchGAN (Taming's use_actnorm)
    instance_noise: float = attrs.field(default=0.0, validator=non_negative)
    # metrics
    compute_fid: AutoBool = "auto"
    compute_lpips: AutoBool = "auto"
    fid_weights: Optional[str] = None  # local pytorch-fid Inception weights file
    # speed and numerics
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPUs that have it, else fp32
    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"  # torch.compile's backend ("aot_eager": no code generation, for tests)
    grad_clip: Optional[float] = attrs.field(default=None, validator=positive)
    max_nonfinite_steps: int = attrs.field(default=10, validator=positive)
    deterministic: bool = False
    fit_prior: bool = True  # measure code frequencies at the end of training (for the codec)


@attrs.frozen
class Config:
    model_type: str = "VqVae2"
    use_images: bool = False
    scaling_rates: Optional[list[int]] = None
    model_args: Any = attrs.field(factory=dict)  # the family's args_class once loaded
    data_args: DataArgs = attrs.field(factory=DataArgs)
    train_args: TrainArgs = attrs.field(factory=TrainArgs)
    data_process: Optional[DataProcess] = None
    use_wandb: bool = False
    use_tensorboard: bool = False  # event files in the run folder, beside metrics.jsonl
    project_name: str = "vqvc"
    # not JSON keys: where it came from, and the raw data (saved in checkpoints)
    _source: str = attrs.field(default="<dict>", alias="_source")
    _raw: dict = attrs.field(factory=dict, alias="_raw")

    @property
    def source(self) -> str:
        return self._source

    @property
    def raw(self) -> dict:
        return self._raw

    @property
    def run_name(self) -> str:
        if self.train_args.run_name:
            return self.train_args.run_name
        stem = os.path.splitext(os.path.basename(self._source))[0]
        return stem if self._source != "<dict>" else self.model_type

    @property
    def run_dir(self) -> str:
        return os.path.join(self.train_args.folder_name, self.run_name)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self._raw))

    def resolved(self) -> dict:
        """Every key with the value in force (defaults filled in, overrides applied): a config
        file that rebuilds exactly this run, its run name included."""
        data = attrs.asdict(self, filter=lambda attribute, _value: not attribute.name.startswith("_"))
        data["train_args"]["run_name"] = self.run_name
        return data

    def save_resolved(self, path: str) -> str:
        """Write ``resolved()`` to ``path`` as JSON, atomically; returns ``path``."""
        text = json.dumps(self.resolved(), indent=2) + "\n"
        atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
        return path


class ModelFamily(Protocol):
    """What config parsing needs of a model family: its ``model_args`` class, its defaults for
    ``train_args`` (e.g. Taming's loss settings), and cross-section checks.

    ``args_class`` may map keys of other families to what it uses instead
    (``__config_equivalents__``, for the warning when such a key is ignored).
    """

    args_class: ClassVar[type]

    @classmethod
    def train_defaults(cls, model_args: Any, train_args: dict) -> dict: ...

    @classmethod
    def check_config(cls, config: "Config") -> None: ...


FamilyLookup = Callable[[str], ModelFamily]  # model_type -> family; raises ConfigError if unknown


def parse_config(data: Any, family_of: FamilyLookup, source: str = "<dict>",
                 families: Optional[Mapping[str, ModelFamily]] = None) -> Config:
    """Validate ``data`` (a parsed JSON object) into a ``Config``; raises ``ConfigError``.

    ``families`` (name -> family) are all the families there are: a ``model_args`` key that
    another family knows is ignored with a warning; keys no family knows are errors, all
    named in one line.
    """
    prefix = f"{source}: " if source != "<dict>" else ""
    try:
        raw, data = data, _without_comments(data)
        if isinstance(data, dict):
            data, ignored = _sort_keys(data, family_of, families or {})
            for line in ignored:
                logger.warning("%s%s", prefix, line)
            if ignored:  # saved checkpoints carry the config as it is used
                raw = {**raw, "model_args": data["model_args"]}
        top = structure(Config, data, "")
        family = family_of(top.model_type)
        model_args = structure(family.args_class, top.model_args, "model_args")
        given = _without_comments(data.get("train_args", {}))
        train_args = structure(TrainArgs, {**family.train_defaults(model_args, given), **given}, "train_args")
        config = attrs.evolve(top, model_args=model_args, train_args=train_args, _source=source, _raw=raw)
        family.check_config(config)
    except (ConfigError, Invalid) as err:
        raise ConfigError(prefix + str(err)) from None
    return config


def _sort_keys(data: dict, family_of: FamilyLookup, families: Mapping[str, ModelFamily]) -> tuple:
    """``(data without the model_args keys of other families, warnings for them)``; every key that
    no family knows raises one ``ConfigError`` naming them all."""
    found = unknown_keys(Config, data, "")
    model_args = data.get("model_args", {})
    ignored = []
    if isinstance(model_args, dict):
        model_type = data.get("model_type", attrs.fields(Config).model_type.default)
        family = family_of(model_type)
        own = config_keys(family.args_class)
        kept = {k: v for k, v in model_args.items() if k in own}
        found += unknown_keys(family.args_class, kept, "model_args")
        instead_of = getattr(family.args_class, "__config_equivalents__", {})
        for key in model_args:
            if key in own:
                continue
            other = next((name for name, f in families.items() if key in config_keys(f.args_class)), None)
            if other is None:
                found.append((shown_key(key, "model_args"), closest_key(str(key), own), own))
                continue
            instead = f"use {instead_of[key]} instead" if key in instead_of else "it has no such setting"
            ignored.append(f"model_args.{key} is a {other} key: ignored by {model_type} ({instead})")
        if ignored:
            data = {**data, "model_args": kept}
    if found:
        raise unknown_keys_error(found)
    return data, ignored


def _without_comments(data: Any) -> Any:
    """Keys starting with '_' or '//' are comments (JSON has none of its own)."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith(("_", "//")))}
    return data


def deep_merge(base: dict, overrides: dict) -> dict:
    """A copy of config data ``base`` with ``overrides`` merged in, section by section."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(items: Iterable[str]) -> dict:
    """``["train_args.lr=1e-4", "data_args.resolution=[32, 32]"]`` as nested config data.

    A value is read as JSON (numbers, true/false, null, lists, objects); anything that is not
    JSON is a bare string (``train_args.device=cpu``). The schema checks the result like any config.
    """
    out: dict = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        keys = key.strip().split(".")
        if not sep or not all(keys):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. train_args.lr=1e-4")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        node = out
        for depth, name in enumerate(keys[:-1]):
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(keys[:depth + 1])} is already set to a value")
        node[keys[-1]] = value
    return out


def apply_overrides(data: dict, items: Iterable[str]) -> dict:
    """A copy of config data ``data`` with ``--set`` items (``KEY=VALUE``) applied."""
    return deep_merge(data, parse_overrides(items)) if isinstance(data, dict) else data


def read_config(path: str, family_of: FamilyLookup, overrides: Iterable[str] = (),
                families: Optional[Mapping[str, ModelFamily]] = None) -> Config:
    """Read and validate the JSON file at ``path``, with ``--set`` items ``overrides`` applied."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from None
    return parse_config(apply_overrides(data, overrides), family_of, source=path, families=families)
