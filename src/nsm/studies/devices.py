"""Device non-idealities of an NSM built in hardware (Dutta et al., Nat. Commun. 2022).

In the follow-up paper a blank-out synapse is a stochastic selector in series with a
ferroelectric FET that stores the weight. Three non-idealities are modelled here, for
robustness curves of trained networks (inference only).

**Conductance levels** (:func:`quantize`). A layer's weights are stored on ``L`` states
spanning [-w_max, +w_max], one scale per layer: w_max = max |w| of the layer's weight tensor
by default, or the smaller range that ``clip_std`` sets (below). With the potentiation
nonlinearity ``nu >= 0`` the states are::

    G_k = (1 - exp(-nu k/(L-1))) / (1 - exp(-nu))   in [0, 1],   k = 0 .. L-1
    w_k = w_max (2 G_k - 1)

``nu = 0`` gives the linear states G_k = k/(L-1), i.e. w_k = w_max (2k/(L-1) - 1); a
saturating curve (nu > 0) packs the states towards +w_max. Each weight goes to the nearest
state; a tie (a weight exactly half-way) goes to the upper state, so two levels give
sgn(w) w_max with sgn(0) = +1. Weights beyond +-w_max go to the end states.

With w_max = max |w| (the default) a few large weights set the range, and most weights of a
trained layer lie near 0: with 3 levels {-w_max, 0, +w_max} every |w| < w_max/2 (97-99.6 %
of the hidden weights of the MNIST networks of ``results/``) becomes 0. ``clip_std = c``
sets the range of each layer to w_max = min(max |w|, c * rms(w)) instead, rms(w) =
sqrt(mean(w^2)) over the layer's weight tensor: the states are symmetric about 0, so the
range is measured from 0, not from the mean (a layer of equal weights keeps them, where
c * std(w) = 0 sent them all to 0). The weights beyond it saturate at the end states.
(For the near-zero-mean weights of a trained layer rms(w) and std(w) are close.)

**Device-to-device spread of the blank-out probability** (``p_spread``). Each synapse of a
Bernoulli NSM layer (bNSM) gets its own fixed keep-probability, drawn once::

    p_ij = clip(p + p_spread * N(0, 1), 0.01, 0.99)

where p is the layer's nominal p. The layer's a_i is unchanged: it is the one the trained
magnitude sets with the nominal p, a_i = beta_i c - p, c = sqrt(2 p (1 - p)). The drive
u_i = sum_j (xi_ij + a_i) w_ij z_j + b_i, xi_ij ~ Bern(p_ij), then has::

    E[u_i]   = sum_j (p_ij + a_i) w_ij z_j + b_i
    Var[u_i] = sum_j p_ij (1 - p_ij) w_ij^2 z_j^2

For a convolution p_ij is one value per weight entry (the filter's device, a tensor shaped
like the weight) and the sums are the convolutions of z with (p + a) w and of z^2 with
p (1 - p) w^2. u is drawn from its Gaussian law N(E[u], Var[u]) (the central-limit law, as
the library's ``"probability"`` sampler does for the nominal p) and the unit outputs
sgn(u) (+1 at 0). The layer's ``mode`` (see :func:`nsm.forward_mode`) is respected:
``"sample"`` draws, ``"mean"`` outputs E[sgn u] = erf(E[u] / sqrt(2 Var[u])),
``"threshold"`` outputs sgn(E[u]). A unit without variance (Var[u] = 0: every synapse meets
a zero weight or a zero input) outputs sgn(b) with certainty in every mode, +1 for b >= 0
or without bias, as the library's own layers do (:func:`nsm.nn.functional.drive_terms`;
Var[u] / Var[xi] at or below ``NORM_FLOOR``^2 counts as zero; it was a coin flip for b = 0).
The variance follows the inner layer's ``variance``: with ``"exact"`` the sum above; with
``"norm"`` (the paper's form) the same sum with z_j^2 taken as 1, i.e.
sum_j p_ij (1 - p_ij) w_ij^2 over the weights that meet the image, as the layer's own law is
for any input (the two agree on +-1 inputs; in ``"mean"`` mode a hidden layer's input is
real-valued, erf(t)). Gaussian-noise NSM layers and non-NSM layers have no
blank-out probability: a spread does not apply to them (they are left as they are).

**Read noise** (``read_noise``). At every forward pass each stored weight is read as::

    w_read = w + read_noise * w_max * N(0, 1),   w_max = max |w| of the layer (after quantization)

one fresh draw per pass, shared by the examples of the pass. In Monte-Carlo prediction
(:func:`nsm.mc_predict`) a batched pass holds k stacked copies of its examples, one per
Monte-Carlo pass, and tells the layers k (their ``copies``): each copy gets its own draw, so
the S passes of an example see S independent reads, whatever ``max_pass`` (before
2026-11-30 the k copies shared one draw, and an example's S passes got between 1 and S
reads depending on ``max_pass``). The cost: every weight is drawn S times per group of
examples that ``max_pass`` lets share a pass. The read weight replaces the stored one in
every formula of the layer: its own forward pass (any layer type), or the two sums above.
Read noise is a property of the device, not of the model: it stays on in every ``mode``,
including ``"mean"`` and ``"threshold"``.

Conventions:

- A *weight layer* is any module whose own ``weight`` is a parameter of dim >= 2
  (``nn.Linear``, ``nn.Conv2d``, :class:`~nsm.NSMLinear`, :class:`~nsm.NSMConv2d` and
  subclasses, the baselines' weight-normalized and binary layers, ...); BatchNorm and
  LayerNorm weights (dim 1) are not. Only ``weight`` is quantized and read noisily:
  biases and magnitudes (beta, or the weight-normalized layers' g) stay in full precision
  (peripheral circuits). For :class:`~nsm.models.baselines.WNLinear` / ``WNConv2d`` the stored
  ``weight`` is v, quantized as it is; the effective weight g v / ||v|| is then computed
  from the quantized v (the device stores v; the normalization is peripheral).
- :func:`with_device` returns a deep copy; the original model is untouched. Layers that
  need it are replaced in the copy by wrappers holding the (quantized) layer as ``.layer``:
  :class:`DeviceNSMLayer` (a bNSM layer with per-synapse p, with or without read noise) and
  :class:`ReadNoiseLayer` (read noise on any other weight layer). The inner NSM layers stay
  in the model, so :func:`nsm.nn.layers.stochastic_layers` finds them and
  :func:`nsm.forward_mode` switches them; a :class:`DeviceNSMLayer` reads its mode (and
  ``fixed_mode``) from its inner layer. The wrappers are themselves
  :class:`~nsm.nn.layers.Stochastic` (their passes differ), so that Monte-Carlo prediction
  sets their ``copies``; a :class:`ReadNoiseLayer` ignores the mode (read noise stays on).
  Without read noise and spread no layer is wrapped.
- A non-ideal device needs weight layers it can store: a model without any, or with a
  layer whose weight is computed from other parameters (``torch.nn.utils.parametrize``,
  e.g. ``torch.nn.utils.parametrizations.weight_norm`` / ``spectral_norm``, or the older
  hook-based ``torch.nn.utils.weight_norm``), is refused (ValueError naming the layer)
  rather than left as it is.
- The wrappers are for inference: their forward runs under ``torch.no_grad()`` and no
  gradient flows through them. A :class:`DeviceNSMLayer` always samples from the Gaussian
  law, whatever the inner layer's sampler or estimator; forward hooks on the inner layer
  do not fire (the wrapper does not call it).
- ``generator`` of :func:`with_device` draws p_ij, the read noise and the Gaussian samples
  of :class:`DeviceNSMLayer`; it also replaces the ``generator`` of the copy's noisy
  layers (those that have one), so that a device copy can be run reproducibly.
- :func:`accuracy_under` evaluates a model without stochastic layer with one pass
  (S = 1), even under read noise: each batched pass then sees one read-noise draw, shared
  by its examples.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from ..nn.functional import MODES, NORM_FLOOR, ZERO_VARIANCE_DRIVE, firing_probability, sign
from ..nn.layers import NSMLayer, Stochastic, noisy_layers
from ..nn.mc import mc_predict
from ..utils.checks import check_int

__all__ = [
    "DeviceModel",
    "DeviceNSMLayer",
    "ReadNoiseLayer",
    "quantize",
    "conductance_states",
    "with_device",
    "weight_layers",
    "accuracy_under",
    "P_MIN",
    "P_MAX",
]

P_MIN, P_MAX = 0.01, 0.99  # the per-synapse blank-out probability is clipped to [P_MIN, P_MAX]


# --------------------------------------------------------------------------------------
# conductance levels


def _check_nonneg(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={v!r}")
    return float(v)


def conductance_states(
    levels: int, w_max: float = 1.0, nonlinearity: float = 0.0, *, dtype=torch.float64, device=None
) -> Tensor:
    """The ``levels`` weight states w_max (2 G_k - 1), increasing (see the module docstring)."""
    levels = check_int("levels", levels, 2, "number of conductance states")
    nonlinearity = _check_nonneg("nonlinearity", nonlinearity)
    w_max = _check_nonneg("w_max", w_max)
    x = torch.arange(levels, dtype=torch.float64) / (levels - 1)
    if nonlinearity == 0.0:
        g = x
    else:  # (1 - e^{-nu x}) / (1 - e^{-nu}) with expm1: accurate as nu -> 0
        g = torch.expm1(-nonlinearity * x) / math.expm1(-nonlinearity)
        g[0], g[-1] = 0.0, 1.0
    return (w_max * (2.0 * g - 1.0)).to(dtype=dtype, device=device)


def quantize(w: Tensor, levels: int, *, w_max: Optional[float] = None, nonlinearity: float = 0.0) -> Tensor:
    """``w`` with every entry moved to the nearest of ``levels`` conductance states.

    The states span [-w_max, +w_max] (``w_max`` default: max |w|; all zeros if it is 0),
    linear for ``nonlinearity = 0``, on the saturating potentiation curve otherwise (see
    the module docstring). Returns a new tensor of w's dtype and device, without gradient.
    Non-finite weights (NaN, inf) are refused, whichever ``w_max``.
    """
    if not isinstance(w, Tensor):
        raise ValueError(f"w must be a torch.Tensor, got {type(w).__name__}")
    levels = check_int("levels", levels, 2, "number of conductance states")
    nonlinearity = _check_nonneg("nonlinearity", nonlinearity)
    with torch.no_grad():
        bad = int((~torch.isfinite(w.detach())).sum()) if w.is_floating_point() else 0
        if bad:
            raise ValueError(f"w has {bad} non-finite entries (NaN or inf) of {w.numel()}; cannot quantize")
        if w_max is None:
            w_max = float(w.detach().abs().max()) if w.numel() else 0.0
        else:
            w_max = _check_nonneg("w_max", w_max)
        if w_max == 0.0:
            return torch.zeros_like(w)
        states = conductance_states(levels, w_max, nonlinearity, device=w.device)
        mids = 0.5 * (states[1:] + states[:-1])
        # right=True: a weight on a mid-point goes to the upper state (sgn(0) = +1)
        k = torch.bucketize(w.detach().to(torch.float64), mids, right=True)
        return states[k].to(w.dtype)


# --------------------------------------------------------------------------------------
# the device model


@dataclass(frozen=True)
class DeviceModel:
    """The non-idealities of a device (see the module docstring).

    ``levels``: number of conductance states (None: full precision). ``nonlinearity``: nu
    of the potentiation curve. ``p_spread``: std of the per-synapse blank-out probability.
    ``read_noise``: std of the read noise, in units of the layer's max |w|.
    ``clip_std``: range of the states, w_max = min(max |w|, clip_std * rms(w)) per layer,
    rms(w) = sqrt(mean(w^2)) (None: max |w|). ``nonlinearity > 0`` and ``clip_std`` shape
    the conductance levels: they need ``levels``.
    """

    levels: Optional[int] = None
    nonlinearity: float = 0.0
    p_spread: float = 0.0
    read_noise: float = 0.0
    clip_std: Optional[float] = None

    def __post_init__(self) -> None:
        if self.levels is not None:
            object.__setattr__(self, "levels", check_int("levels", self.levels, 2, "number of conductance states"))
        if self.clip_std is not None:
            c = self.clip_std
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
                raise ValueError(
                    f"clip_std must be a finite number > 0 (a multiple of the layer's rms weight) "
                    f"or None, got clip_std={c!r}"
                )
            if self.levels is None:
                raise ValueError(f"clip_std={c!r} sets the range of the conductance levels; it needs levels")
            object.__setattr__(self, "clip_std", float(c))
        for name in ("nonlinearity", "p_spread", "read_noise"):
            object.__setattr__(self, name, _check_nonneg(name, getattr(self, name)))
        if self.nonlinearity > 0 and self.levels is None:
            raise ValueError(
                f"nonlinearity={self.nonlinearity:g} shapes the conductance levels; it needs levels "
                f"(without levels the weights stay in full precision and it would do nothing)"
            )

    @property
    def ideal(self) -> bool:
        """True when the device changes nothing (full precision, no spread, no read noise)."""
        return self.levels is None and self.p_spread == 0.0 and self.read_noise == 0.0


# --------------------------------------------------------------------------------------
# wrappers


def _read(weight: Tensor, read_noise: float, generator: Optional[torch.Generator]) -> Tensor:
    """w + read_noise * max|w| * N(0, 1), one draw (no gradient)."""
    w = weight.detach()
    if read_noise == 0.0:
        return w
    w_max = w.abs().max()
    eps = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
    return eps.mul_(w_max * read_noise).add_(w)


def _copies(module: nn.Module, x) -> int:
    """How many reads a call of a read-noise wrapper draws: ``module.copies`` (set by
    Monte-Carlo prediction while the batch holds that many stacked copies of its examples,
    one per pass) if it reads noisily, else 1. The batch must split into the copies."""
    k = int(getattr(module, "copies", 1) or 1)
    if k <= 1 or module.read_noise == 0.0:
        return 1
    rows = x.shape[0] if isinstance(x, Tensor) and x.dim() > 0 else None
    if rows is None or rows % k:
        raise ValueError(
            f"{type(module).__name__}: copies={k} (set by Monte-Carlo prediction) but the input "
            f"{'has ' + str(rows) + ' rows' if rows is not None else 'is not a batch tensor'}, not {k} stacked copies; "
            f"one read-noise draw per copy needs the batch the model was given"
        )
    return k


@contextlib.contextmanager
def _single_copy(layer: nn.Module):
    """The inner layer sees one copy at a time (its ``copies`` hint set to 1, restored after)."""
    saved = getattr(layer, "copies", None)
    if saved is not None:
        layer.copies = 1
    try:
        yield
    finally:
        if saved is not None:
            layer.copies = saved


class ReadNoiseLayer(Stochastic, nn.Module):
    """Any weight layer, run with a freshly read weight w + read_noise max|w| N(0, 1) per pass.

    The inner ``layer`` keeps the stored weight; its own forward pass runs with the read
    weight in place of ``weight`` (``torch.func.functional_call``). One read per call, or,
    when Monte-Carlo prediction sets ``copies = k`` (the batch is k stacked copies of its
    examples, one per pass), one read per copy. The mode is ignored: read noise stays on.
    Inference only.
    """

    def __init__(self, layer: nn.Module, read_noise: float, generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        _weight_of(layer, "layer")
        self.layer = layer
        self.read_noise = _check_nonneg("read_noise", read_noise)
        self.generator = generator
        self.mode = "sample"
        self.copies = 1  # set by nsm.nn.mc while a batch holds stacked copies of its examples

    def read_weight(self) -> Tensor:
        """One read of the stored weight."""
        return _read(self.layer.weight, self.read_noise, self.generator)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            k = _copies(self, args[0] if args else None)
            if k == 1:
                return functional_call(self.layer, {"weight": self.read_weight()}, args, kwargs)
            x, rest = args[0], args[1:]
            with _single_copy(self.layer):
                outs = [
                    functional_call(self.layer, {"weight": self.read_weight()}, (part,) + rest, kwargs)
                    for part in x.chunk(k)
                ]
            return torch.cat(outs)

    def extra_repr(self) -> str:
        return f"read_noise={self.read_noise:g}"


class DeviceNSMLayer(Stochastic, nn.Module):
    """An NSM layer (``NSMLinear`` / ``NSMConv2d``) with per-synapse p_ij and read noise.

    ``p``: a tensor shaped like the layer's weight, every entry in (0, 1), or None for the
    nominal p of the layer (then only the Gaussian law and read noise differ from the
    layer). The moments and outputs are those of the module docstring, with
    a_i = beta_i c - E[xi] of the inner layer and its bias as it enters u (b, or, for
    ``bias_scale="unit"``, b ||w|| of the weight read, as in the layer's own pass under
    :class:`ReadNoiseLayer`). A unit without variance fires sgn(b) with certainty, as the
    layer does. The ``mode`` is the inner layer's (its ``fixed_mode`` first). Read noise:
    one read per call, one per copy when Monte-Carlo prediction sets ``copies`` (as
    :class:`ReadNoiseLayer`). Inference only (no gradient).
    """

    def __init__(
        self,
        layer: NSMLayer,
        p: Optional[Tensor] = None,
        read_noise: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        if not isinstance(layer, NSMLayer) or not hasattr(layer, "_prepare"):
            raise ValueError(f"layer must be an NSMLinear or NSMConv2d, got {type(layer).__name__}")
        self.layer = layer
        self.read_noise = _check_nonneg("read_noise", read_noise)
        self.generator = generator
        if p is not None:
            if not isinstance(p, Tensor) or tuple(p.shape) != tuple(layer.weight.shape):
                got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
                raise ValueError(f"p must be a tensor shaped like the weight {tuple(layer.weight.shape)}, got {got}")
            if not bool(((p > 0) & (p < 1)).all()):
                raise ValueError(f"p must lie in (0, 1), got values in [{p.min().item():g}, {p.max().item():g}]")
            p = p.detach().to(layer.weight)
        self.register_buffer("p", p)
        self.copies = 1  # set by nsm.nn.mc while a batch holds stacked copies of its examples

    @property
    def mode(self) -> str:
        return self.layer.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.layer.mode = value

    def read_weight(self) -> Tensor:
        """One read of the stored weight."""
        return _read(self.layer.weight, self.read_noise, self.generator)

    def moments(self, x: Tensor, weight: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """(E[u], Var[u]) of every output for input ``x``, with ``weight`` (default: one read)."""
        mean, var, _ = self._moments(x, weight)
        return mean, var

    def _moments(self, x: Tensor, weight: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """(E[u], Var[u], the bias as it enters u or None)."""
        layer = self.layer
        with torch.no_grad():
            layer._check_input(x)
            x, op = layer._prepare(x)  # (reflect/replicate/circular padding: padded here)
            w = self.read_weight() if weight is None else weight.detach()
            view = (-1,) + (1,) * (w.dim() - 1)
            noise = layer.noise
            a = (layer.magnitude.detach() * noise.c - noise.mean).view(view)
            if self.p is None:
                mean_w, var_w = (noise.mean + a) * w, noise.var * w * w
            else:
                mean_w, var_w = (self.p + a) * w, self.p * (1.0 - self.p) * w * w
            mean = op(x, mean_w)
            bias = layer._bias(x, op, w)  # b, or b ||w|| of the weight read for bias_scale="unit"
            if bias is not None:
                mean = mean + bias.detach()
            # the inner layer's law: "exact" sums z^2 w^2; "norm" takes z^2 = 1 (the paper's
            # form, which a real-valued input in mode "mean" does not change), over the weights
            # on the image where zero padding meets a filter
            var = op(x * x if layer.variance == "exact" else torch.ones_like(x), var_w)
        return mean, var, None if bias is None else bias.detach()

    def _drive(self, mean: Tensor, var: Tensor, bias: Optional[Tensor]) -> Tensor:
        """t = E[u] / sqrt(2 Var[u]); +-ZERO_VARIANCE_DRIVE (the sign of b, + without bias)
        where the unit has no variance, Var[u] / Var[xi] <= NORM_FLOOR^2 (as
        :func:`nsm.nn.functional.drive_terms`: u = b exactly there)."""
        zero = var <= NORM_FLOOR**2 * self.layer.noise.var
        t = mean / (2.0 * var.masked_fill(zero, 1.0)).sqrt()
        sure = torch.ones_like(t) if bias is None else torch.where(bias >= 0, 1.0, -1.0).to(t).expand_as(t)
        return torch.where(zero, sure * ZERO_VARIANCE_DRIVE, t)

    def drive(self, x: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """t = E[u] / sqrt(2 Var[u]) of every output (a unit without variance: +-ZERO_VARIANCE_DRIVE)."""
        return self._drive(*self._moments(x, weight))

    def firing_probability(self, x: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """P(z = +1 | x) = 1/2 (1 + erf(E[u] / sqrt(2 Var[u]))) under the Gaussian law
        (1 or 0 for a unit without variance, by the sign of its bias)."""
        return firing_probability(self.drive(x, weight))

    def forward(self, x: Tensor) -> Tensor:
        mode = self.layer.fixed_mode or self.layer.mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        with torch.no_grad():
            k = _copies(self, x)
            if k == 1:
                t = self.drive(x)
            else:  # one read of the weight per stacked copy (per Monte-Carlo pass)
                t = torch.cat([self.drive(part) for part in x.chunk(k)])
            if mode == "threshold":
                return sign(t)
            if mode == "mean":
                return torch.erf(t)
            # sgn(u), u = E[u] + sqrt(Var[u]) eps, has the sign of sqrt(2) t + eps
            eps = torch.randn(t.shape, generator=self.generator, device=t.device, dtype=t.dtype)
            return sign(eps.add_(t, alpha=math.sqrt(2.0)), inplace=True)

    def extra_repr(self) -> str:
        if self.p is None:
            return f"p=nominal, read_noise={self.read_noise:g}"
        return (
            f"p=per-synapse (mean {self.p.mean().item():.3g}, std {self.p.std().item():.3g}), "
            f"read_noise={self.read_noise:g}"
        )


# --------------------------------------------------------------------------------------
# applying a device model to a network


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _weight_of(module: nn.Module, what: str = "module") -> nn.Parameter:
    w = module._parameters.get("weight") if isinstance(module, nn.Module) else None
    if w is None or w.dim() < 2:
        raise ValueError(f"{what} must have a 'weight' parameter of dim >= 2, got {type(module).__name__}")
    return w


def _is_weight_layer(module: nn.Module) -> bool:
    w = module._parameters.get("weight")
    return isinstance(w, nn.Parameter) and w.dim() >= 2


def _computed_weight(module: nn.Module) -> bool:
    """True if ``module`` has a weight (dim >= 2) that is not its own parameter: computed by a
    parametrization (``torch.nn.utils.parametrize``) or a hook (the old ``weight_norm``)."""
    if "weight" in module._parameters:
        return False
    if parametrize.is_parametrized(module, "weight"):
        return True
    w = module._buffers.get("weight", module.__dict__.get("weight"))
    return isinstance(w, Tensor) and w.dim() >= 2


def _check_storable(model: nn.Module, device: DeviceModel) -> None:
    """Refuse a model whose weights a non-ideal device would leave untouched."""
    for name, m in model.named_modules():
        if _computed_weight(m):
            where = f"layer {name!r} ({type(m).__name__})" if name else f"the model ({type(m).__name__})"
            raise ValueError(
                f"{where} has a weight computed from other parameters (a parametrization such as "
                f"torch.nn.utils.parametrizations.weight_norm / spectral_norm, or a weight_norm hook), "
                f"which the device model {device} cannot store; remove it first "
                f"(torch.nn.utils.parametrize.remove_parametrizations(module, 'weight'))"
            )
    if not weight_layers(model):
        raise ValueError(
            f"the model ({type(model).__name__}) has no weight layer (a module whose own 'weight' "
            f"parameter has dim >= 2): the device model {device} would change nothing"
        )


def _is_bnsm(module: nn.Module) -> bool:
    return (
        isinstance(module, NSMLayer)
        and getattr(module.noise, "name", None) == "bernoulli"
        and hasattr(module, "_prepare")
    )


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The weight layers of ``model`` (modules whose own ``weight`` parameter has dim >= 2), in order."""
    return [m for m in model.modules() if _is_weight_layer(m)]


