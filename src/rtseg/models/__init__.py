"""Networks (torch only). Importing this package registers every model."""
from rtseg.models import resunet as _resunet  # noqa: F401  (registers models)
from rtseg.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
