"""The math and the modules, the ``torch.nn`` of NSMs.

- :mod:`.noise`: the synaptic noise models (Bernoulli blank-out, Gaussian) and their moments;
- :mod:`.functional`: the firing probability P = 1/2 (1 + erf(t)), the samplers and the sign;
- :mod:`.estimators`: how a binary state is differentiated (probability, STE, BinConcrete);
- :mod:`.layers`: :class:`NSMLinear`, :class:`NSMConv2d` and the small modules around them;
- :mod:`.mc`: Monte-Carlo prediction over any model of these layers.
"""

from .estimators import ESTIMATORS
from .functional import SAMPLERS
from .layers import Binarize, MaxPool2d, NSMConv2d, NSMLayer, NSMLinear, SignSTE, set_generator
from .mc import forward_mode, mc_predict, mc_sample_probs
from .noise import NOISES, Noise

__all__ = [
    "NSMLinear",
    "NSMConv2d",
    "NSMLayer",
    "Binarize",
    "SignSTE",
    "MaxPool2d",
    "Noise",
    "NOISES",
    "SAMPLERS",
    "ESTIMATORS",
    "set_generator",
    "mc_predict",
    "mc_sample_probs",
    "forward_mode",
]