def _per_synapse_p(layer: NSMLayer, spread: float, generator: Optional[torch.Generator]) -> Tensor:
    w = layer.weight
    eps = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
    return eps.mul_(spread).add_(layer.noise.mean).clamp_(P_MIN, P_MAX)


def _range(w: Tensor, clip_std: Optional[float]) -> Optional[float]:
    """w_max of a layer: None (max |w|, chosen by quantize) or min(max |w|, clip_std * rms(w)),
    rms(w) = sqrt(mean(w^2)): the spread about 0, the centre of the states."""
    if clip_std is None or w.numel() == 0:
        return None
    w = w.detach().to(torch.float64)
    return min(float(w.abs().max()), clip_std * float(w.square().mean().sqrt()))


def with_device(model: nn.Module, device: DeviceModel, *, generator: Optional[torch.Generator] = None) -> nn.Module:
    """A deep copy of ``model`` whose weight layers behave like ``device`` (module docstring).

    Weights are quantized (if ``device.levels``); bNSM layers get per-synapse p
    (if ``device.p_spread``) and every weight layer read noise (if ``device.read_noise``)
    through the wrappers :class:`DeviceNSMLayer` / :class:`ReadNoiseLayer`. Raises
    ValueError if ``p_spread > 0`` and the model has no Bernoulli NSM layer, and, for a
    non-ideal device, if it has no weight layer or a layer with a computed (parametrized)
    weight.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(device, DeviceModel):
        raise ValueError(f"device must be an nsm.studies.devices.DeviceModel, got {type(device).__name__}")
    _check_generator(generator)
    if not device.ideal:
        _check_storable(model, device)
    if device.p_spread > 0 and not any(_is_bnsm(m) for m in model.modules()):
        raise ValueError(
            f"p_spread={device.p_spread:g} applies to Bernoulli (blank-out) NSM layers only, "
            f"and the model ({type(model).__name__}) has none; use p_spread=0"
        )
    if any(isinstance(m, (DeviceNSMLayer, ReadNoiseLayer)) for m in model.modules()):
        raise ValueError(
            "model already holds device layers (made by with_device); "
            "apply with_device to the original model, with one DeviceModel for all non-idealities"
        )
    out = copy.deepcopy(model)
    if generator is not None:
        for m in out.modules():
            if isinstance(m, Stochastic) and hasattr(m, "generator"):
                m.generator = generator

    replaced: dict[int, nn.Module] = {}

    def convert(m: nn.Module) -> nn.Module:
        if id(m) in replaced:  # a module shared by several parents is converted once
            return replaced[id(m)]
        if device.levels is not None:
            with torch.no_grad():
                m.weight.copy_(
                    quantize(
                        m.weight,
                        device.levels,
                        w_max=_range(m.weight, device.clip_std),
                        nonlinearity=device.nonlinearity,
                    )
                )
        new = m
        if device.p_spread > 0 and _is_bnsm(m):
            new = DeviceNSMLayer(m, _per_synapse_p(m, device.p_spread, generator), device.read_noise, generator)
        elif device.read_noise > 0:
            new = ReadNoiseLayer(m, device.read_noise, generator)
        replaced[id(m)] = new
        return new

    if _is_weight_layer(out):
        return convert(out)
    for parent in list(out.modules()):  # listed before any wrapper is made
        for name, child in list(parent.named_children()):
            if _is_weight_layer(child):
                setattr(parent, name, convert(child))
    return out


# --------------------------------------------------------------------------------------
# robustness


def accuracy_under(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    device_models: Mapping[Hashable, DeviceModel],
    *,
    samples: int,
    batch_size: int = 500,
    generator: Optional[torch.Generator] = None,
) -> dict:
    """Test accuracy (in [0, 1]) of :func:`nsm.mc_predict` on ``(x, y)`` under each device model.

    One fresh :func:`with_device` copy per entry (in eval mode), its generator seeded from
    ``generator`` (a CPU generator; default: torch's global one). ``samples`` passes for a
    model with stochastic layers, one pass otherwise. ``x`` is taken ``batch_size`` rows at a
    time. Returns ``{key: accuracy}`` with the keys of ``device_models``.
    """
    samples = check_int("samples", samples)
    batch_size = check_int("batch_size", batch_size)
    if (
        not isinstance(x, Tensor)
        or not isinstance(y, Tensor)
        or x.dim() < 1
        or x.shape[0] == 0
        or x.shape[0] != y.shape[0]
    ):
        raise ValueError(
            f"x and y must be non-empty tensors with as many rows, got "
            f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(y, 'shape', ()))}"
        )
    if not isinstance(device_models, Mapping) or not device_models:
        raise ValueError(f"device_models must be a non-empty dict of DeviceModel, got {device_models!r}")
    for key, dm in device_models.items():
        if not isinstance(dm, DeviceModel):
            raise ValueError(f"device_models[{key!r}] must be a DeviceModel, got {type(dm).__name__}")
    _check_generator(generator)
    S = samples if noisy_layers(model) else 1
    param = next(model.parameters(), None)
    where = param.device if param is not None else x.device
    result = {}
    for key, dm in device_models.items():
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        gen = torch.Generator(device=where).manual_seed(seed)
        dev = with_device(model, dm, generator=gen).eval()
        correct = 0
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            probs = mc_predict(dev, xb, S)
            correct += int((probs.argmax(-1) == yb.to(probs.device)).sum().item())
        result[key] = correct / x.shape[0]
    return result
