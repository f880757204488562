"""The NSM neuron as pure functions: signs, drive and firing probability, samplers, forward.

Main text eqs. 1-4 (docs/design.md §1). A unit receives inputs ``z`` through synapses with
always-on multiplicative noise ``xi``::

    u_i = sum_j (xi_ij + a_i) w_ij z_j + b_i,        z_i = sgn(u_i),  sgn(0) = +1

With ``c = sqrt(2 Var[xi])`` and the learnt magnitude ``beta_i = (E[xi] + a_i) / c``::

    E[u_i]   = beta_i c (w_i . z) + b_i
    Var[u_i] = Var[xi] ||w_i||^2                       (z_j in {-1, +1})
    P(z_i = +1 | z) = 1/2 (1 + erf(t_i)),   t_i = E[u_i] / sqrt(2 Var[u_i])
                                                = beta_i (w_i . z)/||w_i|| + b_i / (c ||w_i||)

``t`` is called the *drive* below. It depends on ``w_i`` only through its direction: the
network is weight-normalized by its own noise (SI 4.4, eqs. 6-7).

Noise models are in :mod:`nsm.nn.noise`, gradient estimators in :mod:`nsm.nn.estimators`.
Everything here works for any linear operator ``op(x, w)`` (``F.linear`` or a convolution),
given per-output tensors (``magnitude``, ``bias``) already shaped to broadcast against its
output. The modules in :mod:`nsm.nn.layers` hold the parameters and call :func:`nsm_forward`.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from ..utils.registry import Registry
from .noise import NOISES, Noise, make_noise, rng, wide_dtype

__all__ = [
    "Noise",
    "NOISES",
    "SAMPLERS",
    "MODES",
    "VARIANCES",
    "Pass",
    "make_noise",
    "make_sampler",
    "sign",
    "sign_ste",
    "sign_prob",
    "binarize_input",
    "drive",
    "firing_probability",
    "row_norms",
    "nsm_forward",
]

Op = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------
# signs with identity gradients


def sign(x: Tensor, *, inplace: bool = False) -> Tensor:
    """sgn with sgn(0) = +1 (also for -0.0), as a float tensor of +-1, without gradient.

    A value that is not finite (NaN, +-inf) gives NaN: a broken input never becomes a valid
    state. ``inplace=True`` overwrites ``x`` (saves an allocation on the hot path).
    """
    with torch.no_grad():
        one = torch.ones((), dtype=x.dtype, device=x.device)
        if inplace:
            bad = x - x  # 0 where finite, NaN elsewhere
            x.add_(0.0)  # -0.0 -> +0.0, so that copysign gives +1 at zero
            return torch.copysign(one, x, out=x).add_(bad)
        # one output-sized temporary, not two (it bounds the peak memory of a training step)
        tmp = x + 0.0  # -0.0 -> +0.0
        out = torch.copysign(one, tmp)
        return out.add_(tmp.sub_(tmp))  # + 0 where finite, NaN elsewhere


class _SignIdentity(torch.autograd.Function):
    """Forward sgn(x); backward the identity."""

    generate_vmap_rule = True  # torch.func.vmap / grad work through it (setup_context style)

    @staticmethod
    def forward(x):
        return sign(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad


class _SignProb(torch.autograd.Function):
    """Forward sgn(u) for a sampled u (no gradient); backward through E[sgn(u)] = erf(t).

    t = s * scale + offset is the drive. Backward: g_t = grad * 2/sqrt(pi) exp(-t^2), then
    the gradients of s (g_t * scale), scale (g_t * s) and offset (g_t), each summed to its
    own shape. Fused so that the output-sized temporaries are few: t is recomputed in the
    backward pass, not kept from the forward one.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(u, s, scale, offset):
        return sign(u)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[1:])

    @staticmethod
    def backward(ctx, grad):
        s, scale, offset = ctx.saved_tensors
        t = s * scale if offset is None else torch.addcmul(offset, s, scale)
        if torch.is_grad_enabled():  # create_graph=True: the same gradient, out of place, differentiable
            g = torch.exp(-t.square()) * grad * _TWO_OVER_SQRT_PI
            g_offset = None if offset is None or not ctx.needs_input_grad[3] else g.sum_to_size(offset.shape)
            g_s = g * scale if ctx.needs_input_grad[1] else None
            g_scale = (g * s).sum_to_size(scale.shape) if ctx.needs_input_grad[2] else None
            return None, g_s, g_scale, g_offset
        g = t.square_().neg_().exp_().mul_(grad).mul_(_TWO_OVER_SQRT_PI)  # d loss / d t
        g_offset = None if offset is None or not ctx.needs_input_grad[3] else g.sum_to_size(offset.shape)
        g_s = g * scale if ctx.needs_input_grad[1] else None
        g_scale = None
        if ctx.needs_input_grad[2]:
            # sum_to_size returns g itself when offset has the output's shape: never scale it in place then
            gs = g * s if g_offset is not None and offset.shape == g.shape else g.mul_(s)
            g_scale = gs.sum_to_size(scale.shape)
        return None, g_s, g_scale, g_offset


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def sign_ste(x: Tensor) -> Tensor:
    """Forward sgn(x); backward identity (d out / d x = 1)."""
    return _SignIdentity.apply(x)


