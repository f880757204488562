"""Uncertainty and calibration measures for Monte-Carlo predictions.

An NSM predicts by averaging S stochastic passes (:func:`nsm.nn.mc.mc_sample_probs` gives the
per-sample softmax ``probs`` of shape (S, N, C); :func:`nsm.nn.mc.mc_predict` its mean over
samples, ``mean_probs`` of shape (N, C)). Everything here is a pure function of those
tensors (and of int64 ``labels`` of shape (N,)). Conventions:

- Logarithms are natural (results in nats); every ``log p`` is ``log(max(p, 1e-12))`` so
  that one-hot inputs give finite values (``0 log 0`` counts as 0).
- ``p_bar = 1/S sum_s p_s`` is the mean over samples (the prediction).

Uncertainty (per example, shape (N,))::

    predictive_entropy  H[p_bar]          = -sum_c p_bar_c log p_bar_c         (total)
    expected_entropy    E_s H[p_s]        = -1/S sum_s sum_c p_sc log p_sc     (aleatoric)
    mutual_information  H[p_bar] - E_s H[p_s]  (BALD; epistemic), clamped at 0

The mutual information is >= 0 by concavity of H (negative values are rounding and are set
to 0); it is 0 when all samples agree and at most log S (and log C).

Scores of a mean prediction (floats, averaged over the N examples)::

    nll    = 1/N sum_n -log p_bar[n, y_n]
    brier  = 1/N sum_n sum_c (p_bar[n, c] - 1[c = y_n])^2     (multi-class form, in [0, 2])
    ece    = sum_k (n_k / N) |acc_k - conf_k|

For the ECE the confidence of example n is ``conf_n = max_c p_bar[n, c]`` and its
prediction ``argmax_c p_bar[n, c]`` (first index on ties). B equal-width bins on [0, 1]
with edges ``k / B``: bin k (0-based) holds confidences in ``(k/B, (k+1)/B]``, and the
first bin also holds 0. ``n_k`` is the number of examples in bin k, ``acc_k`` the fraction
of them predicted correctly and ``conf_k`` their mean confidence; empty bins contribute 0
(:func:`reliability` reports NaN accuracy and confidence for them).

Out-of-distribution detection (:func:`auroc`): the area under the ROC curve of a score
where higher means "more out-of-distribution", computed as the Mann-Whitney statistic::

    AUROC = P(s_out > s_in) + 1/2 P(s_out = s_in)
          = (R_out - m (m + 1) / 2) / (n m)

with ``n`` in-distribution and ``m`` out-of-distribution scores and ``R_out`` the sum of
the out-of-distribution scores' ranks in the pooled sample (ranks from 1; tied values get
the mean of their ranks). Sorting makes it O((n + m) log(n + m)). 1 for a score that
separates perfectly, 0 for a reversed one, 0.5 for identical distributions.

:func:`accuracy_vs_samples` gives the accuracy of the mean of the first k samples, for
several k: how many passes a prediction needs.

:func:`rotate_images` rotates a batch (N, C, H, W) by an angle in degrees,
counter-clockwise as the image is displayed (row 0 at the top, column 0 at the left),
about the image centre, with bilinear interpolation and zeros outside the input (the
rotated-digit experiment: accuracy and entropy as the input leaves the training
distribution). 90 degrees equals ``torch.rot90(x, 1, dims=(-2, -1))``.

Their figures are in :mod:`nsm.studies.figures.uncertainty`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.checks import check_int, is_int

__all__ = [
    "EPS",
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "nll",
    "brier_score",
    "expected_calibration_error",
    "reliability",
    "auroc",
    "accuracy_vs_samples",
    "summarize",
    "rotate_images",
]

EPS = 1e-12
"""Floor of every probability inside a logarithm."""

_ROW_SUM_TOL = 1e-3


# ----------------------------------------------------------------------------- validation


def _shape(x: Any) -> Any:
    return tuple(x.shape) if hasattr(x, "shape") else type(x).__name__


def _check_probs(probs: Any, dim: int, name: str) -> Tensor:
    """``probs`` as a float tensor with ``dim`` dims, non-empty, rows summing to 1."""
    what = "(S, N, C)" if dim == 3 else "(N, C)"
    if not isinstance(probs, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {what}, got {_shape(probs)}")
    if probs.dim() != dim:
        raise ValueError(f"{name} must have shape {what} ({dim}-D), got shape {_shape(probs)}")
    if probs.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {_shape(probs)}")
    if not probs.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of probabilities, got {probs.dtype}")
    p = probs.detach()
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ValueError(f"{name} must hold finite, non-negative probabilities")
    dev = (p.double().sum(-1) - 1.0).abs().max().item()
    if dev > _ROW_SUM_TOL:
        raise ValueError(
            f"{name} rows must sum to 1 over the last (class) axis; "
            f"the largest deviation is {dev:.3g} (pass softmax outputs, not logits)"
        )
    return p


def _check_labels(labels: Any, n: int, n_classes: int) -> Tensor:
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor of shape ({n},), got {_shape(labels)}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"labels must have shape ({n},) to match the {n} examples of the probabilities, got shape {_shape(labels)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"labels must lie in [0, {n_classes - 1}] for {n_classes} classes, "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.long()


def _entropy(p: Tensor) -> Tensor:
    """-sum_c p_c log max(p_c, EPS) over the last axis, in float64 (0 for a one-hot row, not -0)."""
    p = p.double()
    return (p * p.clamp_min(EPS).log()).sum(-1).neg_().add_(0.0)


# ----------------------------------------------------------------------------- uncertainty


def predictive_entropy(probs: Tensor) -> Tensor:
    """H[p_bar] per example, (N,) nats in float64: the entropy of the mean over samples (total)."""
    p = _check_probs(probs, 3, "probs")
    return _entropy(p.double().mean(0))


def expected_entropy(probs: Tensor) -> Tensor:
    """E_s H[p_s] per example, (N,) nats in float64: the mean of the per-sample entropies (aleatoric)."""
    p = _check_probs(probs, 3, "probs")
    return _entropy(p).mean(0)


def mutual_information(probs: Tensor) -> Tensor:
    """H[p_bar] - E_s H[p_s] per example, (N,) nats (BALD, epistemic); rounding clamped to 0.

    A difference of two nearly equal numbers for a confident network, so it is computed in
    float64 whatever the dtype of ``probs`` (in float32, 14% of a confident network's values
    came out 0 and the AUROC of the score moved by 0.002)."""
    p = _check_probs(probs, 3, "probs").double()
    return (_entropy(p.mean(0)) - _entropy(p).mean(0)).clamp_min(0.0)


# ----------------------------------------------------------------------------- scores


def nll(mean_probs: Tensor, labels: Tensor) -> float:
    """Mean negative log-likelihood 1/N sum_n -log p_bar[n, y_n] (nats)."""
    p = _check_probs(mean_probs, 2, "mean_probs")
    y = _check_labels(labels, p.shape[0], p.shape[1]).to(p.device)
    picked = p.double().gather(1, y[:, None]).squeeze(1)
    return (-picked.clamp_min(EPS).log()).mean().item()


def brier_score(mean_probs: Tensor, labels: Tensor) -> float:
    """Multi-class Brier score 1/N sum_n sum_c (p_bar[n, c] - 1[c = y_n])^2, in [0, 2]."""
    p = _check_probs(mean_probs, 2, "mean_probs")
    y = _check_labels(labels, p.shape[0], p.shape[1]).to(p.device)
    onehot = F.one_hot(y, p.shape[1]).double()
    return ((p.double() - onehot) ** 2).sum(1).mean().item()


def _binned(mean_probs: Tensor, labels: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(edges (B+1,), counts (B,), correct per bin (B,), confidence sum per bin (B,))."""
    p = _check_probs(mean_probs, 2, "mean_probs")
    y = _check_labels(labels, p.shape[0], p.shape[1]).to(p.device)
    bins = check_int("bins", bins)
    conf, pred = p.double().max(1)
    conf = conf.clamp(0.0, 1.0)
    edges = torch.arange(bins + 1, dtype=torch.float64, device=p.device) / bins
    # bucketize(right=False) gives i with inner[i-1] < conf <= inner[i]: bin k = (k/B, (k+1)/B]
    idx = torch.bucketize(conf, edges[1:-1], right=False)
    counts = torch.bincount(idx, minlength=bins).double()
    correct = torch.bincount(idx, weights=(pred == y).double(), minlength=bins)
    conf_sum = torch.bincount(idx, weights=conf, minlength=bins)
    return edges.cpu(), counts.cpu(), correct.cpu(), conf_sum.cpu()


