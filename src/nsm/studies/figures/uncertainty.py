"""Figures of the uncertainty measures of :mod:`nsm.studies.uncertainty`.

Each draws onto the given matplotlib axes (or new ones: pyplot is imported only then,
inside the function), never calls ``show`` and returns the axes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from ...utils.checks import check_int
from ..uncertainty import _scores, auroc
from .common import _axes_row

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_reliability", "plot_accuracy_vs_samples", "plot_rotation", "plot_ood_histograms"]


def plot_reliability(rel: Mapping[str, Any], ax: Optional["Axes"] = None) -> "Axes":
    """Reliability diagram of a :func:`~nsm.studies.uncertainty.reliability` dict: per-bin
    accuracy bars, the gap to the mean confidence (hatched) and the diagonal of perfect
    calibration (one line)."""
    for key in ("edges", "accuracy", "confidence"):
        if key not in rel:
            raise ValueError(f"rel must be a reliability() dict with key {key!r}, got keys {sorted(rel)}")
    edges = [float(e) for e in rel["edges"]]
    acc = [float(v) for v in rel["accuracy"]]
    conf = [float(v) for v in rel["confidence"]]
    if not (len(acc) == len(conf) == len(edges) - 1):
        raise ValueError(
            f"rel has {len(edges)} edges, {len(acc)} accuracies and {len(conf)} confidences; expected B + 1, B and B"
        )
    ax = _axes_row(ax)
    lefts = edges[:-1]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    keep = [i for i in range(len(acc)) if not (math.isnan(acc[i]) or math.isnan(conf[i]))]
    ax.bar(
        [lefts[i] for i in keep],
        [acc[i] for i in keep],
        width=[widths[i] for i in keep],
        align="edge",
        color="tab:blue",
        edgecolor="black",
        linewidth=0.5,
        label="accuracy",
    )
    ax.bar(
        [lefts[i] for i in keep],
        [conf[i] - acc[i] for i in keep],
        bottom=[acc[i] for i in keep],
        width=[widths[i] for i in keep],
        align="edge",
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        linewidth=0.5,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    title = "Reliability"
    if "ece" in rel and rel["ece"] is not None and not math.isnan(float(rel["ece"])):
        title += f" (ECE {100 * float(rel['ece']):.2f}%)"
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_accuracy_vs_samples(curves: Mapping[str, Mapping[int, float]], ax: Optional["Axes"] = None) -> "Axes":
    """Accuracy against the number of samples k (log axis), one line per ``curves`` entry
    ({label: :func:`~nsm.studies.uncertainty.accuracy_vs_samples` dict})."""
    if not curves:
        raise ValueError("curves must hold at least one {label: {k: accuracy}} entry")
    ax = _axes_row(ax)
    for label, curve in curves.items():
        if not curve:
            raise ValueError(f"curves[{label!r}] is empty")
        ks = sorted(curve)
        ax.plot(ks, [100 * float(curve[k]) for k in ks], marker="o", label=str(label))
    ax.set_xscale("log")
    ax.set_xlabel("samples averaged (k)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs. Monte-Carlo samples")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def _entropy_key(values: Mapping[str, Sequence[float]], label: str) -> str:
    for key in ("entropy", "predictive_entropy"):
        if key in values:
            return key
    raise ValueError(f"series[{label!r}] needs an 'entropy' (or 'predictive_entropy') list, got keys {sorted(values)}")


def plot_rotation(
    angles: Sequence[float],
    series: Mapping[str, Mapping[str, Sequence[float]]],
    axes: Optional[Sequence["Axes"]] = None,
) -> tuple["Axes", "Axes"]:
    """Accuracy (left) and predictive entropy (right) against the rotation angle.

    ``series`` maps a label to ``{"accuracy": [...], "entropy": [...]}`` (accuracy as a
    fraction, entropy in nats; ``"predictive_entropy"`` is accepted for ``"entropy"``), each
    list as long as ``angles``. One line per label on each axes; returns the two axes.
    """
    angles = [float(a) for a in angles]
    if not series:
        raise ValueError("series must hold at least one {label: {'accuracy', 'entropy'}} entry")
    if axes is None:
        ax_acc, ax_ent = _axes_row(None, ncols=2, figsize=(9.0, 4.0))
    else:
        if len(axes) != 2:
            raise ValueError(f"axes must be two Axes (accuracy, entropy), got {len(axes)}")
        ax_acc, ax_ent = axes
    for label, values in series.items():
        if "accuracy" not in values:
            raise ValueError(f"series[{label!r}] needs an 'accuracy' list, got keys {sorted(values)}")
        ent_key = _entropy_key(values, label)
        for key in ("accuracy", ent_key):
            if len(values[key]) != len(angles):
                raise ValueError(
                    f"series[{label!r}][{key!r}] has {len(values[key])} values but there are {len(angles)} angles"
                )
        ax_acc.plot(angles, [100 * float(v) for v in values["accuracy"]], marker="o", label=str(label))
        ax_ent.plot(angles, [float(v) for v in values[ent_key]], marker="o", label=str(label))
    ax_acc.set_ylabel("accuracy (%)")
    ax_ent.set_ylabel("predictive entropy (nats)")
    for ax in (ax_acc, ax_ent):
        ax.set_xlabel("rotation (degrees, counter-clockwise)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    ax_acc.set_title("Accuracy under rotation")
    ax_ent.set_title("Uncertainty under rotation")
    return ax_acc, ax_ent


def plot_ood_histograms(
    scores_in: Any,
    scores_out: Any,
    ax: Optional["Axes"] = None,
    label: str = "predictive entropy (nats)",
    bins: int = 30,
) -> "Axes":
    """Density histograms of in- and out-of-distribution scores on shared bins, with the
    :func:`~nsm.studies.uncertainty.auroc` of the score in the title."""
    s_in = _scores(scores_in, "scores_in")
    s_out = _scores(scores_out, "scores_out")
    bins = check_int("bins", bins)
    lo = min(s_in.min().item(), s_out.min().item())
    hi = max(s_in.max().item(), s_out.max().item())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("scores_in and scores_out must be finite to be histogrammed")
    if hi <= lo:
        hi = lo + 1.0
    edges = [lo + (hi - lo) * k / bins for k in range(bins + 1)]
    ax = _axes_row(ax)
    ax.hist(s_in.numpy(), bins=edges, density=True, alpha=0.5, label="in-distribution")
    ax.hist(s_out.numpy(), bins=edges, density=True, alpha=0.5, label="out-of-distribution")
    ax.set_xlabel(label)
    ax.set_ylabel("density")
    ax.set_title(f"OOD separation (AUROC {auroc(s_in, s_out):.3f})")
    ax.legend(fontsize="small")
    return ax
