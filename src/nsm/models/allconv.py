"""The paper's larger networks: SI Table 7 (DVS Gesture) and the all-convolutional CIFAR net.

Registered as ``bnsm-table7``, ``gnsm-table7``, ``dcnn-table7`` and ``bnsm-allconv``,
``gnsm-allconv``, ``dcnn-allconv``. ``nsm train --model bnsm --dataset cifar10`` picks the
network the paper uses for that dataset (:func:`nsm.training.config.model_for_dataset`).

SI Table 7 (DVS128 Gesture, 6 x 64 x 64 ON-event frames, 11 classes)::

    3 x (conv 3x3 96) -> pool 2 -> 3 x (conv 3x3 192) -> pool 2 -> 3 x (conv 3x3 256) -> pool 2
    -> conv 3x3 256 -> conv 1x1 256 -> conv 1x1 256 -> global average pool -> readout

Padding keeps the sizes; NSM keep-probability p = 0.5 everywhere (docs/design.md §4).

All-convolutional net (Salimans & Kingma 2016, CIFAR-10/100)::

    3 x (conv 3x3 96) -> pool 2 -> 3 x (conv 3x3 192) -> pool 2
    -> conv 3x3 192 -> conv 1x1 192 -> conv 1x1 192 -> global average pool -> readout

For the NSM versions, what we do and why: the authors feed the NSM stack from one
real-valued convolution, because an RGB image binarized to sgn(2x - 1) keeps one bit per
channel and loses most of what CIFAR's classes are told by. We do the same: the first 3x3
96 convolution is an ordinary real-valued ``nn.Conv2d`` reading the normalized (optionally
ZCA-whitened) image, and its real-valued output is the input of the first NSM layer, which
therefore uses ``variance="exact"`` (Var[u] = Var[xi] op(z^2, w^2), exact for real inputs;
the paper's ||w||^2 form assumes +-1 inputs). Every later layer is an NSM layer on +-1 states,
so the NSM net has as many layers as the dCNN. Zero padding keeps sizes in both nets; NSM
layers after the first use the paper's ``variance="norm"``, which at the zero-padded border
is the norm of the weights that meet the image (:class:`nsm.NSMConv2d`). There is no dropout: in the NSM
the synaptic noise plays that part, and the dCNN is the plain network of the same shape.

With a relaxed estimator (``estimator="binconcrete"``, output 2X - 1) every NSM layer is
followed by :class:`nsm.SignSTE`, so the next layer reads +-1 states, as in the Table 6
models; their ``"mean"`` pass is then their ``"threshold"`` pass.
"""

from __future__ import annotations

from torch import nn

from ..nn.layers import Binarize, MaxPool2d, NSMConv2d, SignSTE
from .registry import register_model
from .table6 import noise_parameters

__all__ = ["table7", "allconv"]


def _unit(kind: str, noise: str, p: float, sigma: float, options: dict):
    """conv(c_in, c_out, k, first=False) -> list of modules, for one network family."""

    def conv(c_in, c_out, k, first=False):
        pad = k // 2
        if kind == "dcnn":
            return [nn.Conv2d(c_in, c_out, k, padding=pad), nn.ReLU()]
        variance = "exact" if first else options.get("variance", "norm")
        opts = {**options, "variance": variance}
        layer = NSMConv2d(c_in, c_out, k, padding=pad, noise=noise, p=p, sigma=sigma, **opts)
        # A relaxed estimator outputs 2X - 1; the next layer takes its sign (identity gradient),
        # as in the Table 6 models (docs/design.md §3).
        return [layer, SignSTE()] if getattr(layer.estimator, "relaxed", False) else [layer]

    return conv


def _stack(conv, plan, c_in: int, first_real: bool):
    """plan: list of (c_out, k) or "pool"; returns the modules and the last channel count.

    ``first_real``: the first convolution is a real-valued ``nn.Conv2d`` and the second one
    (the first NSM layer, fed real values) gets ``variance="exact"``.
    """
    layers: list[nn.Module] = []
    n_conv = 0
    for item in plan:
        if item == "pool":
            layers.append(MaxPool2d(2))
            continue
        c_out, k = item
        if n_conv == 0 and first_real:
            layers.append(nn.Conv2d(c_in, c_out, k, padding=k // 2))
        else:
            layers += conv(c_in, c_out, k, first=first_real and n_conv == 1)
        n_conv, c_in = n_conv + 1, c_out
    return layers, c_in


TABLE7_PLAN = (
    [(96, 3)] * 3 + ["pool"] + [(192, 3)] * 3 + ["pool"] + [(256, 3)] * 3 + ["pool"] + [(256, 3), (256, 1), (256, 1)]
)
ALLCONV_PLAN = [(96, 3)] * 3 + ["pool"] + [(192, 3)] * 3 + ["pool"] + [(192, 3), (192, 1), (192, 1)]


def _network(
    plan,
    in_shape,
    num_classes,
    kind,
    *,
    noise="bernoulli",
    p=None,
    sigma=None,
    binary_input: bool,
    first_real: bool,
    width: float = 1.0,
    **options,
) -> nn.Sequential:
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    given = noise_parameters(noise, {"p": 0.5, "sigma": 1.0}, p=p, sigma=sigma)
    p, sigma = given["p"], given["sigma"]
    plan = [item if item == "pool" else (max(1, round(item[0] * width)), item[1]) for item in plan]
    conv = _unit(kind, noise, p, sigma, options)
    is_nsm = kind != "dcnn"
    layers, c = _stack(conv, plan, in_shape[0], first_real=first_real and is_nsm)
    head = [Binarize()] if binary_input and is_nsm else []
    return nn.Sequential(*head, *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def _noise_of(kind: str, arch: str, options: dict) -> str:
    noise = "gaussian" if kind == "gnsm" else "bernoulli"
    if "noise" in options:
        raise ValueError(f"model '{kind}-{arch}' fixes noise={noise!r}; use another model to change it")
    return noise


def table7(in_shape, num_classes, kind="bnsm", **options) -> nn.Sequential:
    """SI Table 7 (DVS Gesture): event frames enter the NSM as sgn(2x - 1); p = 0.5."""
    noise = _noise_of(kind, "table7", options)
    return _network(
        TABLE7_PLAN, in_shape, num_classes, kind, noise=noise, binary_input=True, first_real=False, **options
    )


def allconv(in_shape, num_classes, kind="bnsm", **options) -> nn.Sequential:
    """The all-convolutional CIFAR net; NSM versions start with one real-valued convolution."""
    noise = _noise_of(kind, "allconv", options)
    return _network(
        ALLCONV_PLAN, in_shape, num_classes, kind, noise=noise, binary_input=False, first_real=True, **options
    )


def _register(arch: str, builder, what: str) -> None:
    for kind, desc in (
        ("bnsm", "NSM units, Bernoulli synapses p=0.5"),
        ("gnsm", "NSM units, Gaussian synapses sigma=1"),
        ("dcnn", "deterministic ReLU units"),
    ):
        extra = {"stochastic": False} if kind == "dcnn" else {}

        def build(in_shape, num_classes, _kind=kind, **options):
            if _kind == "dcnn" and set(options) - {"width"}:
                raise TypeError(f"dcnn-{arch} takes only the option 'width', got {sorted(options)}")
            return builder(in_shape, num_classes, kind=_kind, **options)

        register_model(f"{kind}-{arch}", f"{what}, {desc}", **extra)(build)


_register("table7", table7, "SI Table 7 network (DVS Gesture)")
_register("allconv", allconv, "all-convolutional CIFAR net")
