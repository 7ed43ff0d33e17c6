from rtseg.config.loader import apply_overrides, config_from_dict, config_to_yaml, load_config
from rtseg.config.schema import Config

__all__ = ["Config", "apply_overrides", "config_from_dict", "config_to_yaml", "load_config"]
