"""The model: network, loss variants, scalers, the model wrapper and its on-disk package."""

from smcast.model.network import SoilMoistureLSTM
from smcast.model.package import (ModelError, check_compatible, load_package, read_manifest,
                                  save_package)
from smcast.model.scaling import Scalers
from smcast.model.variants import VARIANTS, Variant, get_variant
from smcast.model.wrapper import (DEFAULT_DYNAMIC_INPUTS, DEFAULT_STATIC_INPUTS,
                                  SoilMoistureModel)

__all__ = ["DEFAULT_DYNAMIC_INPUTS", "DEFAULT_STATIC_INPUTS", "ModelError", "Scalers",
           "SoilMoistureLSTM", "SoilMoistureModel", "VARIANTS", "Variant", "check_compatible",
           "get_variant", "load_package", "read_manifest", "save_package"]
