"""Networks of the paper and every baseline of its comparison, registered by name.

SI Table 6 (MNIST, EMNIST, N-MNIST)::

    input (C, H, W) -> conv 5x5 32 -> maxpool 2 -> conv 5x5 64 -> maxpool 2
                    -> fully connected (64 * h * w -> 512) -> readout (512 -> classes)

- ``bnsm``: NSM units with Bernoulli (blank-out) synapses, keep-probability p = 0.25 in the
  convolutions and 0.5 in the fully connected layer (the authors' code). The input enters as
  sgn(2x - 1); hidden layers pass +-1 states; max pooling of +-1 values is an OR; the readout
  is an ordinary real-valued linear layer (softmax in the loss).
- ``gnsm``: the same with Gaussian synapses xi ~ N(1, sigma^2), sigma = 1.
- ``dcnn``: the same widths with deterministic ReLU units and real-valued inputs in [0, 1].

Every baseline (SI Table 5, docs/design.md §7) uses the same Table 6 widths (32, 64, 512), so
that the comparison is fair; only the units, the weights' parametrization and the input
(binarized sgn(2x - 1) for binary networks, real-valued in [0, 1] for real-valued ones)
differ. ``nsm models`` lists them. Exceptions, by necessity: the S2M is a fully connected
restricted Boltzmann machine (:mod:`nsm.models.s2m`), and ``bnsm-fc`` / ``stnn-fc`` are the
784-300-300-300-10 fully connected networks of SI 4.5 (the W3 figure).

``build_model(name, in_shape=(1, 28, 28), num_classes=10, **options)`` makes one; options
of the NSM models are passed to every NSM layer (``sampler``, ``estimator``, ``p_conv``,
``p_fc``, ``sigma``, ...).
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from ..nn.estimators import make_estimator
from ..nn.layers import Binarize, MaxPool2d, NSMConv2d, NSMLinear, SignSTE, nsm_layers
from .baselines import BinaryConv2d, BinaryLinear, MCDropout, NoisyReLU, SigmoidBernoulli, SignUnit, WNConv2d, WNLinear
from .registry import register_model
from .s2m import SynapticSamplingMachine

__all__ = ["table6", "table6_nsm", "table6_dcnn", "fc_nsm"]


def _table6_flat(in_shape) -> int:
    c, h, w = in_shape
    for _ in range(2):  # conv 5x5 (no padding), then max pool 2
        h, w = (h - 4) // 2, (w - 4) // 2
    if h < 1 or w < 1:
        raise ValueError(f"input {in_shape} is too small for the Table 6 network (needs H, W >= 16)")
    return 64 * h * w


def table6(
    in_shape,
    num_classes,
    *,
    conv,
    fc,
    unit,
    binary_input: bool,
    hidden: int = 512,
    first_conv=None,
    inputs: Optional[nn.Module] = None,
) -> nn.Sequential:
    """SI Table 6 from parts: ``conv(c_in, c_out, k)``, ``fc(n_in, n_out)`` and
    ``unit(n, is_conv)`` (the modules after each hidden layer, a list); ``first_conv`` (default
    ``conv``) builds the first layer; ``inputs`` replaces the input binarizer."""
    if inputs is None and binary_input:
        inputs = Binarize()
    return nn.Sequential(
        *([] if inputs is None else [inputs]),
        (first_conv or conv)(in_shape[0], 32, 5),
        *unit(32, True),
        MaxPool2d(2),
        conv(32, 64, 5),
        *unit(64, True),
        MaxPool2d(2),
        nn.Flatten(),
        fc(_table6_flat(in_shape), hidden),
        *unit(hidden, False),
        nn.Linear(hidden, num_classes),
    )


def noise_parameters(noise: str, defaults: dict, **given) -> dict:
    """The noise parameters of a network, its defaults filled in: those of the other noise
    (``sigma`` for Bernoulli synapses, ``p``-like ones for Gaussian synapses) are refused when
    given, since they would change nothing."""
    own = "sigma" if noise == "gaussian" else "p"
    unused = sorted(k for k, v in given.items() if v is not None and not k.startswith(own))
    if unused:
        mine = ", ".join(k for k in given if k.startswith(own))
        other = "gnsm" if noise == "bernoulli" else "bnsm"
        raise ValueError(
            f"{noise} synapses have no {', '.join(unused)} (it would change nothing): their noise is set by "
            f"{mine}; for the other noise use the {other} model of this network"
        )
    return {k: defaults[k] if v is None else v for k, v in given.items()}


def refuse_options(model: str, options: dict, why: str, names) -> None:
    """Refuse the options of ``names`` given to ``model``, which has no use for them (``why``)."""
    taken = sorted(set(options) & set(names))
    if taken:
        raise ValueError(f"model {model!r} takes no {', '.join(taken)}: {why}")


def _nsm_parts(noise, p_conv, p_fc, sigma, sampler, estimator, temperature, alpha, bias_scale="weight"):
    common = dict(
        noise=noise,
        sigma=sigma,
        sampler=sampler,
        estimator=estimator,
        temperature=temperature,
        alpha=alpha,
        bias_scale=bias_scale,
    )
    # A relaxed estimator outputs 2X - 1; the next layer takes its sign (identity gradient).
    relaxed = getattr(make_estimator(estimator, temperature=temperature, alpha=alpha), "relaxed", False)
    conv_sampler = "neuron" if sampler == "synapse" else sampler  # convolutions share filters
    return (
        lambda i, o, k, variance="norm": NSMConv2d(
            i, o, k, variance=variance, **dict(common, sampler=conv_sampler, p=p_conv)
        ),
        lambda i, o: NSMLinear(i, o, **dict(common, p=p_fc)),
        lambda n, is_conv: [SignSTE()] if relaxed else [],
    )


class Centre(nn.Module):
    """The real-valued input 2x - 1 in [-1, 1] for x in [0, 1]: sgn(2x - 1) without the sign."""

    def forward(self, x):
        return 2 * x - 1


def table6_nsm(
    in_shape,
    num_classes,
    *,
    noise="bernoulli",
    p_conv=None,
    p_fc=None,
    sigma=None,
    sampler=None,
    estimator="prob",
    temperature=None,
    alpha=None,
    hidden=512,
    real_input: bool = False,
    bias_scale="weight",
) -> nn.Sequential:
    """The SI Table 6 network of NSM units (bNSM or gNSM).

    ``real_input=True``: the first NSM layer reads the grey levels 2x - 1 instead of
    sgn(2x - 1), with ``variance="exact"`` (Var[u] = Var[xi] sum_j w_j^2 x_j^2, the law of
    real-valued inputs); every later layer is unchanged. Bernoulli synapses transmit with
    ``p_conv`` (0.25) and ``p_fc`` (0.5), Gaussian ones have ``sigma`` (1.0): the other noise's
    parameters are refused."""
    given = noise_parameters(noise, {"p_conv": 0.25, "p_fc": 0.5, "sigma": 1.0}, p_conv=p_conv, p_fc=p_fc, sigma=sigma)
    p_conv, p_fc, sigma = given["p_conv"], given["p_fc"], given["sigma"]
    conv, fc, unit = _nsm_parts(noise, p_conv, p_fc, sigma, sampler, estimator, temperature, alpha, bias_scale)
    if not real_input:
        return table6(in_shape, num_classes, conv=conv, fc=fc, unit=unit, binary_input=True, hidden=hidden)
    return table6(
        in_shape,
        num_classes,
        conv=conv,
        fc=fc,
        unit=unit,
        binary_input=False,
        hidden=hidden,
        first_conv=lambda i, o, k: conv(i, o, k, variance="exact"),
        inputs=Centre(),
    )


def table6_dcnn(in_shape, num_classes, *, hidden=512) -> nn.Sequential:
    """The SI Table 6 network with deterministic ReLU units (dCNN)."""
    return table6(
        in_shape,
        num_classes,
        conv=nn.Conv2d,
        fc=nn.Linear,
        unit=lambda n, c: [nn.ReLU()],
        binary_input=False,
        hidden=hidden,
    )


def fc_nsm(in_shape, num_classes, *, widths=(300, 300, 300), unit=None, p=0.5, **options) -> nn.Sequential:
    """A fully connected network of binary units on the binarized, flattened input.

    Without ``unit``: NSM layers (``p`` and ``options`` go to every :class:`NSMLinear`).
    With ``unit``: ``nn.Linear`` layers each followed by ``unit()``.
    """
    n = in_shape[0] * in_shape[1] * in_shape[2]
    layers: list[nn.Module] = [Binarize(), nn.Flatten()]
    for w in widths:
        layers += [NSMLinear(n, w, p=p, **options)] if unit is None else [nn.Linear(n, w), unit()]
        n = w
    return nn.Sequential(*layers, nn.Linear(n, num_classes))


def _fixed(name: str, options: dict, **fixed) -> dict:
    taken = sorted(set(options) & set(fixed))
    if taken:
        raise ValueError(
            f"model {name!r} fixes {', '.join(f'{k}={fixed[k]!r}' for k in taken)}; use another model to change it"
        )
    return {**options, **fixed}


# ---------------------------------------------------------------------------- NSM family


@register_model("bnsm", "Table 6 network, NSM units, Bernoulli synapses (p=0.25 conv, 0.5 fc)")
def _bnsm(in_shape, num_classes, **options):
    return table6_nsm(in_shape, num_classes, **_fixed("bnsm", options, noise="bernoulli"))


@register_model("gnsm", "Table 6 network, NSM units, Gaussian synapses N(1, sigma^2), sigma=1")
def _gnsm(in_shape, num_classes, **options):
    return table6_nsm(in_shape, num_classes, **_fixed("gnsm", options, noise="gaussian"))


@register_model(
    "bnsm-unitbias",
    "bNSM whose bias acts on the unit-norm weights: P uses b / c, not b / (c ||w||) (the firing "
    "probability of the authors' code)",
)
def _bnsm_unitbias(in_shape, num_classes, **options):
    return table6_nsm(in_shape, num_classes, **_fixed("bnsm-unitbias", options, noise="bernoulli", bias_scale="unit"))


@register_model("bnsm-wide", "bNSM with a 1024-unit fully connected layer (the poster's width; bnsm has 512)")
def _bnsm_wide(in_shape, num_classes, **options):
    return table6_nsm(in_shape, num_classes, **_fixed("bnsm-wide", options, noise="bernoulli", hidden=1024))


# BinConcrete draws its own logistic noise and none of the synapses': the noise model enters only
# through c in the bias term b / (c ||w||). So bnsm-binconcrete and gnsm-binconcrete are one
# function under b_g = b_b c_g / c_b; both are kept (the paper names both), and say so.
_SAME_BC = (
    "; draws no synaptic noise: the same network as {other} with the bias scaled by the ratio "
    "of their c = sqrt(2 Var[xi])"
)


@register_model(
    "bnsm-real", "bNSM whose first layer reads the grey levels 2x - 1 (variance exact) instead of sgn(2x - 1)"
)
def _bnsm_real(in_shape, num_classes, **options):
    return table6_nsm(in_shape, num_classes, **_fixed("bnsm-real", options, noise="bernoulli", real_input=True))


@register_model(
    "gnsm-real", "gNSM whose first layer reads the grey levels 2x - 1 (variance exact) instead of sgn(2x - 1)"
)
def _gnsm_real(in_shape, num_classes, **options):
    return table6_nsm(in_shape, num_classes, **_fixed("gnsm-real", options, noise="gaussian", real_input=True))


@register_model(
    "bnsm-binconcrete",
    "bNSM trained through the BinConcrete relaxation (SI 4.6, eq. 14)" + _SAME_BC.format(other="gnsm-binconcrete"),
)
def _bnsm_bc(in_shape, num_classes, **options):
    return table6_nsm(
        in_shape, num_classes, **_fixed("bnsm-binconcrete", options, noise="bernoulli", estimator="binconcrete")
    )


@register_model(
    "gnsm-binconcrete",
    "gNSM trained through the BinConcrete relaxation (SI 4.6, eq. 14)" + _SAME_BC.format(other="bnsm-binconcrete"),
)
def _gnsm_bc(in_shape, num_classes, **options):
    return table6_nsm(
        in_shape, num_classes, **_fixed("gnsm-binconcrete", options, noise="gaussian", estimator="binconcrete")
    )


@register_model("ste", "bNSM trained with the straight-through estimator (identity through sgn)")
def _ste(in_shape, num_classes, **options):
    return table6_nsm(in_shape, num_classes, **_fixed("ste", options, noise="bernoulli", estimator="ste"))


@register_model(
    "bn", "binary network (not batch norm): noise-free sgn units of the bNSM, trained through erf", stochastic=False
)
def _bn(in_shape, num_classes, **options):
    refuse_options(
        "bn",
        options,
        "its units are noise-free sgn(E[u]) trained through erf(t), with nothing to sample or estimate",
        ("sampler", "estimator", "temperature", "alpha"),
    )
    model = table6_nsm(in_shape, num_classes, **_fixed("bn", options, noise="bernoulli"))
    for layer in nsm_layers(model):
        layer.fixed_mode = "threshold"  # forward sgn(E[u]), backward d erf(t)
    return model


@register_model("bnsm-fc", "784-300-300-300 fully connected bNSM, p=0.5 (SI 4.5, the W3 figure)")
def _bnsm_fc(in_shape, num_classes, **options):
    # refuses sigma, which Bernoulli synapses do not have
    noise_parameters("bernoulli", {"p": 0.5, "sigma": 1.0}, p=options.get("p"), sigma=options.get("sigma"))
    return fc_nsm(in_shape, num_classes, **_fixed("bnsm-fc", options, noise="bernoulli"))


# ---------------------------------------------------------------------------- baselines


@register_model("dcnn", "Table 6 network, deterministic ReLU units, real-valued inputs", stochastic=False)
def _dcnn(in_shape, num_classes, **options):
    return table6_dcnn(in_shape, num_classes, **options)


@register_model("dcnn-wide", "dCNN with a 1024-unit fully connected layer (as bnsm-wide)", stochastic=False)
def _dcnn_wide(in_shape, num_classes):
    return table6_dcnn(in_shape, num_classes, hidden=1024)


@register_model(
    "dcnn-150",
    "dCNN with a 150-unit fully connected layer, the width of the authors' released MNIST dCNN script",
    stochastic=False,
)
def _dcnn_150(in_shape, num_classes):
    return table6_dcnn(in_shape, num_classes, hidden=150)


@register_model(
    "sigmoid", "Table 6 network, deterministic sigmoid units, real-valued inputs (SI 4.11)", stochastic=False
)
def _sigmoid(in_shape, num_classes, hidden=512):
    return table6(
        in_shape,
        num_classes,
        conv=nn.Conv2d,
        fc=nn.Linear,
        unit=lambda n, c: [nn.Sigmoid()],
        binary_input=False,
        hidden=hidden,
    )


def _bn_then(unit: Callable[[], nn.Module]):
    return lambda n, is_conv: [nn.BatchNorm2d(n) if is_conv else nn.BatchNorm1d(n), unit()]


# The deterministic networks of the convergence comparison (main text: the NSM trains like a
# weight-normalized network): the same Table 6 network with weight or batch normalization.
@register_model("dcnn-wn", "dCNN with weight normalization (w = g v/||v||)", stochastic=False)
def _dcnn_wn(in_shape, num_classes, hidden=512):
    return table6(
        in_shape,
        num_classes,
        conv=WNConv2d,
        fc=WNLinear,
        unit=lambda n, c: [nn.ReLU()],
        binary_input=False,
        hidden=hidden,
    )


@register_model("dcnn-bn", "dCNN with batch normalization before each ReLU", stochastic=False)
def _dcnn_bn(in_shape, num_classes, hidden=512):
    return table6(
        in_shape, num_classes, conv=nn.Conv2d, fc=nn.Linear, unit=_bn_then(nn.ReLU), binary_input=False, hidden=hidden
    )


@register_model("sigmoid-wn", "the sigmoid network with weight normalization", stochastic=False)
def _sigmoid_wn(in_shape, num_classes, hidden=512):
    return table6(
        in_shape,
        num_classes,
        conv=WNConv2d,
        fc=WNLinear,
        unit=lambda n, c: [nn.Sigmoid()],
        binary_input=False,
        hidden=hidden,
    )


@register_model("sigmoid-bn", "the sigmoid network with batch normalization before each sigmoid", stochastic=False)
def _sigmoid_bn(in_shape, num_classes, hidden=512):
    return table6(
        in_shape,
        num_classes,
        conv=nn.Conv2d,
        fc=nn.Linear,
        unit=_bn_then(nn.Sigmoid),
        binary_input=False,
        hidden=hidden,
    )


@register_model(
    "dcnn-mcdropout", "dCNN with dropout kept on at test time after each hidden layer (MC dropout; p=0.1 conv, 0.5 fc)"
)
def _dcnn_mcdropout(in_shape, num_classes, hidden=512, p_conv=0.1, p_fc=0.5):
    return table6(
        in_shape,
        num_classes,
        conv=nn.Conv2d,
        fc=nn.Linear,
        unit=lambda n, c: [nn.ReLU(), MCDropout(p_conv if c else p_fc)],
        binary_input=False,
        hidden=hidden,
    )


@register_model("bd", "deterministic binary: sgn units, straight-through (identity) gradient", stochastic=False)
def _bd(in_shape, num_classes, hidden=512):
    return table6(
        in_shape,
        num_classes,
        conv=nn.Conv2d,
        fc=nn.Linear,
        unit=lambda n, c: [SignUnit()],
        binary_input=True,
        hidden=hidden,
    )


@register_model("wbd", "BD with weight normalization (w = g v/||v||)", stochastic=False)
def _wbd(in_shape, num_classes, hidden=512):
    return table6(
        in_shape,
        num_classes,
        conv=WNConv2d,
        fc=WNLinear,
        unit=lambda n, c: [SignUnit()],
        binary_input=True,
        hidden=hidden,
    )


@register_model("sn", "noisy rectifiers ReLU(u + N(0, 0.1^2)) with weight normalization, real inputs")
def _sn(in_shape, num_classes, hidden=512, sigma=0.1):
    return table6(
        in_shape,
        num_classes,
        conv=WNConv2d,
        fc=WNLinear,
        unit=lambda n, c: [NoisyReLU(sigma)],
        binary_input=False,
        hidden=hidden,
    )


@register_model("stnn", "stochastic binary units, P(+1) = sigmoid(u), no weight norm, probability gradient")
def _stnn(in_shape, num_classes, hidden=512):
    return table6(
        in_shape,
        num_classes,
        conv=nn.Conv2d,
        fc=nn.Linear,
        unit=lambda n, c: [SigmoidBernoulli()],
        binary_input=True,
        hidden=hidden,
    )


@register_model("stnn-fc", "784-300-300-300 fully connected StNN (SI 4.5, the W3 figure)")
def _stnn_fc(in_shape, num_classes, widths=(300, 300, 300)):
    return fc_nsm(in_shape, num_classes, widths=widths, unit=SigmoidBernoulli)


@register_model(
    "bnn", "binarized weights and activations (Courbariaux & Hubara 2016), batch norm, clipped STE", stochastic=False
)
def _bnn(in_shape, num_classes, hidden=512):
    return table6(
        in_shape,
        num_classes,
        conv=BinaryConv2d,
        fc=BinaryLinear,
        unit=_bn_then(lambda: SignUnit(clip=True)),
        binary_input=True,
        hidden=hidden,
    )


@register_model("s2m", "Synaptic Sampling Machine: RBM with blank-out synapses, CD-1 (fully connected)")
def _s2m(in_shape, num_classes, **options):
    return SynapticSamplingMachine(in_shape[0] * in_shape[1] * in_shape[2], num_classes, **options)