def expected_calibration_error(mean_probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE = sum_k (n_k / N) |acc_k - conf_k| over ``bins`` equal-width confidence bins."""
    _, counts, correct, conf_sum = _binned(mean_probs, labels, bins)
    return ((correct - conf_sum).abs().sum() / counts.sum()).item()


def reliability(mean_probs: Tensor, labels: Tensor, bins: int = 15) -> dict[str, Any]:
    """Per-bin numbers for a reliability diagram (bins as in :func:`expected_calibration_error`).

    Returns a dict of plain lists and floats: ``edges`` (B+1 bin edges k/B), ``counts``
    (examples per bin, ints), ``accuracy`` and ``confidence`` (per-bin accuracy and mean
    confidence, NaN for empty bins), ``ece``, ``n`` (examples) and ``bins``.
    """
    edges, counts, correct, conf_sum = _binned(mean_probs, labels, bins)
    nonempty = counts > 0
    nan = torch.full_like(counts, math.nan)
    acc = torch.where(nonempty, correct / counts.clamp_min(1), nan)
    conf = torch.where(nonempty, conf_sum / counts.clamp_min(1), nan)
    n = int(counts.sum().item())
    return {
        "edges": edges.tolist(),
        "counts": [int(c) for c in counts.tolist()],
        "accuracy": acc.tolist(),
        "confidence": conf.tolist(),
        "ece": ((correct - conf_sum).abs().sum() / n).item(),
        "n": n,
        "bins": len(counts),
    }


def _scores(x: Any, name: str) -> Tensor:
    try:
        t = torch.as_tensor(x).detach()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a 1-D sequence of numbers: {exc}") from None
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores, got shape {tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got {t.dtype}")
    t = t.double().cpu()
    if bool(torch.isnan(t).any()):
        raise ValueError(f"{name} must not contain NaN")
    return t


def auroc(scores_in: Any, scores_out: Any) -> float:
    """P(s_out > s_in) + 1/2 P(s_out = s_in) via midranks (Mann-Whitney), O(n log n).

    Higher scores mean "more out-of-distribution". Accepts tensors, arrays or sequences.
    """
    s_in = _scores(scores_in, "scores_in")
    s_out = _scores(scores_out, "scores_out")
    n, m = s_in.numel(), s_out.numel()
    pooled = torch.cat([s_in, s_out])
    order = torch.argsort(pooled)
    sorted_vals = pooled[order]
    _, counts = torch.unique_consecutive(sorted_vals, return_counts=True)
    ends = counts.cumsum(0).double()  # last 1-based rank of each tie group
    mid = ends - (counts.double() - 1.0) / 2.0  # mean rank of the group
    ranks = torch.empty_like(pooled)
    ranks[order] = torch.repeat_interleave(mid, counts)
    r_out = ranks[n:].sum().item()
    return (r_out - m * (m + 1) / 2.0) / (n * m)


# ----------------------------------------------------------------------------- samples


def accuracy_vs_samples(
    probs: Tensor, labels: Tensor, counts: Iterable[int] = (1, 2, 5, 10, 20, 50, 100)
) -> dict[int, float]:
    """{k: accuracy of the mean of the first k samples} for every k in ``counts`` with k <= S.

    Larger k are skipped; a ValueError if none fits. Keys keep the order of ``counts``.
    """
    p = _check_probs(probs, 3, "probs")
    s = p.shape[0]
    y = _check_labels(labels, p.shape[1], p.shape[2]).to(p.device)
    ks = list(counts)
    for k in ks:
        if not is_int(k) or k < 1:
            raise ValueError(f"counts must hold positive ints, got {k!r} in {ks!r}")
    fit = [k for k in dict.fromkeys(ks) if k <= s]
    if not fit:
        raise ValueError(f"no k in counts={ks!r} is <= the number of samples S={s} (probs has shape {_shape(probs)})")
    # the mean of the first k as summarize takes the mean of all S (same dtype and reduction),
    # so that a near-tie breaks the same way in both at k = S
    return {k: (p[:k].mean(0).argmax(-1) == y).double().mean().item() for k in fit}


def summarize(probs: Tensor, labels: Tensor, bins: int = 15) -> dict[str, float]:
    """All scores of an (S, N, C) prediction in one dict.

    Keys: ``accuracy``, ``error``, ``nll``, ``brier``, ``ece`` (of the mean over samples),
    ``predictive_entropy``, ``mutual_information``, ``expected_entropy`` (means over the
    examples, nats), and the ints ``samples`` (S), ``n`` (N) and ``bins``.
    """
    p = _check_probs(probs, 3, "probs")
    y = _check_labels(labels, p.shape[1], p.shape[2]).to(p.device)
    bins = check_int("bins", bins)
    mean = p.mean(0)
    acc = (mean.argmax(-1) == y).double().mean().item()
    return {
        "accuracy": acc,
        "error": 1.0 - acc,
        "nll": nll(mean, y),
        "brier": brier_score(mean, y),
        "ece": expected_calibration_error(mean, y, bins),
        "predictive_entropy": predictive_entropy(p).mean().item(),
        "mutual_information": mutual_information(p).mean().item(),
        "expected_entropy": expected_entropy(p).mean().item(),
        "samples": int(p.shape[0]),
        "n": int(p.shape[1]),
        "bins": bins,
    }


# ----------------------------------------------------------------------------- rotation


def rotate_images(x: Tensor, degrees: float) -> Tensor:
    """Rotate (N, C, H, W) images by ``degrees`` counter-clockwise as displayed.

    Displayed means row 0 at the top and column 0 at the left (``imshow``), so 90 degrees
    equals ``torch.rot90(x, 1, dims=(-2, -1))`` on square images (the top-right corner
    moves to the top-left). The rotation is about the image centre, in pixel units (so
    non-square images are not sheared), with bilinear interpolation and zeros where the
    source lies outside the image (``affine_grid`` / ``grid_sample``, align_corners=False).
    In centred pixel coordinates (u right, v down) output pixel (u, v) samples the input at
    ``(u cos a - v sin a, u sin a + v cos a)``. ``degrees == 0`` returns a copy of ``x``.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (N, C, H, W) image tensor, got shape {_shape(x)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor, got {x.dtype}")
    try:
        a = math.radians(float(degrees))
    except (TypeError, ValueError):
        raise ValueError(f"degrees must be a real number, got {degrees!r}") from None
    if not math.isfinite(a):
        raise ValueError(f"degrees must be finite, got {degrees!r}")
    if a == 0.0 or x.numel() == 0:
        return x.clone()
    n, _, h, w = x.shape
    c, s = math.cos(a), math.sin(a)
    # affine_grid works in coordinates normalized to [-1, 1] per axis: u = xn W/2, v = yn H/2
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=x.dtype, device=x.device).expand(n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
