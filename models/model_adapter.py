"""The adapter registry: one JSON key (``model_type``) picks the model family.

Each family's adapter lives beside its model (``models/<family>/adapter.py``) and
translates the shared ``model_args`` names to the model's own, in one place.
"""
from typing import Optional

from models.adapter_base import BaseVqVaeAdapter, VQOutput, as_level_list  # noqa: F401 (public names)
from models.taming.adapter import TamingVQGANAdapter
from models.vq_vae.adapter import VqVae2Adapter
from models.vqvae2.adapter import VQVAEAdapter
from models.vqvae2_optvq.adapter import VqvaeOptVQAdapter
from train.config_schema import ConfigError, closest_key

_MODEL_REGISTRY = {
    "VqVae": VqVae2Adapter,
    "vq_vae": VqVae2Adapter,
    "VqVae2": VqVae2Adapter,  # the seed's default model_type, missing from its own registry
    "VQVAE2": VQVAEAdapter,
    "vqvae2": VQVAEAdapter,
    "VQVAE2_OptVQ": VqvaeOptVQAdapter,
    "vqvae2optvq": VqvaeOptVQAdapter,
    "TamingVQGAN": TamingVQGANAdapter,
    "taming_vqgan": TamingVQGANAdapter,
    "EMAVQ": TamingVQGANAdapter,
    "VQGAN": TamingVQGANAdapter,
}


def resolve_adapter(model_type: str) -> type:
    """The adapter class registered under ``model_type``; ``ConfigError`` if none."""
    try:
        return _MODEL_REGISTRY[model_type]
    except (KeyError, TypeError):
        names = sorted(_MODEL_REGISTRY)
        hint = closest_key(model_type, names) if isinstance(model_type, str) else ""
        raise ConfigError(
            f"model_type = {model_type!r}: unknown model{hint}; registered: {', '.join(names)}"
        ) from None


def create_model(model_args: Optional[dict] = None, config_path: str = "param.json", config=None) -> BaseVqVaeAdapter:
    """Build the adapter the config names, ``model_args`` overriding the file's.

    ``config`` (a loaded ``Config``) skips reading ``config_path``.
    """
    from train.config import config_from_dict, load_config

    if config is None:
        config = load_config(config_path)
    if model_args:
        raw = config.to_dict()
        raw["model_args"] = {**raw.get("model_args", {}), **model_args}
        config = config_from_dict(raw, source=config.source)
    adapter_class = resolve_adapter(config.model_type)
    return adapter_class(config.model_args, config)