def sign_prob(u: Tensor, s: Tensor, scale: Tensor, offset: Optional[Tensor] = None) -> Tensor:
    """Forward sgn(u); backward the gradient of erf(t), t = s * scale + offset.

    This is the ``prob`` estimator: the state is sampled, the gradient is that of
    E[z] = 2P - 1 = erf(t) (main text eq. 3). ``u`` gets no gradient.

    Under ``torch.compile`` the same value and gradient are written as sgn(u) + (e - e.detach()),
    e = erf(t), which the compiler fuses, differentiates and traces with symbolic shapes.
    """
    if torch.compiler.is_compiling():
        t = s * scale if offset is None else torch.addcmul(offset, s, scale)
        e = torch.erf(t).to(u.dtype)  # (a half-precision layer's terms are float32)
        return sign(u) + (e - e.detach())
    return _SignProb.apply(u, s, scale, offset)


def binarize_input(x: Tensor) -> Tensor:
    """The input binarizer: forward sgn(2x - 1) for x in [0, 1]; backward identity."""
    if not x.requires_grad:
        return sign(2 * x - 1)
    return sign(2 * x.detach() - 1) + (x - x.detach())


# --------------------------------------------------------------------------------------
# drive and firing probability


VARIANCES = ("norm", "exact")


# The drive of a unit without variance (every synapse meets a zero input or has a zero weight):
# u = E[u] exactly, so P is 1 or 0; a t this large gives erf(t) = +-1 and exp(-t^2) = 0 in any
# float type, and stays finite through every sampler and gradient.
ZERO_VARIANCE_DRIVE = 1e4


# The smallest ||w|| (or sqrt(Var[u] / Var[xi])) kept: at or below it a unit has no variance
# (its weights, or its inputs, are exactly zero). Norms are float32 at least (half-precision
# layers compute them in float32), where 1e-12 is a normal number.
NORM_FLOOR = 1e-12


_wide = wide_dtype  # norms and drive terms of half-precision layers are float32


def drive_terms(wnorm: Tensor, magnitude: Tensor, bias: Optional[Tensor], c: float) -> tuple[Tensor, Tensor]:
    """(scale, offset) with t = s * scale + offset: beta / ||w|| and b / (c ||w||).

    Where ||w|| is at its floor (``NORM_FLOOR``) the unit has no variance: u = b exactly
    (s = 0 there, each z_j w_j being 0), so it fires with probability 1 if b >= 0 (sgn(0) = +1;
    no bias: b = 0) and 0 otherwise; scale is then 0 and offset +-ZERO_VARIANCE_DRIVE, which
    every sampler, P and the gradients (0) agree with. Dividing by the floor instead gave P = 1/2
    (no bias), P = Phi(b / c) (unit-scaled bias) and gradients of 1e11 to the inputs."""
    zero = wnorm <= NORM_FLOOR
    safe = wnorm.masked_fill(zero, 1.0)  # no division by the floor, even where it is not kept
    scale = (magnitude / safe).masked_fill(zero, 0.0)
    big = ZERO_VARIANCE_DRIVE
    if bias is None:
        return scale, zero.to(wnorm.dtype) * big
    sure = torch.where(bias >= 0, big, -big).to(wnorm.dtype)
    return scale, torch.where(zero, sure, bias / (c * safe))


