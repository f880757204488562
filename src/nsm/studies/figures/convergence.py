"""The convergence figure: test error against epoch, one line per run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .common import _color, _figure, _legend
from .records import RunRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_convergence", "plot_table_curves"]


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


def plot_table_curves(runs_dir, cells, seeds, paper: Optional[dict] = None):
    """Test error (%) against epoch for every finished run of a reproduced table.

    One panel per dataset and one colour per model: a thin line per seed through all its
    evaluated epochs (filled dots for the full evaluations its reported error is made of, at
    the ``samples`` of the run's ``summary.json``; hollow ones for the cheap evaluations of
    ``eval_samples``, a deterministic network's at S = 1 included), a thick line
    for the mean over seeds at the epochs every seed evaluated, and the paper's number
    (``paper[dataset][model]``, %) dashed in the model's colour. Returns the figure (not
    through pyplot), or None when no run has finished.
    """
    from pathlib import Path

    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from .records import load_run

    runs_dir = Path(runs_dir)
    by_dataset: dict[str, list[tuple[str, list]]] = {}
    for dataset, model in cells:
        curves = []
        for seed in seeds:
            run_dir = runs_dir / f"{model}-{dataset}-seed{seed}"
            if (run_dir / "summary.json").is_file():
                run = load_run(run_dir)
                rows = [m for m in run.metrics if m.get("test_error") is not None]
                if rows:
                    curves.append((rows, _full_samples(run_dir, rows), _reported(run.config)))
        if curves:
            by_dataset.setdefault(dataset, []).append((model, curves))
    if not by_dataset:
        return None
    fig, axes = _figure(len(by_dataset), pyplot=False)
    for ax, (dataset, models) in zip(axes, by_dataset.items()):
        for i, (model, curves) in enumerate(models):
            color = _color(i)
            for rows, full, reported in curves:
                ax.plot(
                    [m["epoch"] for m in rows], [100 * m["test_error"] for m in rows], color=color, lw=0.7, alpha=0.6
                )
                for m in rows:
                    filled = m.get("samples", full) == full and reported(m["epoch"])
                    ax.plot(
                        m["epoch"],
                        100 * m["test_error"],
                        "o",
                        ms=3,
                        color=color,
                        markerfacecolor=color if filled else "white",
                        zorder=3,  # over the mean line
                    )
            shared = sorted(set.intersection(*({m["epoch"] for m in rows} for rows, *_ in curves)))
            mean = [
                100 * sum(next(m["test_error"] for m in rows if m["epoch"] == e) for rows, *_ in curves) / len(curves)
                for e in shared
            ]
            ax.plot(shared, mean, color=color, lw=2, label=f"{model} ({len(curves)} seed{'s' * (len(curves) > 1)})")
            theirs = (paper or {}).get(dataset, {}).get(model)
            if theirs is not None:
                ax.axhline(theirs, color=color, ls="--", lw=1)
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        drawn = any(model in (paper or {}).get(dataset, {}) for model, _ in models)
        ax.set_title(dataset + (" (dashed: the paper)" if drawn else ""))
        _legend(ax)
    return fig


def _reported(config: dict):
    """Whether an epoch's evaluation is one the run's reported error is made of
    (:meth:`nsm.training.config.TrainConfig.reported`: never a cheap one, even a deterministic
    network's at S = 1); every evaluation where the configuration cannot be read."""
    from ...training.config import TrainConfig

    try:
        return TrainConfig.from_dict({k: v for k, v in config.items() if k != "_environment"}).reported
    except (TypeError, ValueError):
        return lambda epoch: True


def _full_samples(run_dir, rows: list[dict]) -> int:
    """The S of a finished run's reported evaluations: its ``summary.json``'s ``samples`` (1 for
    a deterministic network), not the largest S in its metrics, which an ``eval_samples`` above
    ``samples`` would be; the largest only for a summary without it."""
    from ...utils.io import read_json_object

    full = read_json_object(run_dir / "summary.json", "a finished run's summary").get("samples")
    if isinstance(full, int) and not isinstance(full, bool):
        return full
    return max(m.get("samples", 1) for m in rows)
