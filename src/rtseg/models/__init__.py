"""Networks (torch only). Importing this package registers every model in the registry."""
from rtseg.models import arpm as _arpm  # noqa: F401  (registers ARPM_net)
from rtseg.models import resunet as _resunet  # noqa: F401  (registers ResUnet_3D, Deeper_ResUnet_3D)
from rtseg.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
