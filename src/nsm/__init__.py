"""nsm: Neural Sampling Machines in PyTorch.

Binary threshold units whose synapses carry always-on multiplicative noise (Bernoulli
blank-out or Gaussian); each unit fires with probability 1/2 (1 + erf(t)) of a
weight-normalized drive t (Detorakis et al., NeurIPS 2019). See the README and docs/.
"""

from .models import MODELS, build_model, register_model
from .nn.estimators import ESTIMATORS
from .nn.functional import SAMPLERS
from .nn.layers import Binarize, NSMConv2d, NSMLinear, SignSTE, set_generator
from .nn.mc import accuracy, error_rate, forward_mode, mc_predict, mc_sample_probs
from .nn.noise import NOISES, Noise

__version__ = "0.1.0"

__all__ = [
    "NSMLinear",
    "NSMConv2d",
    "Binarize",
    "SignSTE",
    "Noise",
    "NOISES",
    "SAMPLERS",
    "ESTIMATORS",
    "MODELS",
    "mc_predict",
    "mc_sample_probs",
    "forward_mode",
    "accuracy",
    "error_rate",
    "build_model",
    "register_model",
    "set_generator",
    "__version__",
]
