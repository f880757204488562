"""Figures of the gradients over training (SI Figs. 7-8): their mean per layer, and their
cosine with the gradients of companion models trained alongside."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from .common import _axes, _color, _legend, _per_layer_lines, _recorded
from .records import RunRecord, layer_title

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_grad_means", "plot_grad_cosine"]


def plot_grad_means(runs, layers: Optional[Sequence[str]] = None, axes: Optional[Sequence[Axes]] = None) -> list:
    """SI Fig. 7: per layer, the mean gradient since the previous record point vs epoch."""
    return _per_layer_lines(
        runs, layers, axes, "g_mean", "mean gradient (loss / weight unit)", "Mean gradient per layer"
    )


def _cosine_layers(runs: list[RunRecord]) -> list[str]:
    """Layers with cosine rows in some run, in network order (unknown names last)."""
    order = list(dict.fromkeys(n for r in runs for n in r.record.layer_names))
    with_data = {layer for r in runs for layer, _ in r.record.cosine}
    return [n for n in order if n in with_data] + sorted(with_data - set(order))


def plot_grad_cosine(runs, layers: Optional[Sequence[str]] = None, axes: Optional[Sequence[Axes]] = None) -> list:
    """SI Fig. 8: per layer, gradient cosine vs epoch, one line per (run, companion).

    Each panel also has a dotted line at 0 (``axhline``), so ``len(ax.lines)`` is the number
    of (run, companion) pairs with data for that layer plus one. By default the layers are
    those with cosine data in some run, in network order.
    """
    runs, index = _recorded(runs)
    pairs = [(i, run, key) for i, run in zip(index, runs) for key in run.record.cosine]
    if not pairs:
        raise ValueError("none of the runs has gradient cosine rows (record/grad_cosine.csv)")
    if layers is None:
        layers = _cosine_layers(runs)
    else:
        layers = [layers] if isinstance(layers, str) else list(layers)
    axes = _axes(axes, len(layers), "Gradient cosine with companion models")
    styles = ("-", "--", "-.", ":")
    # one run: a colour per companion; several runs: a colour per run, a line style per companion
    by_companion = len({i for i, _, _ in pairs}) == 1
    for ax, layer in zip(axes, layers):
        for i, run, (name, companion) in pairs:
            if name != layer:
                continue
            companions = list(dict.fromkeys(c for _, c in run.record.cosine))
            epochs, cosine = run.record.cosine[(name, companion)]
            ax.plot(
                epochs,
                cosine,
                marker=".",
                color=_color(companions.index(companion) if by_companion else i),
                linestyle=styles[companions.index(companion) % len(styles)],
                label=f"{run.label} vs {companion}",
            )
        ax.axhline(0.0, color="gray", linestyle=":", linewidth=1)
        owner = next((r for r in runs if layer in r.record.layer_names), None)
        ax.set_title(layer_title(owner, layer) if owner else layer)
        ax.set_xlabel("epoch")
        ax.set_ylabel("gradient cosine")
        _legend(ax)
    return axes
