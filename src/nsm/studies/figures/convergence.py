"""The convergence figure: test error against epoch, one line per run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .common import _color, _figure, _legend
from .records import RunRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_convergence"]


def plot_convergence(runs, ax: Optional[Axes] = None) -> Axes:
    """Test error (%) vs epoch, one line per run (runs without evaluated epochs are skipped)."""
    runs = [runs] if isinstance(runs, RunRecord) else list(runs)
    if ax is None:
        ax = _figure(1)[1][0]
    for i, run in enumerate(runs):
        rows = [m for m in run.metrics if m.get("test_error") is not None and "epoch" in m]
        if rows:
            ax.plot(
                [m["epoch"] for m in rows],
                [100 * m["test_error"] for m in rows],
                marker="o",
                markersize=3,
                color=_color(i),
                label=run.label,
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.set_title("Convergence")
    _legend(ax)
    return ax
