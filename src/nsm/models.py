"""Networks of the paper, registered by name.

SI Table 6 (MNIST, EMNIST, N-MNIST)::

    input (C, H, W) -> conv 5x5 32 -> maxpool 2 -> conv 5x5 64 -> maxpool 2
                    -> fully connected (64 * h * w -> 512) -> readout (512 -> classes)

- ``bnsm``: NSM units with Bernoulli (blank-out) synapses, keep-probability p = 0.25 in the
  convolutions and 0.5 in the fully connected layer (the authors' code). The input enters as
  sgn(2x - 1); hidden layers pass +-1 states; max pooling of +-1 values is an OR; the readout
  is an ordinary real-valued linear layer (softmax in the loss).
- ``gnsm``: the same with Gaussian synapses xi ~ N(1, sigma^2), sigma = 1.
- ``dcnn``: the same widths with deterministic ReLU units and real-valued inputs in [0, 1].

``build_model(name, in_shape=(1, 28, 28), num_classes=10, **options)`` makes one; options
of the NSM models are passed to every NSM layer (``sampler``, ``estimator``, ``p_conv``,
``p_fc``, ``sigma``, ...). ``MODELS`` is the registry later models join.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from .layers import Binarize, MaxPool2d, NSMConv2d, NSMLinear, SignSTE
from .estimators import make_estimator
from .registry import Registry

__all__ = ["ModelSpec", "MODELS", "build_model", "register_model", "table6_nsm", "table6_dcnn"]


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its builder, a one-line description and its training defaults."""

    name: str
    builder: Callable[..., nn.Module]
    description: str
    defaults: dict = field(default_factory=dict)


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(name: str, description: str, **defaults):
    """Decorator: register ``builder(in_shape, num_classes, **options)`` as model ``name``."""

    def add(builder):
        MODELS.register(name, ModelSpec(name, builder, description, defaults))
        return builder

    return add


def build_model(name: str, in_shape=(1, 28, 28), num_classes: int = 10, **options) -> nn.Module:
    """Build the registered model ``name`` for inputs ``in_shape`` (C, H, W)."""
    spec = MODELS.get(name)
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"model must be a registered name ({', '.join(MODELS.names())}), got {name!r}")
    if len(in_shape) != 3 or any(int(d) < 1 for d in in_shape):
        raise ValueError(f"in_shape must be (C, H, W) with positive sizes, got {tuple(in_shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return spec.builder(tuple(int(d) for d in in_shape), num_classes, **options)


def _table6_flat(in_shape) -> int:
    c, h, w = in_shape
    for _ in range(2):  # conv 5x5 (no padding), then max pool 2
        h, w = (h - 4) // 2, (w - 4) // 2
    if h < 1 or w < 1:
        raise ValueError(f"input {in_shape} is too small for the Table 6 network (needs H, W >= 16)")
    return 64 * h * w


def table6_nsm(in_shape, num_classes, *, noise="bernoulli", p_conv=0.25, p_fc=0.5, sigma=1.0,
               sampler="neuron", estimator="prob", temperature=1.0, alpha="probability",
               hidden=512) -> nn.Sequential:
    """The SI Table 6 network of NSM units (bNSM or gNSM)."""
    common = dict(noise=noise, sigma=sigma, sampler=sampler, estimator=estimator,
                  temperature=temperature, alpha=alpha)
    # A relaxed estimator outputs 2X - 1; the next layer takes its sign (identity gradient).
    relaxed = getattr(make_estimator(estimator, temperature=temperature, alpha=alpha), "relaxed", False)
    after = (lambda: [SignSTE()]) if relaxed else (lambda: [])
    conv_sampler = "neuron" if sampler == "synapse" else sampler  # convolutions share filters
    conv = dict(common, sampler=conv_sampler, p=p_conv)
    return nn.Sequential(
        Binarize(),
        NSMConv2d(in_shape[0], 32, 5, **conv), *after(), MaxPool2d(2),
        NSMConv2d(32, 64, 5, **conv), *after(), MaxPool2d(2),
        nn.Flatten(),
        NSMLinear(_table6_flat(in_shape), hidden, **dict(common, p=p_fc)), *after(),
        nn.Linear(hidden, num_classes),
    )


def table6_dcnn(in_shape, num_classes, *, hidden=512) -> nn.Sequential:
    """The SI Table 6 network with deterministic ReLU units (dCNN)."""
    return nn.Sequential(
        nn.Conv2d(in_shape[0], 32, 5), nn.ReLU(), MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(), MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(_table6_flat(in_shape), hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


@register_model("bnsm", "Table 6 network, NSM units, Bernoulli synapses (p=0.25 conv, 0.5 fc)")
def _bnsm(in_shape, num_classes, **options):
    return table6_nsm(in_shape, num_classes, noise="bernoulli", **options)


@register_model("gnsm", "Table 6 network, NSM units, Gaussian synapses N(1, sigma^2), sigma=1")
def _gnsm(in_shape, num_classes, **options):
    return table6_nsm(in_shape, num_classes, noise="gaussian", **options)


@register_model("dcnn", "Table 6 network, deterministic ReLU units, real-valued inputs", stochastic=False)
def _dcnn(in_shape, num_classes, **options):
    return table6_dcnn(in_shape, num_classes, **options)
