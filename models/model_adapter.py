"""The design document's module for the adapter system: its public names, re-exported.

The registry and the builders live in ``models.builders``; the interface in ``models.adapter_base``.
"""
from models.adapter_base import BaseVqVaeAdapter, VQOutput, as_level_list  # noqa: F401
from models.builders import _MODEL_REGISTRY, create_model, resolve_adapter  # noqa: F401
