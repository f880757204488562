"""Networks, registered by name: the registry (:mod:`.registry`), the SI Table 6 family with
every baseline of the paper's comparison (:mod:`.table6`, parts in :mod:`.baselines` and
:mod:`.s2m`), and the SI Table 7 / all-convolutional networks (:mod:`.allconv`).

``build_model(name, in_shape, num_classes, **options)`` makes one; ``nsm models`` lists them.
"""

from . import allconv  # noqa: F401  (registers the Table 7 and all-convolutional networks)
from .allconv import table7
from .registry import MODELS, ModelSpec, build_model, is_stochastic, register_model
from .table6 import fc_nsm, table6, table6_dcnn, table6_nsm

__all__ = [
    "ModelSpec",
    "MODELS",
    "build_model",
    "register_model",
    "is_stochastic",
    "table6",
    "table6_nsm",
    "table6_dcnn",
    "fc_nsm",
    "table7",
]
