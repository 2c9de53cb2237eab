"""The adapter registry and the builders: one JSON key (``model_type``) picks the model family.

Each family's adapter lives beside its model (``models/<family>/adapter.py``) and
translates the shared ``model_args`` names to the model's own, in one place.
``load_config`` / ``config_from_dict`` are the config loaders every entry point uses:
the ground floor's parser with this registry plugged in.
"""
from typing import Any, Iterable

from core.config import Config, parse_config, read_config
from core.config_schema import ConfigError, closest_key
from models.adapter_base import BaseVqVaeAdapter
from models.causal_video.adapter import CausalVideoAdapter
from models.taming.adapter import TamingVQGANAdapter
from models.vq_vae.adapter import VqVae2Adapter
from models.vqvae2.adapter import VQVAEAdapter
from models.vqvae2_optvq.adapter import VqvaeOptVQAdapter

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
    "CausalVideoVQ": CausalVideoAdapter,
    "causal_video": CausalVideoAdapter,
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


# one name per family, for the warning about a key another family understands
FAMILIES = {"VqVae2": VqVae2Adapter, "VQVAE2": VQVAEAdapter, "VQVAE2_OptVQ": VqvaeOptVQAdapter,
            "TamingVQGAN": TamingVQGANAdapter, "CausalVideoVQ": CausalVideoAdapter}


def config_from_dict(data: Any, source: str = "<dict>") -> Config:
    """Validate parsed JSON ``data`` into a ``Config`` (``model_args`` by the family's own class)."""
    return parse_config(data, resolve_adapter, source, families=FAMILIES)


def load_config(path: str, overrides: Iterable[str] = ()) -> Config:
    """Read and validate the config file at ``path``, with ``--set`` items (``KEY=VALUE``) applied."""
    return read_config(path, resolve_adapter, overrides, families=FAMILIES)


def create_model(config: Config) -> BaseVqVaeAdapter:
    """The adapter ``config.model_type`` names, built from ``config.model_args``."""
    return resolve_adapter(config.model_type)(config.model_args, config)