def drive(s: Tensor, wnorm: Tensor, magnitude: Tensor, bias: Optional[Tensor], c: float) -> Tensor:
    """t = E[u] / sqrt(2 Var[u]) = beta * s / ||w|| + b / (c ||w||), with s = op(z, w)
    (:func:`drive_terms`: a unit without variance has t = +-ZERO_VARIANCE_DRIVE), in s's type
    (a half-precision layer's terms are float32: it is rounded once, at the end)."""
    scale, offset = drive_terms(wnorm, magnitude, bias, c)
    return torch.addcmul(offset, s, scale).to(s.dtype)  # one pass over the output


def firing_probability(t: Tensor) -> Tensor:
    """P(z = +1) = 1/2 (1 + erf(t)) for the drive t, computed as erfc(-t)/2: the same number
    without cancelling in the lower tail (1 + erf(t) lost every digit below t = -6 in float64
    and t = -4 in float32; erfc keeps P down to the smallest float)."""
    return 0.5 * torch.erfc(-t)


def row_norms(weight: Tensor) -> Tensor:
    """||w_i|| per output unit (a row of a matrix, a whole filter of a convolution), floored at
    ``NORM_FLOOR`` (1e-12) so that a unit whose weights are all zero divides by a small number,
    not by zero (and :func:`drive_terms` knows it has no variance); float32 for half-precision
    weights (a float16 norm has no 1e-12, and its small weights' norms are subnormal)."""
    return weight.to(_wide(weight.dtype)).flatten(1).norm(dim=1).clamp_min(NORM_FLOOR)


def weight_norm(x: Tensor, weight: Tensor, op: Op, variance: str, shape, *, padded: bool = False) -> Tensor:
    """sqrt(Var[u] / Var[xi]) per output.

    ``"norm"``: ||w_i||, exact when every input is +-1 (the paper's form). With
    ``padded=True`` (``op`` pads with zeros) the norm of the weights a unit's receptive field
    puts on the image, sqrt(op(1, w^2)) on one all-ones input: a border unit has fewer
    synapses, and this is the law its noise gives it. Costs one product on one example.
    ``"exact"``: sqrt(op(z^2, w^2)) per output element; exact for any input (real-valued
    ones too). Costs one more product on the whole batch.
    Half-precision layers compute these sums in float32 and return them so: in float16 a sum
    of w^2 above 65504 (||w|| > 256) was infinite (P = 1/2 for every unit), and the floor was 0.
    """
    if variance == "norm" and not padded:
        return row_norms(weight).view(shape)
    wide = _wide(weight.dtype)
    w2 = weight.to(wide).square()
    if variance == "norm":
        ones = torch.ones(x.shape[-3:], dtype=wide, device=x.device)  # one unbatched example
        var = op(ones, w2)
    else:
        xw = x.to(wide)
        var = op(xw * xw, w2)
    return var.clamp_min(1e-24).sqrt()  # NORM_FLOOR squared


# --------------------------------------------------------------------------------------
# the quantities of one forward pass, computed at most once and only when needed


