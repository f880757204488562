"""The NSM neuron as pure functions: noise models, firing probability, samplers, estimators.

Main text eqs. 1-4 (SPEC section 1). A unit receives inputs ``z`` through synapses with
always-on multiplicative noise ``xi``::

    u_i = sum_j (xi_ij + a_i) w_ij z_j + b_i,        z_i = sgn(u_i),  sgn(0) = +1

With ``c = sqrt(2 Var[xi])`` and the learnt magnitude ``beta_i = (E[xi] + a_i) / c``::

    E[u_i]   = beta_i c (w_i . z) + b_i
    Var[u_i] = Var[xi] ||w_i||^2                       (z_j in {-1, +1})
    P(z_i = +1 | z) = 1/2 (1 + erf(t_i)),   t_i = E[u_i] / sqrt(2 Var[u_i])
                                                = beta_i (w_i . z)/||w_i|| + b_i / (c ||w_i||)

``t`` is called the *drive* below. It depends on ``w_i`` only through its direction: the
network is weight-normalized by its own noise (SI 4.4, eqs. 6-7).

Everything here works for any linear operator ``op(x, w)`` (``F.linear`` or a convolution),
given per-output tensors (``magnitude``, ``bias``) already shaped to broadcast against its
output. The modules in :mod:`nsm.layers` hold the parameters and call :func:`nsm_forward`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .registry import Registry, name_of

__all__ = [
    "Noise", "NOISES", "SAMPLERS", "ESTIMATORS", "MODES", "VARIANCES",
    "make_noise", "make_estimator", "make_sampler",
    "sign", "sign_ste", "sign_prob", "binarize_input", "drive", "firing_probability", "nsm_forward",
]

Op = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------
# signs with identity gradients


def sign(x: Tensor, *, inplace: bool = False) -> Tensor:
    """sgn with sgn(0) = +1 (also for -0.0), as a float tensor of +-1, without gradient.

    ``inplace=True`` overwrites ``x`` (saves an allocation on the hot path).
    """
    with torch.no_grad():
        one = torch.ones((), dtype=x.dtype, device=x.device)
        if inplace:
            x.add_(0.0)  # -0.0 -> +0.0, so that copysign gives +1 at zero
            return torch.copysign(one, x, out=x)
        return torch.copysign(one, x + 0.0)


class _SignIdentity(torch.autograd.Function):
    """Forward sgn(x); backward the identity."""

    @staticmethod
    def forward(ctx, x):
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _SignProb(torch.autograd.Function):
    """Forward sgn(u) for a sampled u (no gradient); backward through E[sgn(u)] = erf(t).

    t = s * scale + offset is the drive. Backward: g_t = grad * 2/sqrt(pi) exp(-t^2), then
    the gradients of s, scale, offset. Fused so that the output-sized temporaries are few:
    t is recomputed in the backward pass, not kept from the forward one.
    """

    @staticmethod
    def forward(ctx, u, s, scale, offset):
        ctx.save_for_backward(s, scale, offset)
        return sign(u)

    @staticmethod
    def backward(ctx, grad):
        s, scale, offset = ctx.saved_tensors
        t = s * scale if offset is None else torch.addcmul(offset, s, scale)
        g = t.square_().neg_().exp_().mul_(grad).mul_(_TWO_OVER_SQRT_PI)  # d loss / d t
        g_offset = None if offset is None or not ctx.needs_input_grad[3] else g.sum_to_size(offset.shape)
        g_s = g * scale if ctx.needs_input_grad[1] else None
        g_scale = g.mul_(s).sum_to_size(scale.shape) if ctx.needs_input_grad[2] else None
        return None, g_s, g_scale, g_offset


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def sign_ste(x: Tensor) -> Tensor:
    """Forward sgn(x); backward identity (d out / d x = 1)."""
    return _SignIdentity.apply(x)


def sign_prob(u: Tensor, s: Tensor, scale: Tensor, offset: Optional[Tensor] = None) -> Tensor:
    """Forward sgn(u); backward the gradient of erf(t), t = s * scale + offset.

    This is the ``prob`` estimator: the state is sampled, the gradient is that of
    E[z] = 2P - 1 = erf(t) (main text eq. 3). ``u`` gets no gradient.
    """
    return _SignProb.apply(u, s, scale, offset)


def binarize_input(x: Tensor) -> Tensor:
    """The input binarizer: forward sgn(2x - 1) for x in [0, 1]; backward identity."""
    if not x.requires_grad:
        return sign(2 * x - 1)
    return sign(2 * x.detach() - 1) + (x - x.detach())


# --------------------------------------------------------------------------------------
# noise models


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
            e = torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
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
        n = math.prod(shape)
        level = self.param * 65536.0
        if level == int(level):
            bits = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64,
                                 generator=generator, device=like.device)
            return (bits.view(torch.int16)[:n] < int(level) - 32768).view(shape)
        u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
        return u < self.param

    def __str__(self) -> str:
        return f"{self.name}(p={self.param})" if self.name == "bernoulli" else f"{self.name}(sigma={self.param})"


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
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not float(sigma) > 0.0 \
            or not math.isfinite(sigma):
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


# --------------------------------------------------------------------------------------
# drive and firing probability


VARIANCES = ("norm", "exact")


def drive(s: Tensor, wnorm: Tensor, magnitude: Tensor, bias: Optional[Tensor], c: float) -> Tensor:
    """t = E[u] / sqrt(2 Var[u]) = beta * s / ||w|| + b / (c ||w||), with s = op(z, w)."""
    scale = magnitude / wnorm  # per output (or per element for variance="exact")
    if bias is None:
        return s * scale
    return torch.addcmul(bias / (c * wnorm), s, scale)  # one pass over the output


def firing_probability(t: Tensor) -> Tensor:
    """P(z = +1) = 1/2 (1 + erf(t)) for the drive t."""
    return 0.5 * (1.0 + torch.erf(t))


def weight_norm(x: Tensor, weight: Tensor, op: Op, variance: str, shape) -> Tensor:
    """sqrt(Var[u] / Var[xi]) per output.

    ``"norm"``: ||w_i||, exact when every input is +-1 (the paper's form).
    ``"exact"``: sqrt(op(z^2, w^2)) per output element; exact for any input, including
    the zeros a padded convolution adds at the border. Costs one more product.
    """
    if variance == "norm":
        return weight.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
    return op(x * x, weight * weight).clamp_min(1e-24).sqrt()


# --------------------------------------------------------------------------------------
# the quantities of one forward pass, computed at most once and only when needed


class Pass:
    """What samplers and estimators may use for one layer call.

    ``s = op(x, w)`` (noise-free product), ``magnitude`` and ``bias`` (broadcast on s),
    ``a = beta c - E[xi]``; ``wnorm``, the drive ``t`` and ``std = sqrt(Var[u])`` are
    computed on first use (under the autograd mode active then).
    """

    def __init__(self, x, weight, magnitude, bias, noise: Noise, op: Op, variance: str,
                 copies: int = 1):
        self.x, self.weight, self.magnitude, self.bias = x, weight, magnitude, bias
        self.noise, self.op, self.variance = noise, op, variance
        self._wnorm: Optional[Tensor] = None
        self._t: Optional[Tensor] = None
        self._s: Optional[Tensor] = None
        # s_shared: op(x, w) of one copy when the batch is `copies` identical stacked copies
        # (Monte-Carlo prediction without autograd); else None.
        self.copies, self.s_shared = 1, None
        n = x.shape[0] // copies if copies > 1 and x.dim() > 1 else 0
        if n and n * copies == x.shape[0] and not torch.is_grad_enabled():
            xs = x.view(copies, n, *x.shape[1:])
            if torch.equal(xs[1:], xs[:1].expand_as(xs[1:])):
                self.copies, self.s_shared = copies, op(xs[0], weight)

    @property
    def s(self) -> Tensor:
        """The noise-free product op(x, w), shaped like the layer's output."""
        if self._s is None:
            if self.s_shared is None:
                self._s = self.op(self.x, self.weight)
            else:
                s1 = self.s_shared
                self._s = s1.unsqueeze(0).expand(self.copies, *s1.shape).reshape(-1, *s1.shape[1:])
        return self._s

    def add_a_s_(self, u: Tensor) -> Tensor:
        """u += a * s in place (without materialising s for shared copies)."""
        if self.s_shared is None:
            return u.addcmul_(self.s, self.a)
        u.view(self.copies, *self.s_shared.shape).addcmul_(self.s_shared, self.a)
        return u

    @property
    def a(self) -> Tensor:
        return self.magnitude * self.noise.c - self.noise.mean

    @property
    def wnorm(self) -> Tensor:
        if self._wnorm is None:
            self._wnorm = weight_norm(self.x, self.weight, self.op, self.variance, self.magnitude.shape)
        return self._wnorm

    @property
    def t(self) -> Tensor:
        if self._t is None:
            self._t = drive(self.s, self.wnorm, self.magnitude, self.bias, self.noise.c)
        return self._t

    @property
    def scale(self) -> Tensor:
        """beta / ||w||: t = s * scale + offset."""
        return self.magnitude / self.wnorm

    @property
    def offset(self) -> Optional[Tensor]:
        """b / (c ||w||), or None without bias."""
        return None if self.bias is None else self.bias / (self.noise.c * self.wnorm)

    @property
    def std(self) -> Tensor:
        return math.sqrt(self.noise.var) * self.wnorm


# --------------------------------------------------------------------------------------
# samplers: draw the noisy pre-activation u given the inputs
#
# Signature: sampler(x, weight, ps: Pass, generator) -> u, of the shape of ps.s.

SAMPLERS: Registry[Callable[..., Tensor]] = Registry("sampler")


def _add_bias(u: Tensor, bias: Optional[Tensor]) -> Tensor:
    return u if bias is None else u + bias


@SAMPLERS.register("neuron")
def sample_neuron(x: Tensor, weight: Tensor, ps: Pass, generator=None) -> Tensor:
    """One xi per presynaptic unit and example, shared by its outgoing synapses (SI 4.3).

    u = op(xi * z, w) + a * op(z, w) + b: two products, xi of the input's shape.
    Each unit's marginal law is the same as with one xi per synapse.
    """
    u = ps.op(ps.noise.apply(x, generator=generator), weight)
    if torch.is_grad_enabled():  # STE: u must keep its graph
        return _add_bias(u + ps.a * ps.s, ps.bias)
    ps.add_a_s_(u)  # in place: no output-sized temporaries
    return u if ps.bias is None else u.add_(ps.bias)


@SAMPLERS.register("synapse")
def sample_synapse(x: Tensor, weight: Tensor, ps: Pass, generator=None) -> Tensor:
    """One xi per synapse and example (the theory; a crossbar of noisy devices).

    Fully connected layers only: u_i = sum_j xi_ij w_ij z_j + a_i s_i + b_i with a mask of
    shape (..., out, in), so memory grows as batch x out x in.
    """
    if weight.dim() != 2:
        raise ValueError("sampler 'synapse' works for fully connected layers only; "
                         "use 'neuron' or 'probability' for convolutions")
    xi = ps.noise.sample(ps.s.shape + weight.shape[1:], like=x, generator=generator)  # (..., out, in)
    u = torch.einsum("...oi,oi,...i->...o", xi, weight, x)
    return _add_bias(u + ps.a * ps.s, ps.bias)


@SAMPLERS.register("probability")
def sample_probability(x: Tensor, weight: Tensor, ps: Pass, generator=None) -> Tensor:
    """u drawn from its Gaussian law N(E[u], Var[u]): one normal per output unit.

    u = E[u] + sqrt(Var[u]) eps = sqrt(Var[u]) (sqrt(2) t + eps). Exact for Gaussian
    synapses, the central-limit law for Bernoulli ones.
    """
    eps = torch.randn(ps.s.shape, generator=generator, device=ps.s.device, dtype=ps.s.dtype)
    if torch.is_grad_enabled():  # STE: u must keep its graph
        return (eps + math.sqrt(2.0) * ps.t) * ps.std
    return eps.add_(ps.t, alpha=math.sqrt(2.0)).mul_(ps.std)


sample_neuron.name, sample_synapse.name, sample_probability.name = "neuron", "synapse", "probability"


def make_sampler(sampler) -> Callable[..., Tensor]:
    return SAMPLERS.get(sampler)


# --------------------------------------------------------------------------------------
# estimators: from the sample (and the drive) to the layer's output with a useful gradient
#
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
        return sign_prob(u, ps.s, ps.scale, ps.offset)

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
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not float(temperature) > 0 or not math.isfinite(temperature):
            raise ValueError(f"binconcrete temperature must be a finite number > 0, got {temperature!r}")
        if alpha not in ALPHAS:
            raise ValueError(f"binconcrete alpha must be one of {ALPHAS}, got {alpha!r}")
        self.temperature = float(temperature)
        self.alpha = alpha

    def __call__(self, u, ps, generator=None):
        t = ps.t
        x = math.sqrt(2.0) * t  # P = Phi(sqrt(2) t); log P via log_ndtr for stability
        log_alpha = torch.special.log_ndtr(x)
        if self.alpha == "odds":
            log_alpha = log_alpha - torch.special.log_ndtr(-x)
        uni = torch.rand(t.shape, generator=generator, device=t.device, dtype=t.dtype)
        uni = uni.clamp_(torch.finfo(t.dtype).tiny, 1.0 - torch.finfo(t.dtype).eps)
        logistic = torch.log(uni) - torch.log1p(-uni)
        return 2.0 * torch.sigmoid((logistic + log_alpha) / self.temperature) - 1.0

    def __repr__(self):
        return f"binconcrete(temperature={self.temperature:g}, alpha={self.alpha})"


def make_estimator(estimator, *, temperature: float = 1.0, alpha: str = "probability"):
    """An estimator from a registered name (with its options) or a callable used as is."""
    if isinstance(estimator, str):
        factory = ESTIMATORS.get(estimator)
        return factory(temperature=temperature, alpha=alpha) if estimator == "binconcrete" else factory()
    return ESTIMATORS.get(estimator)


# --------------------------------------------------------------------------------------
# the forward pass of one NSM layer

MODES = ("sample", "mean", "threshold")


def nsm_forward(
    x: Tensor,
    weight: Tensor,
    magnitude: Tensor,
    bias: Optional[Tensor],
    *,
    op: Op,
    noise: Noise,
    sampler: Callable,
    estimator: Callable,
    variance: str = "norm",
    mode: str = "sample",
    generator: Optional[torch.Generator] = None,
    copies: int = 1,
) -> Tensor:
    """Output of an NSM layer; ``magnitude``/``bias`` are shaped to broadcast on op's output.

    ``mode``: ``"sample"`` (the stochastic network), ``"mean"`` (E[z] = erf(t), the
    mean-field network, deterministic) or ``"threshold"`` (sgn(t), the noise-free binary
    network, with the gradient of erf(t)). See :mod:`nsm.mc` for how models are evaluated.

    ``copies = k > 1`` says the batch may be k stacked copies of the same examples (as in
    Monte-Carlo prediction); without autograd, if the copies are indeed identical, the
    noise-free product op(x, w) is computed once and shared (the noise stays independent).
    """
    ps = Pass(x, weight, magnitude, bias, noise, op, variance, copies)
    if mode == "mean":
        return torch.erf(ps.t)
    if mode == "threshold":
        return sign_prob(ps.t.detach(), ps.s, ps.scale, ps.offset)
    if mode != "sample":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if torch.is_grad_enabled():
        # What carries the gradient is built under autograd before sampling (which runs
        # without autograd and would otherwise cache these without a graph).
        ps.s, ps.wnorm
        if getattr(estimator, "needs_drive", True):
            ps.t
    u = None
    if getattr(estimator, "needs_sample", True):
        track = torch.is_grad_enabled() and getattr(estimator, "grad_through_sample", False)
        with torch.set_grad_enabled(track):
            u = sampler(x, weight, ps, generator)
    return estimator(u, ps, generator)
