"""Synaptic noise models: what xi is, its moments, and how it is drawn (docs/design.md §1).

| noise | xi | E[xi] | Var[xi] |
|---|---|---|---|
| Bernoulli (blank-out, bNSM) | Bern(p), p = probability the synapse transmits | p | p(1-p) |
| Gaussian (gNSM) | N(1, sigma^2) | 1 | sigma^2 |

``NOISES`` maps names to factories ``f(p=, sigma=) -> Noise``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ..utils.registry import Registry, name_of

__all__ = ["Noise", "NOISES", "make_noise", "bernoulli_noise", "gaussian_noise", "rng", "wide_dtype"]


def wide_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for the half-precision types, else ``dtype`` itself: where uniforms, norms and
    drives are computed for a half-precision layer (a half-precision uniform has 8-11 bits,
    which moves P(U < p) off p; a float16 sum of w^2 overflows above 65504)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


@dataclass(frozen=True)
class Noise:
    """Multiplicative synaptic noise xi: its name, parameter, mean and variance.

    ``sample(shape)`` draws xi. ``c = sqrt(2 Var[xi])`` sets the scale of the drive.
    """

    name: str
    param: float
    mean: float
    var: float

    @property
    def c(self) -> float:
        return math.sqrt(2.0 * self.var)

    def sample(self, shape, *, like: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """xi of the given shape, with ``like``'s dtype and device."""
        if self.name == "bernoulli":
            return self._bernoulli_mask(shape, like, generator).to(like.dtype)
        if self.name == "gaussian":
            e = torch.randn(shape, **rng(generator), device=like.device, dtype=like.dtype)
            return e.mul_(self.param).add_(1.0)
        raise NotImplementedError(f"noise {self.name!r} has no sampler; subclass Noise")

    def apply(self, x: Tensor, *, generator: Optional[torch.Generator] = None) -> Tensor:
        """xi * x with a fresh xi of x's shape (no gradient through xi)."""
        if self.name == "bernoulli":
            return x * self._bernoulli_mask(x.shape, x, generator)
        return x * self.sample(x.shape, like=x, generator=generator)

    def _bernoulli_mask(self, shape, like: Tensor, generator) -> Tensor:
        """Boolean mask, True with probability p.

        Random numbers are the cost here (torch draws them on one CPU thread). When p is a
        multiple of 2^-16 (0.25 and 0.5 are), each 64-bit draw gives four exact 16-bit
        uniforms; otherwise one float uniform per element.
        """
        level = self.param * 65536.0
        if level == int(level) and not torch.compiler.is_compiling():
            n = math.prod(shape)
            bits = torch.randint(
                -(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, **rng(generator), device=like.device
            )
            return (bits.view(torch.int16)[:n] < int(level) - 32768).view(shape)
        # any other p, or compiled: one uniform per element (drawn inside the fused kernel when
        # compiled). Half-precision uniforms have 8-11 bits, which moves P(u < p) off p (bfloat16
        # at p = 0.3: 0.3018), so those draw float32 uniforms.
        u = torch.rand(shape, **rng(generator), device=like.device, dtype=wide_dtype(like.dtype))
        return u < self.param

    def __str__(self) -> str:
        return f"{self.name}(p={self.param})" if self.name == "bernoulli" else f"{self.name}(sigma={self.param})"


def rng(generator: Optional[torch.Generator]) -> dict:
    """``generator=`` for torch's random functions, or nothing for the default generator.

    Passing ``generator=None`` explicitly stops ``torch.compile`` and ``torch.export`` from
    tracing a draw whose size depends on a dynamic batch dimension; leaving it out does not.
    """
    return {} if generator is None else {"generator": generator}


NOISES: Registry[Callable[..., Noise]] = Registry("noise")


@NOISES.register("bernoulli")
def bernoulli_noise(p: float = 0.5, **_) -> Noise:
    """Blank-out synapses: xi ~ Bernoulli(p), p = probability that the synapse transmits."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < float(p) < 1.0:
        raise ValueError(f"bernoulli noise needs 0 < p < 1 (probability a synapse transmits), got p={p!r}")
    p = float(p)
    return Noise("bernoulli", p, p, p * (1.0 - p))


@NOISES.register("gaussian")
def gaussian_noise(sigma: float = 1.0, **_) -> Noise:
    """Gaussian synapses: xi ~ N(1, sigma^2)."""
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, (int, float))
        or not float(sigma) > 0.0
        or not math.isfinite(sigma)
    ):
        raise ValueError(f"gaussian noise needs a finite sigma > 0, got sigma={sigma!r}")
    sigma = float(sigma)
    return Noise("gaussian", sigma, 1.0, sigma * sigma)


def make_noise(noise, *, p: float = 0.5, sigma: float = 1.0) -> Noise:
    """A :class:`Noise` from a name, a factory ``f(p=, sigma=)`` or a ready Noise."""
    if isinstance(noise, Noise):
        return noise
    out = NOISES.get(noise)(p=p, sigma=sigma)
    if not isinstance(out, Noise):
        raise ValueError(f"noise factory {name_of(noise)} returned {type(out).__name__}, expected nsm.Noise")
    return out
