"""Gradient estimators: from a sampled state to a layer output with a useful gradient.

docs/design.md §3. ``prob`` (default): forward the sampled z, backward the gradient of
E[z] = 2P - 1 (main text eq. 3, SI 4.2). ``ste``: forward sgn(u), backward the identity to
the noisy pre-activation u. ``binconcrete``: the Binary Concrete relaxation (SI 4.6, eq. 14).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..utils.registry import Registry, name_of
from .functional import sign, sign_prob, sign_ste
from .noise import rng, wide_dtype

__all__ = ["ESTIMATORS", "make_estimator", "ProbEstimator", "STEEstimator", "BinConcreteEstimator", "ALPHAS"]

# An estimator is called as est(u, ps, generator) where u is the noisy pre-activation
# (None if est.needs_sample is False) and ps the layer's :class:`Pass` (ps.t: the drive).
# Attributes: needs_sample, needs_drive (ps.t is built with autograd before sampling),
# grad_through_sample (u must carry a graph), relaxed (the output is not +-1 and the next
# layer should take its sign).

ESTIMATORS: Registry[Callable[..., Callable]] = Registry("estimator")


@ESTIMATORS.register("prob")
class ProbEstimator:
    """Forward: the sampled state z = sgn(u). Backward: the gradient of E[z] = 2P - 1 = erf(t).

    Main text eq. 3, SI 4.2 (Fig. 3). Without autograd it returns z and skips erf.
    """

    name = "prob"
    needs_sample = True
    needs_drive = False  # uses s, scale and offset directly (fused backward)
    grad_through_sample = False
    relaxed = False

    def __call__(self, u, ps, generator=None):
        if not torch.is_grad_enabled():
            return sign(u, inplace=True)
        return sign_prob(u, ps.s, *ps.terms())

    def __repr__(self):
        return "prob"


@ESTIMATORS.register("ste")
class STEEstimator:
    """Forward: z = sgn(u) of the noisy pre-activation. Backward: identity, d z / d u = 1."""

    name = "ste"
    needs_sample = True
    needs_drive = False
    grad_through_sample = True
    relaxed = False

    def __call__(self, u, ps, generator=None):
        return sign_ste(u)

    def __repr__(self):
        return "ste"


ALPHAS = ("probability", "odds")


@ESTIMATORS.register("binconcrete")
class BinConcreteEstimator:
    """Binary Concrete relaxation of the state (SI 4.6, eq. 14).

    X = sigmoid((L + log alpha) / lambda), L = log U - log(1 - U), U ~ U(0, 1); output 2X - 1,
    gradient through X. ``alpha="probability"`` sets alpha = P as eq. 14 and the paper do;
    then P(X > 1/2) = P / (1 + P), not P. ``alpha="odds"`` sets alpha = P / (1 - P), for
    which P(X > 1/2) = P. The next layer should take sgn of the output (identity gradient):
    the models do it with :func:`sign_ste`.
    """

    name = "binconcrete"
    needs_sample = False
    grad_through_sample = False
    relaxed = True

    def __init__(self, temperature: float = 1.0, alpha: str = "probability", **_):
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not float(temperature) > 0
            or not math.isfinite(temperature)
        ):
            raise ValueError(f"binconcrete temperature must be a finite number > 0, got {temperature!r}")
        if alpha not in ALPHAS:
            raise ValueError(f"binconcrete alpha must be one of {ALPHAS}, got {alpha!r}")
        self.temperature = float(temperature)
        self.alpha = alpha

    def __call__(self, u, ps, generator=None):
        t = ps.t
        # P = Phi(sqrt(2) t); log P via log_ndtr for stability, in float32 at least (torch has
        # no half-precision log_ndtr on the CPU)
        # Half precision computes in float32 and rounds the output only: a bfloat16 uniform has
        # 8 bits, so U = 0 (probability 2^-9) and the clamp 1 - 2^-7 would cut both tails of
        # the law (a unit with P < 0.008 never fired, none fired more than 99.8% of the time).
        dtype = wide_dtype(t.dtype)
        x = math.sqrt(2.0) * t.to(dtype)
        log_alpha = torch.special.log_ndtr(x)
        if self.alpha == "odds":
            log_alpha = log_alpha - torch.special.log_ndtr(-x)
        uni = torch.rand(t.shape, **rng(generator), device=t.device, dtype=dtype)
        uni = uni.clamp_(torch.finfo(dtype).tiny, 1.0 - torch.finfo(dtype).eps)
        logistic = torch.log(uni) - torch.log1p(-uni)
        return (2.0 * torch.sigmoid((logistic + log_alpha) / self.temperature) - 1.0).to(t.dtype)

    def __repr__(self):
        return f"binconcrete(temperature={self.temperature:g}, alpha={self.alpha})"


def make_estimator(estimator, *, temperature: Optional[float] = None, alpha: Optional[str] = None):
    """An estimator from a registered name (with its options) or an estimator instance used as is.

    ``temperature`` and ``alpha`` are BinConcrete's (defaults 1 and ``"probability"``); given
    with any other estimator they would do nothing, so they are refused.
    """
    if isinstance(estimator, type):
        raise TypeError(
            f"estimator {estimator.__name__} is a class; pass an instance "
            f"({estimator.__name__}()) or a name ({', '.join(ESTIMATORS.names())})"
        )
    options = {k: v for k, v in (("temperature", temperature), ("alpha", alpha)) if v is not None}
    if isinstance(estimator, str):
        factory = ESTIMATORS.get(estimator)
        if estimator == "binconcrete":
            return factory(**options)
        est = factory()
    else:
        est = ESTIMATORS.get(estimator)
    if options:
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ValueError(
            f"{given}: options of estimator 'binconcrete' only, which estimator {name_of(est)!r} does not use"
        )
    return est
