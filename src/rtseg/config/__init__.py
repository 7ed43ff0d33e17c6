from rtseg.config.loader import apply_overrides, config_from_dict, config_to_yaml, load_config
from rtseg.config.schema import IGNORE_INDEX, PELVIS_CLASS_NAMES, PELVIS_COLOR_MAP, Config

__all__ = [
    "Config",
    "IGNORE_INDEX",
    "PELVIS_CLASS_NAMES",
    "PELVIS_COLOR_MAP",
    "apply_overrides",
    "config_from_dict",
    "config_to_yaml",
    "load_config",
]
