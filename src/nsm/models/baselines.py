"""Building blocks of the paper's baselines (SI Table 5; docs/design.md §7).

Each class holds one defining property, tested in ``tests/test_baselines.py``:

- :class:`WNLinear`, :class:`WNConv2d`: weight normalization (Salimans & Kingma 2016),
  w = g v / ||v|| per output unit, with ``weight`` = v and ``magnitude`` = g (starting at 1,
  like the NSM's beta). Scaling a row of v leaves the output unchanged.
- :class:`SignUnit`: deterministic binary units sgn(u) with a straight-through gradient
  (identity, or Courbariaux & Hubara's clipped identity 1{|u| <= 1}).
- :class:`NoisyReLU`: ReLU(u + N(0, sigma^2)), the SN baseline's noisy rectifier.
- :class:`MCDropout`: dropout kept on at test time (the MC-dropout uncertainty baseline).
- :class:`SigmoidBernoulli`: stochastic binary units, P(z = +1) = sigmoid(u), trained with
  the gradient of E[z] = 2 sigmoid(u) - 1 (the StNN baseline).
- :class:`BinaryLinear`, :class:`BinaryConv2d`: binarized weights sgn(w) in the forward
  pass, real-valued weights kept, clipped to [-1, 1] after every optimizer step (BNN).

The stochastic ones (:class:`NoisyReLU`, :class:`SigmoidBernoulli`) follow the same
``mode`` switch as the NSM layers (see :func:`nsm.forward_mode`): ``"sample"`` draws the
noise, ``"mean"`` outputs the expectation, ``"threshold"`` switches the noise off.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.functional import row_norms, sign, sign_ste
from ..nn.layers import Stochastic
from ..nn.noise import rng, wide_dtype

__all__ = [
    "WNLinear",
    "WNConv2d",
    "SignUnit",
    "NoisyReLU",
    "MCDropout",
    "SigmoidBernoulli",
    "BinaryLinear",
    "BinaryConv2d",
    "sign_clipped_ste",
    "after_step",
]


def _unit_rows(weight: Tensor, magnitude: Tensor) -> Tensor:
    """g v / ||v||, one norm per output unit (row of a matrix, or whole filter)."""
    return weight * (magnitude / row_norms(weight)).to(weight.dtype).view(-1, *([1] * (weight.dim() - 1)))


class _WeightNorm:
    magnitude: nn.Parameter

    def _init_magnitude(self, n: int) -> None:
        self.magnitude = nn.Parameter(torch.ones(n, device=self.weight.device, dtype=self.weight.dtype))

    def normalized_weight(self) -> Tensor:
        """The effective weight g v / ||v||."""
        return _unit_rows(self.weight, self.magnitude)


class WNLinear(_WeightNorm, nn.Linear):
    """``nn.Linear`` with weight normalization: y = (g / ||v||) v . x + b per output unit."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kw) -> None:
        super().__init__(in_features, out_features, bias, **kw)
        self._init_magnitude(out_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class WNConv2d(_WeightNorm, nn.Conv2d):
    """``nn.Conv2d`` with weight normalization, one norm per filter."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self._init_magnitude(self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class _SignClipped(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def sign_clipped_ste(x: Tensor) -> Tensor:
    """Forward sgn(x); backward grad * 1{|x| <= 1} (the hard-tanh straight-through estimator)."""
    return _SignClipped.apply(x)


class SignUnit(nn.Module):
    """Deterministic binary units: forward sgn(u) (sgn(0) = +1), straight-through backward.

    ``clip=False``: identity gradient (BD, wBD). ``clip=True``: zero gradient where |u| > 1
    (BNN, Courbariaux & Hubara 2016).
    """

    def __init__(self, clip: bool = False) -> None:
        super().__init__()
        self.clip = bool(clip)

    def forward(self, u: Tensor) -> Tensor:
        return sign_clipped_ste(u) if self.clip else sign_ste(u)

    def extra_repr(self) -> str:
        return f"clip={self.clip}"


class NoisyReLU(Stochastic, nn.Module):
    """ReLU(u + eps), eps ~ N(0, sigma^2) drawn afresh at every call (the SN baseline).

    ``mode="mean"``: its expectation E[ReLU(u + eps)] = u Phi(u/sigma) + sigma phi(u/sigma);
    ``"threshold"``: ReLU(u), the noise off."""

    def __init__(self, sigma: float = 0.1, generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"sigma must be a number > 0, got {sigma!r}")
        self.sigma, self.generator = float(sigma), generator

    def forward(self, u: Tensor) -> Tensor:
        if self.mode == "mean":
            z = u / self.sigma
            cdf = 0.5 * torch.erfc(-z / math.sqrt(2.0))  # Phi(z), exact in the lower tail too
            pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
            return u * cdf + self.sigma * pdf
        if self.mode != "sample":
            return F.relu(u)
        eps = torch.randn(u.shape, **rng(self.generator), device=u.device, dtype=u.dtype)
        return F.relu(u + self.sigma * eps)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class MCDropout(Stochastic, nn.Module):
    """Dropout that stays on at test time (Monte-Carlo dropout, Gal & Ghahramani 2016).

    ``mode="sample"``: each unit is zeroed with probability ``p`` and the rest scaled by
    1/(1 - p), in training and in evaluation alike; ``"mean"`` / ``"threshold"``: the
    identity (the usual deterministic dropout network).
    """

    def __init__(self, p: float = 0.5, generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        if not (isinstance(p, (int, float)) and 0 <= p < 1):
            raise ValueError(f"dropout p must be a number in [0, 1), got {p!r}")
        self.p, self.generator = float(p), generator

    def forward(self, x: Tensor) -> Tensor:
        if self.mode != "sample" or self.p == 0:
            return x
        if self.generator is None:
            return F.dropout(x, self.p, training=True)
        keep = torch.rand(x.shape, generator=self.generator, device=x.device) >= self.p  # F.dropout takes none
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SigmoidBernoulli(Stochastic, nn.Module):
    """Stochastic binary units: z = +1 with probability sigmoid(u), else -1 (StNN).

    Backward: the gradient of E[z] = 2 sigmoid(u) - 1 (the probability gradient, as the NSM's
    ``prob`` estimator, but with a sigmoid firing probability and no weight normalization).
    ``mode="mean"`` outputs 2 sigmoid(u) - 1; ``"threshold"`` outputs sgn(u).
    """

    def __init__(self, generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, u: Tensor) -> Tensor:
        mean = 2 * torch.sigmoid(u) - 1
        if self.mode == "mean":
            return mean
        if self.mode == "threshold":
            z = sign(u)
        else:
            # P(z = +1) = P(U < sigmoid(u)); a half-precision uniform (8-11 bits) would move that
            # probability, so half-precision models compare in float32
            dtype = wide_dtype(u.dtype)
            uni = torch.rand(u.shape, **rng(self.generator), device=u.device, dtype=dtype)
            z = sign(torch.sigmoid(u.detach().to(dtype)) - uni).to(u.dtype)
        return z + (mean - mean.detach()) if mean.requires_grad else z


class _BinaryWeights:
    """Forward with sgn(w); the real-valued w gets the straight-through gradient (clipped)."""

    weight: nn.Parameter

    def binary_weight(self) -> Tensor:
        return sign_clipped_ste(self.weight)

    @torch.no_grad()
    def after_step(self) -> None:
        """Clip the real-valued weights to [-1, 1] (called after every optimizer step)."""
        self.weight.clamp_(-1.0, 1.0)


class BinaryLinear(_BinaryWeights, nn.Linear):
    """``nn.Linear`` whose forward pass uses only +-1 weights (BNN)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.binary_weight(), self.bias)


class BinaryConv2d(_BinaryWeights, nn.Conv2d):
    """``nn.Conv2d`` whose forward pass uses only +-1 weights (BNN)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.binary_weight(), self.bias)


def after_step(model: nn.Module) -> None:
    """Run every module's ``after_step`` hook (e.g. BNN weight clipping) after an optimizer step."""
    for m in model.modules():
        hook = getattr(m, "after_step", None)
        if callable(hook):
            hook()
