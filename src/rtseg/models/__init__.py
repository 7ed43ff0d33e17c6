"""Networks (torch only). Importing this package registers every model."""
from rtseg.models import resunet as _resunet  # noqa: F401  (registers models)
from rtseg.models import arpm as _arpm  # noqa: F401  (registers ARPM_net)
from rtseg.models import discriminator as _discriminator  # noqa: F401
from rtseg.models import mrf as _mrf  # noqa: F401
from rtseg.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
