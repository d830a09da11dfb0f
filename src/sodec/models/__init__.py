"""SODEC networks.  Nothing here knows about files or the command line."""

from sodec.models.config import SodecConfig
from sodec.models.presets import PRESETS, preset_config
from sodec.models.sodec import SodecModel

__all__ = ["PRESETS", "SodecConfig", "SodecModel", "preset_config"]
