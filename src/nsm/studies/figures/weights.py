"""Figures of the weights over training (SI Figs. 4-6) and of the last hidden layer's input.

One figure each, drawn onto given matplotlib axes (or new ones) and returned:
:func:`plot_weight_evolution` (a layer's histogram over training), :func:`plot_weight_drift`
(its mean and std against their initial values), :func:`plot_weight_histograms` (the final
densities), :func:`plot_weight_means` and :func:`plot_percentiles`.
"""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from .common import _axes, _color, _figure, _layers, _legend, _per_layer_lines, _recorded
from .records import PERCENTILES, RunRecord, _percentiles, _record, _stats, histogram_density, layer_title

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "plot_weight_evolution",
    "plot_weight_drift",
    "plot_weight_histograms",
    "plot_weight_means",
    "plot_percentiles",
]


def plot_weight_evolution(run: RunRecord, layer: str, ax: Optional[Axes] = None) -> Axes:
    """SI Fig. 4 (top): the weight histogram of ``layer`` over training as one image.

    x = epoch, y = weight in units of the initial std, color = fraction of the layer's
    weights in the bin (log scale; empty bins are blank). Adds one QuadMesh to
    ``ax.collections`` and a colorbar beside ``ax``.
    """
    from matplotlib.colors import LogNorm

    entry = _record(run).layer(layer)
    edges, counts = run.record.hist[layer]
    epochs = run.record.epochs
    if not len(epochs):
        raise ValueError(f"run {run.label} ({run.path}): histograms.npz has no record points")
    if ax is None:
        ax = _figure(1)[1][0]
    std = float(entry["init_std"])
    scaled = std > 0 and math.isfinite(std)
    y = edges / std if scaled else edges
    if len(epochs) > 1:
        mid = (epochs[:-1] + epochs[1:]) / 2
        x = np.concatenate([[2 * epochs[0] - mid[0]], mid, [2 * epochs[-1] - mid[-1]]])
    else:
        x = np.array([epochs[0] - 0.5, epochs[0] + 0.5])
    totals = counts.sum(axis=1, keepdims=True)
    fraction = np.ma.masked_less_equal(counts / np.where(totals > 0, totals, 1), 0).T
    vmin = float(fraction.min()) if fraction.count() else 1e-6
    mesh = ax.pcolormesh(x, y, fraction, norm=LogNorm(vmin=vmin, vmax=1.0), cmap="viridis", shading="flat")
    ax.figure.colorbar(mesh, ax=ax, label="fraction of weights")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weight / initial std" if scaled else "weight")
    ax.set_title(f"{run.label}: {layer_title(run, layer)}")
    return ax


def plot_weight_drift(runs, layer: str, axes: Optional[Sequence[Axes]] = None) -> list:
    """SI Fig. 4 (bottom), two panels: mean - initial mean, and std / initial std, vs epoch."""
    runs, index = _recorded(runs)
    _layers(runs, [layer])
    axes = _axes(axes, 2, f"Weight drift of {layer}")
    for i, run in zip(index, runs):
        stats = _stats(run, layer)
        axes[0].plot(stats["epoch"], stats["w_mean_drift"], marker=".", color=_color(i), label=run.label)
        axes[1].plot(stats["epoch"], stats["w_std_ratio"], marker=".", color=_color(i), label=run.label)
    title = layer_title(runs[0], layer)
    for ax, ylabel, what in (
        (axes[0], "mean - initial mean (weight units)", "mean drift"),
        (axes[1], "std / initial std", "std ratio"),
    ):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {what}")
        _legend(ax)
    axes[0].ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    return axes


def plot_weight_histograms(runs, layers: Optional[Sequence[str]] = None, axes: Optional[Sequence[Axes]] = None) -> list:
    """SI Fig. 5: per layer, each run's weight density at its last record point (one line each)."""
    runs, index = _recorded(runs)
    layers = _layers(runs, layers)
    axes = _axes(axes, len(layers), "Weight distributions after training")
    for ax, layer in zip(axes, layers):
        for i, run in zip(index, runs):
            edges, counts = run.record.hist[layer]
            if not len(counts):
                raise ValueError(f"run {run.label} ({run.path}): histograms.npz has no record points")
            centers, density = histogram_density(edges, counts[-1])
            ax.plot(
                centers,
                density,
                drawstyle="steps-mid",
                color=_color(i),
                label=f"{run.label} (epoch {run.record.epochs[-1]:.4g})",
            )
        ax.set_title(layer_title(runs[0], layer))
        ax.set_xlabel("weight")
        ax.set_ylabel("density (1 / weight unit)")
        _legend(ax)
    return axes


def plot_weight_means(runs, layers: Optional[Sequence[str]] = None, axes: Optional[Sequence[Axes]] = None) -> list:
    """SI Fig. 6: per layer, the mean weight vs epoch, one line per run."""
    return _per_layer_lines(runs, layers, axes, "w_mean", "mean weight (weight units)", "Mean weight per layer")


def plot_percentiles(run: RunRecord, ax: Optional[Axes] = None) -> Axes:
    """15th/50th/85th percentile of the last hidden layer's input vs epoch (three lines)."""
    table = _percentiles(run)
    if ax is None:
        ax = _figure(1)[1][0]
    for p, style in zip(PERCENTILES, ("--", "-", "--")):
        ax.plot(table["epoch"], table[p], linestyle=style, marker=".", label=f"{p[1:]}th percentile")
    hidden = run.record.layers.get("hidden") or {}
    title = f"{run.label}: {hidden['layer']}" if hidden.get("layer") else run.label
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("epoch")
    ax.set_ylabel(textwrap.fill(str(hidden.get("quantity") or "input to hidden units"), 36))
    _legend(ax)
    return ax
