"""NSM layers: ``NSMLinear`` and ``NSMConv2d`` hold ``weight``, ``magnitude`` (beta) and ``bias``.

The math is in :mod:`nsm.nn.functional` (:func:`~nsm.nn.functional.nsm_forward`); these modules
only hold parameters and options. ``forward`` returns one tensor: the +-1 states of the
units (or, for the ``binconcrete`` estimator, the relaxation 2X - 1).

``model.eval()`` does *not* switch the noise off: the noise is the model. How a network is
evaluated (stochastic samples, the mean field, or the noise-free threshold network) is set
in one place, :func:`nsm.nn.mc.forward_mode` / the ``mode`` argument of :func:`nsm.mc_predict`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.checks import check_int
from ..utils.registry import name_of
from . import functional as NF
from .estimators import make_estimator

__all__ = [
    "NSMLinear",
    "NSMConv2d",
    "Binarize",
    "SignSTE",
    "MaxPool2d",
    "NSMLayer",
    "Stochastic",
    "noisy_layers",
    "nsm_layers",
    "stochastic_layers",
    "set_generator",
    "BIAS_SCALES",
]

BIAS_SCALES = ("weight", "unit")


class Stochastic:
    """Marker for modules with noise, switched by :func:`nsm.forward_mode`.

    ``mode``: ``"sample"`` (draw the noise), ``"mean"`` (the mean field: each unit outputs its
    own expectation given its input, erf(t) for an NSM unit; for a network that is not the
    expected output) or ``"threshold"`` (noise off). ``copies``: how many stacked identical
    copies the batch holds (set during Monte-Carlo prediction; a hint that layers may use to
    share work).
    """

    mode: str = "sample"
    copies: int = 1


class NSMLayer(Stochastic):
    """Mixin with what the NSM layers share: their options (validated once, here), the
    forward pass, the drive and firing probability, ``reset_parameters`` and ``extra_repr``.

    A subclass says how it reads its input: ``_check(x)``, ``_prepare(x) -> (x, op)`` (the
    input as the synapses see it and the noise-free linear operator), ``_shape`` (how
    per-output parameters broadcast on op's output) and ``_padded`` (whether op pads with
    zeros, which changes the variance at the border).

    ``fixed_mode``: if set (e.g. ``"threshold"`` for the noise-free BN baseline), the layer
    always runs in that mode, whatever :func:`nsm.forward_mode` says.
    """

    fixed_mode: Optional[str] = None
    _padded: bool = False

    weight: Tensor
    bias: Optional[Tensor]
    magnitude: nn.Parameter

    def _setup_nsm(
        self, noise, p, sigma, sampler, estimator, temperature, alpha, variance, bias_scale, generator, conv: bool
    ) -> None:
        self.noise = NF.make_noise(noise, p=p, sigma=sigma)
        self.estimator = make_estimator(estimator, temperature=temperature, alpha=alpha)
        if not getattr(self.estimator, "needs_sample", True):
            if sampler is not None:  # e.g. BinConcrete: its relaxation draws its own noise
                raise ValueError(
                    f"estimator {name_of(self.estimator)!r} draws no synaptic noise, so a sampler "
                    f"does nothing; leave sampler unset (got sampler={name_of(sampler)!r})"
                )
            self.sampler = None
        else:
            self.sampler = NF.make_sampler("neuron" if sampler is None else sampler)
        if conv and self.sampler is NF.sample_synapse:
            raise ValueError(
                "sampler 'synapse' (one noise draw per synapse) is not available for convolutions, "
                "whose synapses share their weights; use sampler='neuron' or 'probability'"
            )
        if variance not in NF.VARIANCES:
            raise ValueError(f"variance must be one of {NF.VARIANCES}, got {variance!r}")
        self.variance = variance
        if bias_scale not in BIAS_SCALES:
            raise ValueError(f"bias_scale must be one of {BIAS_SCALES}, got {bias_scale!r}")
        self.bias_scale = bias_scale
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator
        self.mode = "sample"
        self.copies = 1  # set by nsm.nn.mc while a batch holds stacked copies of its examples

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "magnitude"):  # nn.Linear/Conv2d call this before magnitude exists
            nn.init.ones_(self.magnitude)

    def _check_input(self, x) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}; "
                f"convert it with torch.as_tensor(x, dtype=torch.float32)"
            )
        self._check(x)
        g = self.generator
        if g is not None and g.device.type != x.device.type:
            raise ValueError(
                f"{type(self).__name__}'s generator is on {g.device} but the input is on {x.device}: "
                f"a torch.Generator cannot be moved; give the layer a generator on {x.device}"
            )

    def _bias(self, x: Tensor, op, weight: Optional[Tensor] = None) -> Optional[Tensor]:
        """The bias as it enters u, shaped to broadcast on op's output: b, or b ||w|| for
        ``bias_scale="unit"`` (so that the drive's bias term is b / c); ``weight``: w in place
        of the layer's own (a device's read of it)."""
        if self.bias is None:
            return None
        bias = self.bias.view(self._shape)
        if self.bias_scale == "unit":
            w = self.weight if weight is None else weight
            wn = NF.weight_norm(x, w, op, self.variance, self._shape, padded=self._padded)
            bias = (bias * wn).to(bias.dtype)  # (a half-precision layer's norms are float32)
        return bias

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        x, op = self._prepare(x)
        bias = self._bias(x, op)
        return NF.nsm_forward(
            x,
            self.weight,
            self.magnitude.view(self._shape),
            bias,
            op=op,
            noise=self.noise,
            sampler=self.sampler,
            estimator=self.estimator,
            variance=self.variance,
            mode=self.fixed_mode or self.mode,
            generator=self.generator,
            copies=self.copies,
            padded=self._padded,
        )

    def drive(self, x: Tensor) -> Tensor:
        """t = E[u] / sqrt(2 Var[u]), so that P(z = +1) = 1/2 (1 + erf(t)); shaped like the output."""
        self._check_input(x)
        x, op = self._prepare(x)
        wn = NF.weight_norm(x, self.weight, op, self.variance, self._shape, padded=self._padded)
        return NF.drive(op(x, self.weight), wn, self.magnitude.view(self._shape), self._bias(x, op), self.noise.c)

    def firing_probability(self, x: Tensor) -> Tensor:
        """P(z = +1 | x), bias included, shaped like the output: the law every sampler fires at."""
        return NF.firing_probability(self.drive(x))

    def extra_repr(self) -> str:
        sampler = "" if self.sampler is None else f", sampler={name_of(self.sampler)}"
        return (
            super().extra_repr()
            + f", noise={self.noise}{sampler}, estimator={self.estimator!r}"
            + ("" if self.variance == "norm" else f", variance={self.variance}")
            + ("" if self.bias_scale == "weight" else f", bias_scale={self.bias_scale}")
        )


_NSM_DOC = """
    Keyword options (after torch's own arguments):
        noise: ``"bernoulli"`` (blank-out, xi ~ Bern(p)), ``"gaussian"`` (xi ~ N(1, sigma^2)),
            or a factory ``f(p=, sigma=) -> nsm.Noise``.
        p: probability that a Bernoulli synapse transmits, 0 < p < 1.
        sigma: std of Gaussian synapses, > 0.
        sampler: ``"neuron"`` (one xi per presynaptic unit; the default), ``"synapse"`` (one per
            synapse; fully connected only), ``"probability"`` (u from its Gaussian law), or a
            callable with the signature of :func:`nsm.nn.functional.sample_neuron`. Refused with
            ``estimator="binconcrete"``, which draws no synaptic noise.
        estimator: ``"prob"`` (gradient of 2P - 1; default), ``"ste"`` (straight through the
            noisy u), ``"binconcrete"`` (SI eq. 14), or an estimator instance.
        temperature, alpha: BinConcrete's lambda (default 1) and ``"probability"`` (alpha = P,
            eq. 14; default) or ``"odds"`` (alpha = P / (1 - P)); refused for other estimators.
        variance: ``"norm"`` (Var[u] = Var[xi] ||w||^2, the paper's form, exact for +-1 inputs;
            at a zero-padded border, the norm of the weights that meet the image) or ``"exact"``
            (Var[xi] op(z^2, w^2): also exact for real-valued inputs).
        bias_scale: ``"weight"`` (u adds b, so the drive's bias term is b / (c ||w||): the paper's
            form; default) or ``"unit"`` (u adds b ||w||, so the term is b / c: the bias acts on
            the unit-norm weights, as in the firing probability of the authors' code). The same
            functions under b_weight = b_unit ||w||, trained differently.
        generator: a ``torch.Generator`` for the noise (default: torch's global generator); it
            must be on the input's device.
"""


class NSMLinear(NSMLayer, nn.Linear):
    __doc__ = (
        """Fully connected NSM layer: z_i = sgn(sum_j (xi_ij + a_i) w_ij z_j + b_i).

    Parameters: ``weight`` (out, in), ``magnitude`` beta (out,), starting at 1, ``bias`` (out,).
    ``firing_probability(x)`` gives P(z = +1 | x) = 1/2 (1 + erf(beta w.x/||w|| + b/(c||w||))).
    """
        + _NSM_DOC
    )

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        noise="bernoulli",
        p: float = 0.5,
        sigma: float = 1.0,
        sampler=None,
        estimator="prob",
        temperature: Optional[float] = None,
        alpha: Optional[str] = None,
        variance: str = "norm",
        bias_scale: str = "weight",
        generator: Optional[torch.Generator] = None,
        device=None,
        dtype=None,
    ) -> None:
        check_int("in_features", in_features), check_int("out_features", out_features)
        options = (noise, p, sigma, sampler, estimator, temperature, alpha, variance, bias_scale, generator)
        self._setup_nsm(*options, conv=False)
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._shape = (out_features,)
        self.magnitude = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype))
        self.reset_parameters()

    def _check(self, x: Tensor) -> None:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"NSMLinear expects inputs of shape (..., {self.in_features}), got {tuple(x.shape)}")

    def _prepare(self, x: Tensor):
        return x, F.linear


class NSMConv2d(NSMLayer, nn.Conv2d):
    __doc__ = (
        """2-D convolutional NSM layer (SI 4.3, eqs. 9-11).

    Parameters: ``weight`` (C_out, C_in/groups, kH, kW), ``magnitude`` beta (C_out,), one per
    output channel, starting at 1, ``bias`` (C_out,). ||w_k|| is taken over a whole filter,
    except where zero padding meets the filter: a border unit sees only the synapses that
    fall on the image, so its variance is Var[xi] times the squared norm of those weights
    (``conv(1, w^2)``), and every sampler fires at that law. With ``padding_mode`` reflect,
    replicate or circular the input is padded before the noise is drawn, so each padded
    position is a synapse of its own. ``sampler="synapse"`` is not available (shared filters).
    """
        + _NSM_DOC
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        noise="bernoulli",
        p: float = 0.5,
        sigma: float = 1.0,
        sampler=None,
        estimator="prob",
        temperature: Optional[float] = None,
        alpha: Optional[str] = None,
        variance: str = "norm",
        bias_scale: str = "weight",
        generator: Optional[torch.Generator] = None,
        device=None,
        dtype=None,
    ) -> None:
        check_int("in_channels", in_channels), check_int("out_channels", out_channels)
        options = (noise, p, sigma, sampler, estimator, temperature, alpha, variance, bias_scale, generator)
        self._setup_nsm(*options, conv=True)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device=device,
            dtype=dtype,
        )
        self._shape = (out_channels, 1, 1)
        pads = self.padding != "valid" and (self.padding == "same" or any(self.padding))
        self._padded = pads and padding_mode == "zeros"
        self.magnitude = nn.Parameter(torch.empty(out_channels, device=device, dtype=dtype))
        self.reset_parameters()

    def _check(self, x: Tensor) -> None:
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(
                f"NSMConv2d expects inputs of shape (N, {self.in_channels}, H, W) "
                f"or ({self.in_channels}, H, W), got {tuple(x.shape)}"
            )

    def _prepare(self, x: Tensor):
        if self.padding_mode == "zeros":
            return x, self._zero_padded_conv
        # pad first, so that the noise is drawn for every padded position on its own
        return F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), self._unpadded_conv

    def _zero_padded_conv(self, x: Tensor, w: Tensor) -> Tensor:
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)

    def _unpadded_conv(self, x: Tensor, w: Tensor) -> Tensor:
        return F.conv2d(x, w, None, self.stride, 0, self.dilation, self.groups)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with a faster path without autograd for 2x2 windows, stride 2.

    Same values (the max of four shifted views; torch's CPU kernel is several times slower
    here). With autograd it is ``nn.MaxPool2d`` itself, so gradients route to the first
    maximum as usual. Used by every model of the paper, NSM and baselines alike.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (
            torch.is_grad_enabled()
            or x.dim() != 4
            or self.kernel_size not in (2, (2, 2))
            or self.stride not in (2, (2, 2))
            or self.padding not in (0, (0, 0))
            or self.dilation not in (1, (1, 1))
            or self.ceil_mode
            or self.return_indices
        ):
            return super().forward(x)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        return torch.maximum(
            torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2]),
            torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]),
        )


class Binarize(nn.Module):
    """The input binarizer sgn(2x - 1) for inputs in [0, 1], with an identity gradient."""

    def forward(self, x: Tensor) -> Tensor:
        return NF.binarize_input(x)


class SignSTE(nn.Module):
    """sgn(x) with an identity gradient (used after a BinConcrete layer)."""

    def forward(self, x: Tensor) -> Tensor:
        return NF.sign_ste(x)


def nsm_layers(model: nn.Module):
    """The NSM layers of a model, in order."""
    return [m for m in model.modules() if isinstance(m, NSMLayer)]


def stochastic_layers(model: nn.Module):
    """Every module with noise (NSM layers and stochastic baseline units), in order."""
    return [m for m in model.modules() if isinstance(m, Stochastic)]


def noisy_layers(model: nn.Module):
    """The stochastic layers whose passes differ: those not fixed in a noise-free mode (the BN
    baseline's are fixed at ``"threshold"``). A model without any needs one pass, not S."""
    return [m for m in stochastic_layers(model) if getattr(m, "fixed_mode", None) is None]


def set_generator(model: nn.Module, generator: Optional[torch.Generator]) -> nn.Module:
    """Let every module of ``model`` that draws noise draw it from ``generator`` (None: torch's
    global generator again); returns ``model``. A model without noise is refused: the
    generator would do nothing."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    noisy = [m for m in model.modules() if isinstance(m, Stochastic)]
    if not noisy:
        raise ValueError(f"{type(model).__name__} has no module that draws noise; a generator would do nothing")
    for m in noisy:
        if not hasattr(m, "generator"):
            raise ValueError(f"{type(m).__name__} draws its noise without a generator option")
        m.generator = generator
    return model
