"""Figures of the device study of :mod:`nsm.studies.devices`: accuracy against a non-ideality.

matplotlib is imported only when a function makes its own axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

from .common import _axes_row

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_robustness"]


def plot_robustness(
    curves: Mapping[str, Mapping[float, float]],
    ax: Optional["Axes"] = None,
    xlabel: str = "non-ideality",
    ylabel: str = "accuracy (%)",
) -> "Axes":
    """Accuracy (%) against the non-ideality value, one line per model.

    ``curves``: ``{model label: {value: accuracy in [0, 1]}}`` (e.g. from
    :func:`~nsm.studies.devices.accuracy_under` keyed by the swept value). Plotted sorted by value, in percent.
    Draws on ``ax`` (new axes if None); nothing is shown.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves must be a non-empty dict {{label: {{value: accuracy}}}}, got {curves!r}")
    for label, c in curves.items():
        if not isinstance(c, Mapping) or not c:
            raise ValueError(f"curves[{label!r}] must be a non-empty dict {{value: accuracy}}, got {c!r}")
    ax = _axes_row(ax, figsize=(4.5, 3.2))
    for label, c in curves.items():
        xs = sorted(c, key=float)
        ax.plot([float(v) for v in xs], [100.0 * float(c[v]) for v in xs], marker="o", label=str(label))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax
