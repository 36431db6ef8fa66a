"""Architecture registry: ``create_model``, ``list_models``, ``register``."""
from edgeseg.arch.registry import canonical_name, create_model, list_models, register

__all__ = ["canonical_name", "create_model", "list_models", "register"]
