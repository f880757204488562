"""Plotting helpers shared by the figure modules: panels, colours, legends, run selection.

matplotlib is imported inside the functions that need it, never at import time: pyplot
only when a function makes its own figure (``pyplot=True``, or no axes given).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from .records import RunRecord, _stats, layer_title

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _color(i: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if i < 10 else "tab20"]
    return cmap(i % cmap.N)


def _figure(n: int, pyplot: bool = True, title: Optional[str] = None):
    """A figure with ``n`` panels: one row, or two rows when n > 4. Returns (fig, axes list)."""
    if n < 1:
        raise ValueError(f"a figure needs at least one panel, got {n}")
    rows, cols = (1, n) if n <= 4 else (2, math.ceil(n / 2))
    size = (4 * cols, 3.2 * rows)
    if pyplot:
        import matplotlib.pyplot as plt

        fig, grid = plt.subplots(rows, cols, figsize=size, squeeze=False)
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=size)
        grid = fig.subplots(rows, cols, squeeze=False)
    axes = list(grid.ravel())
    for extra in axes[n:]:
        fig.delaxes(extra)
    if title:
        fig.suptitle(title)
    fig.set_layout_engine("constrained")
    return fig, axes[:n]


def _axes(axes, n: int, title: Optional[str]) -> list:
    if axes is None:
        return _figure(n, title=title)[1]
    axes = list(np.ravel(np.asarray(axes, dtype=object)))
    if len(axes) != n:
        raise ValueError(f"expected {n} axes (one per panel), got {len(axes)}")
    return axes


def _recorded(runs) -> tuple[list[RunRecord], list[int]]:
    """The runs with a record and their positions among ``runs`` (which fix their colors)."""
    runs = [runs] if isinstance(runs, RunRecord) else list(runs)
    index = [i for i, r in enumerate(runs) if r.record is not None]
    if not index:
        raise ValueError("none of the runs has a record/ folder (train with --record)")
    return [runs[i] for i in index], index


def _layers(runs: list[RunRecord], layers: Optional[Sequence[str]]) -> list[str]:
    """The given layers (each must be in every run), or the names common to all runs."""
    if layers is None:
        common = [n for n in runs[0].record.layer_names if all(n in r.record.layer_names for r in runs[1:])]
        if not common:
            raise ValueError(
                "the runs have no layer name in common: "
                + "; ".join(f"{r.label}: {r.record.layer_names}" for r in runs)
            )
        return common
    layers = [layers] if isinstance(layers, str) else list(layers)
    for r in runs:
        for name in layers:
            if name not in r.record.layer_names:
                raise ValueError(
                    f"run {r.label} ({r.path}) has no layer {name!r}; its layers are {r.record.layer_names}"
                )
    return layers


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def _per_layer_lines(runs, layers, axes, column: str, ylabel: str, title: str) -> list:
    runs, index = _recorded(runs)
    layers = _layers(runs, layers)
    axes = _axes(axes, len(layers), title)
    for ax, layer in zip(axes, layers):
        for i, run in zip(index, runs):
            stats = _stats(run, layer)
            x, y = stats["epoch"], stats[column]
            keep = np.isfinite(y)
            ax.plot(x[keep], y[keep], marker=".", color=_color(i), label=run.label)
        ax.set_title(layer_title(runs[0], layer))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        _legend(ax)
    return axes


def _axes_row(ax: Optional[Axes], ncols: int = 1, figsize: tuple[float, float] = (4.5, 4.0)):
    """``ax`` if given; else a new pyplot figure of one row of ``ncols`` axes (one axes, or a tuple)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, axes = plt.subplots(1, ncols, figsize=figsize, squeeze=False)
    return axes[0, 0] if ncols == 1 else tuple(axes[0])
