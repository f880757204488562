"""The Synaptic Sampling Machine (S2M; Neftci et al. 2016, Front. Neurosci. 10:241).

A restricted Boltzmann machine of binary threshold units whose only randomness is a fresh
blank-out mask on its connections at every update (docs/design.md §7), in discrete time:

    h_j = 1{ sum_i xi_ij w_ij v_i + b_j > 0 },    xi_ij ~ Bernoulli(p), new at every update

and likewise for the visible units from h (the same weights, transposed). The visible layer
holds the binarized image (x > 1/2) and ``label_copies`` one-hot copies of the label, as in
the S2M papers, which replicate the label units so that they weigh in the hidden drive.

Like the NSM, a unit fires with probability ~ Phi(E[u] / std(u)): the blank-out noise makes
the machine insensitive to the scale of its weights. Two samplers draw u:

- ``"probability"`` (default): u ~ N(E[u], Var[u]), E[u] = p (v . w) + b,
  Var[u] = p (1 - p) (v^2 . w^2). Given the presynaptic states, independent masks per
  synapse make the units independent, so one normal per unit is the central-limit form of
  the exact law (the masks of 784 x 500 synapses per example are costly to draw on a CPU).
- ``"synapse"``: one Bernoulli mask per synapse and update, exact.

Training: contrastive divergence (CD-1, the discrete-time form of event-driven CD)::

    v0 = data, h0 ~ h | v0, v1 ~ v | h0, h1 ~ h | v1
    grad W = -(<v0 h0^T> - <v1 h1^T>),  grad b_v = -<v0 - v1>,  grad b_h = -<h0 - h1>

written into ``.grad`` so that any optimizer (Adam, as for every other model) takes the step.

Classification by sampling the label units: the image is clamped, the hidden and label
units are updated in turn for ``gibbs_steps`` steps, and each class's firing count over
those steps (summed over its copies) is the vote. ``forward`` returns log(1 + counts), so
that softmax(forward(x)) is the (add-one) frequency of each class; Monte-Carlo prediction
then averages S such chains.

This is a fully connected machine (784 + 10 x copies visible units, ``hidden`` hidden
units); the S2M cannot use the convolutional Table 6 network of the other models.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..nn.functional import firing_probability
from ..nn.layers import Stochastic
from ..nn.noise import rng, wide_dtype
from ..utils.checks import check_int

__all__ = ["SynapticSamplingMachine", "S2M_SAMPLERS"]

S2M_SAMPLERS = ("probability", "synapse")


class SynapticSamplingMachine(Stochastic, nn.Module):
    """An RBM with blank-out synapses, image + label visible units, trained by CD-1."""

    def __init__(
        self,
        n_pixels: int = 784,
        num_classes: int = 10,
        *,
        hidden: int = 500,
        label_copies: int = 4,
        p: float = 0.5,
        sampler: str = "probability",
        gibbs_steps: int = 10,
        init_std: float = 0.01,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        for name, v, lo in (
            ("n_pixels", n_pixels, 1),
            ("num_classes", num_classes, 2),
            ("hidden", hidden, 1),
            ("label_copies", label_copies, 1),
            ("gibbs_steps", gibbs_steps, 1),
        ):
            check_int(name, v, minimum=lo)
        if not (isinstance(p, (int, float)) and 0 < p < 1):
            raise ValueError(f"p (the probability that a synapse transmits) must be in (0, 1), got {p!r}")
        if sampler not in S2M_SAMPLERS:
            raise ValueError(f"S2M sampler must be one of {S2M_SAMPLERS}, got {sampler!r}")
        self.n_pixels, self.num_classes, self.label_copies = n_pixels, num_classes, label_copies
        self.p, self.sampler, self.gibbs_steps, self.generator = float(p), sampler, gibbs_steps, generator
        n_visible = n_pixels + num_classes * label_copies
        self.weight = nn.Parameter(torch.randn(n_visible, hidden) * init_std)  # (visible, hidden)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden))

    # ---------------------------------------------------------------- sampling

    def _fire(self, x: Tensor, w: Tensor, bias: Tensor) -> Tensor:
        """States (0/1) of the units fed by x (N, in) through w (in, out), one update."""
        mean = torch.addmm(bias, x, w, alpha=self.p)
        if self.mode == "threshold":
            return (mean > 0).to(x.dtype)
        var = torch.mm(x * x, w * w).mul_(self.p * (1 - self.p))
        if self.mode == "mean":  # the firing probability P(u > 0)
            return firing_probability(mean / (var * 2).sqrt().clamp_min(1e-12))
        if self.sampler == "synapse":
            dtype = wide_dtype(x.dtype)  # exact P(U < p)
            mask = (
                torch.rand((x.shape[0],) + tuple(w.shape), **rng(self.generator), device=x.device, dtype=dtype) < self.p
            )
            u = torch.einsum("ni,nio,io->no", x, mask.to(x.dtype), w) + bias
        else:
            eps = torch.randn(mean.shape, **rng(self.generator), device=x.device, dtype=x.dtype)
            u = mean.add_(eps.mul_(var.sqrt_()))
        return (u > 0).to(x.dtype)

    def sample_hidden(self, v: Tensor) -> Tensor:
        return self._fire(v, self.weight, self.hidden_bias)

    def sample_visible(self, h: Tensor) -> Tensor:
        return self._fire(h, self.weight.t(), self.visible_bias)

    def _sample_labels(self, h: Tensor) -> Tensor:
        rows = slice(self.n_pixels, None)
        return self._fire(h, self.weight[rows].t(), self.visible_bias[rows])

    def pixels(self, x: Tensor) -> Tensor:
        """The binarized image, (N, n_pixels) of 0/1 (a pixel is on if x > 1/2)."""
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.n_pixels:
            raise ValueError(f"S2M expects images of {self.n_pixels} pixels, got shape {tuple(x.shape)}")
        return (flat > 0.5).to(self.weight.dtype)

    def visible(self, x: Tensor, y: Tensor) -> Tensor:
        """The data vector: binarized image and ``label_copies`` one-hot copies of y."""
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}), got range [{int(y.min())}, {int(y.max())}]")
        onehot = torch.nn.functional.one_hot(y, self.num_classes).to(self.weight.dtype)
        return torch.cat([self.pixels(x), onehot.repeat_interleave(self.label_copies, dim=1)], 1)

    # ---------------------------------------------------------------- learning

    @torch.no_grad()
    def contrastive_divergence(self, x: Tensor, y: Tensor) -> dict:
        """CD-1 on one batch: fills ``.grad`` of every parameter (descent direction).

        Returns ``loss`` (mean squared pixel reconstruction error of v1) and ``wrong``
        (examples whose reconstructed label units vote for another class).
        """
        v0 = self.visible(x, y)
        h0 = self.sample_hidden(v0)
        v1 = self.sample_visible(h0)
        h1 = self.sample_hidden(v1)
        self.set_cd_grad_(v0, h0, v1, h1)
        pix = slice(0, self.n_pixels)
        votes = v1[:, self.n_pixels :].view(-1, self.num_classes, self.label_copies).sum(-1)
        return {"loss": (v0[:, pix] - v1[:, pix]).square().mean().item(), "wrong": int((votes.argmax(-1) != y).sum())}

    @torch.no_grad()
    def set_cd_grad_(self, v0: Tensor, h0: Tensor, v1: Tensor, h1: Tensor) -> None:
        """.grad = minus the CD statistics <v h>_data - <v h>_model (means over the batch)."""
        n = v0.shape[0]
        self.weight.grad = (v1.t() @ h1 - v0.t() @ h0) / n
        self.visible_bias.grad = (v1 - v0).mean(0)
        self.hidden_bias.grad = (h1 - h0).mean(0)

    # ---------------------------------------------------------------- classification

    @torch.no_grad()
    def label_counts(self, x: Tensor) -> Tensor:
        """Per-class firing counts of the label units over ``gibbs_steps`` steps, (N, K)."""
        pix = self.pixels(x)
        labels = torch.zeros(pix.shape[0], self.num_classes * self.label_copies, device=pix.device, dtype=pix.dtype)
        counts = torch.zeros(pix.shape[0], self.num_classes, device=pix.device, dtype=pix.dtype)
        for _ in range(self.gibbs_steps):
            h = self.sample_hidden(torch.cat([pix, labels], 1))
            labels = self._sample_labels(h)
            counts += labels.view(-1, self.num_classes, self.label_copies).sum(-1)
        return counts

    def forward(self, x: Tensor) -> Tensor:
        """log(1 + label counts): softmax of it is each class's add-one firing frequency."""
        return torch.log1p(self.label_counts(x))

    def extra_repr(self) -> str:
        v, h = self.weight.shape
        return (
            f"visible={v} ({self.n_pixels} pixels + {self.num_classes}x{self.label_copies} labels), "
            f"hidden={h}, p={self.p}, sampler={self.sampler}, gibbs_steps={self.gibbs_steps}"
        )