class Pass:
    """What samplers and estimators may use for one layer call.

    ``s = op(x, w)`` (noise-free product), ``magnitude`` and ``bias`` (broadcast on s),
    ``a = beta c - E[xi]``; ``wnorm``, the drive ``t`` and ``std = sqrt(Var[u])`` are
    computed on first use (under the autograd mode active then).
    """

    def __init__(
        self, x, weight, magnitude, bias, noise: Noise, op: Op, variance: str, copies: int = 1, padded: bool = False
    ):
        self.x, self.weight, self.magnitude, self.bias = x, weight, magnitude, bias
        self.noise, self.op, self.variance, self.padded = noise, op, variance, padded
        self._wnorm: Optional[Tensor] = None
        self._t: Optional[Tensor] = None
        self._s: Optional[Tensor] = None
        # s_shared: op(x, w) of one copy when the batch is `copies` identical stacked copies
        # (Monte-Carlo prediction without autograd); else None.
        self.copies, self.s_shared = 1, None
        n = x.shape[0] // copies if copies > 1 and x.dim() > 1 else 0
        if n and n * copies == x.shape[0] and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
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
            self._wnorm = weight_norm(
                self.x, self.weight, self.op, self.variance, self.magnitude.shape, padded=self.padded
            )
        return self._wnorm

    @property
    def t(self) -> Tensor:
        if self._t is None:
            self._t = drive(self.s, self.wnorm, self.magnitude, self.bias, self.noise.c)
        return self._t

    def t_uncached(self) -> Tensor:
        """The drive, without keeping it for the rest of the layer call if it was not kept
        already (one output-sized tensor less at the peak of a training step)."""
        if self._t is not None:
            return self._t
        return drive(self.s, self.wnorm, self.magnitude, self.bias, self.noise.c)

    def terms(self) -> tuple[Tensor, Tensor]:
        """(scale, offset) = (beta / ||w||, b / (c ||w||)), t = s * scale + offset (a unit
        without variance: 0 and +-ZERO_VARIANCE_DRIVE; :func:`drive_terms`). Not cached: they
        must carry the graph of the autograd mode of the caller."""
        return drive_terms(self.wnorm, self.magnitude, self.bias, self.noise.c)

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
        raise ValueError(
            "sampler 'synapse' works for fully connected layers only; use 'neuron' or 'probability' for convolutions"
        )
    xi = ps.noise.sample(ps.s.shape + weight.shape[1:], like=x, generator=generator)  # (..., out, in)
    u = torch.einsum("...oi,oi,...i->...o", xi, weight, x)
    return _add_bias(u + ps.a * ps.s, ps.bias)


@SAMPLERS.register("probability")
def sample_probability(x: Tensor, weight: Tensor, ps: Pass, generator=None) -> Tensor:
    """u drawn from its Gaussian law N(E[u], Var[u]): one normal per output unit.

    u = E[u] + sqrt(Var[u]) eps = sqrt(Var[u]) (sqrt(2) t + eps). Exact for Gaussian
    synapses, the central-limit law for Bernoulli ones.
    """
    eps = torch.randn(ps.s.shape, **rng(generator), device=ps.s.device, dtype=ps.s.dtype)
    if torch.is_grad_enabled():  # STE: u must keep its graph
        return (eps + math.sqrt(2.0) * ps.t) * ps.std
    return eps.add_(ps.t_uncached(), alpha=math.sqrt(2.0)).mul_(ps.std)


sample_neuron.name, sample_synapse.name, sample_probability.name = "neuron", "synapse", "probability"


def make_sampler(sampler) -> Callable[..., Tensor]:
    return SAMPLERS.get(sampler)


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
    padded: bool = False,
) -> Tensor:
    """Output of an NSM layer; ``magnitude``/``bias`` are shaped to broadcast on op's output.

    ``mode``: ``"sample"`` (the stochastic network), ``"mean"`` (E[z] = erf(t), the
    mean-field network, deterministic) or ``"threshold"`` (sgn(t), the noise-free binary
    network, with the gradient of erf(t)). See :mod:`nsm.nn.mc` for how models are evaluated.

    ``copies = k > 1`` says the batch may be k stacked copies of the same examples (as in
    Monte-Carlo prediction); without autograd, if the copies are indeed identical, the
    noise-free product op(x, w) is computed once and shared (the noise stays independent).
    ``padded``: ``op`` pads its input with zeros (see :func:`weight_norm`).
    """
    ps = Pass(x, weight, magnitude, bias, noise, op, variance, copies, padded)
    if mode == "mean":
        return torch.erf(ps.t)
    if mode == "threshold":
        return sign_prob(ps.t.detach(), ps.s, *ps.terms())
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
