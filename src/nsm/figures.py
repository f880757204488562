"""Figures and summary numbers from training run directories (SI Figs. 4-8 of the paper).

A run directory (written by ``nsm train``) holds ``config.json`` and ``metrics.jsonl``;
trained with ``--record`` it also holds ``record/``::

    layers.json        layer names (W1, W2, ... in network order), types, shapes, initial
                       weight mean/std, the probed hidden layer and the companion models
    stats.csv          per (record point, layer): weight mean/std, their drift from
                       initialization, max |w|, mean gradient and mean |gradient|
    histograms.npz     per layer: bin edges (raw weight units) and counts per record point
    percentiles.csv    15th/50th/85th percentiles of the last hidden layer's input (optional)
    grad_cosine.csv    cosine between this run's gradient and a companion's (optional)

:func:`load_run` reads one directory into a :class:`RunRecord`. The ``plot_*`` functions
draw one figure each onto given matplotlib axes (or new ones) and return the axes;
pyplot is imported only when a function makes its own figure. The pure number functions
(:func:`histogram_density`, :func:`drift_summary`, :func:`percentile_spread`,
:func:`cosine_summary`) are what the plots and :func:`analyze` are built on.
:func:`analyze` loads several runs and writes every figure that the runs have data for,
plus ``analysis.json`` with the summary numbers.
"""

from __future__ import annotations

import csv
import json
import math
import os
import textwrap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

import numpy as np

from .io import read_json, read_text, save_figure, write_json

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "Record", "RunRecord", "load_run",
    "histogram_density", "drift_summary", "percentile_spread", "cosine_summary",
    "layer_title",
    "plot_convergence", "plot_weight_evolution", "plot_weight_drift", "plot_weight_histograms",
    "plot_weight_means", "plot_grad_means", "plot_grad_cosine", "plot_percentiles",
    "analyze",
]

STATS_COLUMNS = ("step", "epoch", "layer", "w_mean", "w_std", "w_mean_drift", "w_std_ratio",
                 "w_abs_max", "g_mean", "g_abs_mean", "g_steps")
PERCENTILE_COLUMNS = ("step", "epoch", "layer", "p15", "p50", "p85", "mean", "std")
COSINE_COLUMNS = ("step", "epoch", "layer", "companion", "cosine")
PERCENTILES = ("p15", "p50", "p85")

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------- loading

@dataclass
class Record:
    """The contents of a run's ``record/`` folder.

    ``stats[layer][column]`` and ``percentiles[column]`` are arrays sorted by step
    (``step`` int, everything else float, NaN where the file has an empty field);
    ``hist[layer]`` is ``(edges (B+1,), counts (R, B))`` with row r at ``steps[r]`` /
    ``epochs[r]``; ``cosine[(layer, companion)]`` is ``(epochs, cosine)``.
    """

    layers: dict
    stats: dict[str, dict[str, np.ndarray]]
    hist: dict[str, tuple[np.ndarray, np.ndarray]]
    steps: np.ndarray
    epochs: np.ndarray
    percentiles: Optional[dict[str, np.ndarray]] = None
    cosine: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def layer_names(self) -> list[str]:
        return [entry["name"] for entry in self.layers["layers"]]

    def layer(self, name: str) -> dict:
        """The layers.json entry of layer ``name`` (ValueError listing the layers if absent)."""
        for entry in self.layers["layers"]:
            if entry["name"] == name:
                return entry
        raise ValueError(f"no layer {name!r} in the record; its layers are {self.layer_names}")


@dataclass
class RunRecord:
    """One loaded run directory; ``record`` is None when it was trained without ``--record``."""

    path: Path
    label: str
    config: dict
    metrics: list[dict]
    record: Optional[Record] = None

    @property
    def model(self) -> str:
        return str(self.config.get("model", ""))

    @property
    def final_test_error(self) -> Optional[float]:
        errors = [m["test_error"] for m in self.metrics if m.get("test_error") is not None]
        return float(errors[-1]) if errors else None


def _read_json(path: Path, what: str) -> Any:
    return read_json(path, what)


def _read_csv(path: Path, columns: Sequence[str], text: Sequence[str] = ("layer",),
              integer: Sequence[str] = ("step",)) -> dict[str, np.ndarray]:
    """Read a CSV with at least ``columns`` into column arrays; ValueError naming the file."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a header row {','.join(columns)}")
        header = [h.strip() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; the header is {header}")
        index = {c: header.index(c) for c in columns}
        data: dict[str, list] = {c: [] for c in columns}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
            for c in columns:
                value = row[index[c]].strip()
                try:
                    if c in text:
                        data[c].append(value)
                    elif c in integer:
                        data[c].append(int(value))
                    else:
                        data[c].append(float(value) if value != "" else math.nan)
                except ValueError:
                    raise ValueError(f"{path}, line {line}: column {c!r} has {value!r}, "
                                     f"expected a{'n integer' if c in integer else ' number'}") from None
    out: dict[str, np.ndarray] = {}
    for c in columns:
        if c in text:
            out[c] = np.array(data[c], dtype=str)
        elif c in integer:
            out[c] = np.array(data[c], dtype=np.int64)
        else:
            out[c] = np.array(data[c], dtype=np.float64)
    return out


def _select(table: dict[str, np.ndarray], mask: np.ndarray, drop: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Rows ``mask`` of ``table``, sorted by step, without the columns ``drop``."""
    order = np.argsort(table["step"][mask], kind="stable")
    return {c: v[mask][order] for c, v in table.items() if c not in drop}


def _load_record(folder: Path) -> Record:
    def required(name: str) -> Path:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a record/ folder needs layers.json, "
                                    "stats.csv and histograms.npz")
        return path

    path = required("layers.json")
    layers = _read_json(path, "the layer list of a recorded run")
    if not isinstance(layers, dict) or not isinstance(layers.get("layers"), list):
        raise ValueError(f"{path}: expected an object with a 'layers' list")
    if layers.get("version", 1) != 1:
        raise ValueError(f"{path}: unsupported record version {layers.get('version')!r} (this reads 1)")
    for i, entry in enumerate(layers["layers"]):
        if not isinstance(entry, dict) or not {"name", "init_mean", "init_std"} <= entry.keys():
            raise ValueError(f"{path}: layers[{i}] needs 'name', 'init_mean' and 'init_std'")
    names = [entry["name"] for entry in layers["layers"]]

    table = _read_csv(required("stats.csv"), STATS_COLUMNS)
    stats = {name: _select(table, table["layer"] == name, drop=("layer",))
             for name in dict.fromkeys([*names, *table["layer"].tolist()])}

    path = required("histograms.npz")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    for key in ("steps", "epochs"):
        if key not in arrays:
            raise ValueError(f"{path}: no array {key!r}; it has {sorted(arrays)}")
    steps, epochs = arrays["steps"].astype(np.int64), arrays["epochs"].astype(np.float64)
    if steps.ndim != 1 or steps.shape != epochs.shape:
        raise ValueError(f"{path}: 'steps' {steps.shape} and 'epochs' {epochs.shape} must be equal 1-d shapes")
    hist = {}
    for name in names:
        if f"{name}_edges" not in arrays or f"{name}_counts" not in arrays:
            raise ValueError(f"{path}: no histogram for layer {name!r} "
                             f"(expected arrays {name}_edges and {name}_counts)")
        edges, counts = arrays[f"{name}_edges"].astype(np.float64), arrays[f"{name}_counts"]
        if edges.ndim != 1 or counts.shape != (len(steps), len(edges) - 1):
            raise ValueError(f"{path}: layer {name!r} has edges {edges.shape} and counts {counts.shape}; "
                             f"expected (B+1,) and ({len(steps)}, B)")
        hist[name] = (edges, counts)

    percentiles = None
    path = folder / "percentiles.csv"
    if path.is_file():
        table = _read_csv(path, PERCENTILE_COLUMNS)
        if len(table["step"]):
            percentiles = _select(table, np.ones(len(table["step"]), bool), drop=("layer",))

    cosine = {}
    path = folder / "grad_cosine.csv"
    if path.is_file():
        table = _read_csv(path, COSINE_COLUMNS, text=("layer", "companion"))
        pairs = dict.fromkeys(zip(table["layer"].tolist(), table["companion"].tolist()))
        for layer, companion in pairs:
            rows = _select(table, (table["layer"] == layer) & (table["companion"] == companion))
            cosine[(layer, companion)] = (rows["epoch"], rows["cosine"])

    return Record(layers=layers, stats=stats, hist=hist, steps=steps, epochs=epochs,
                  percentiles=percentiles, cosine=cosine)


def load_run(run_dir: PathLike) -> RunRecord:
    """Load a run directory: config, metrics and (if present) the ``record/`` folder."""
    path = Path(run_dir)
    for name in ("config.json", "metrics.jsonl"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} not found: {path} is not an nsm run directory "
                                    "(one needs config.json and metrics.jsonl)")
    config = _read_json(path / "config.json", "the run configuration")
    if not isinstance(config, dict):
        raise ValueError(f"{path / 'config.json'}: expected a JSON object, got {type(config).__name__}")
    metrics = []
    lines = read_text(path / "metrics.jsonl", "one JSON object per line").splitlines()
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path / 'metrics.jsonl'}, line {line_no}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path / 'metrics.jsonl'}, line {line_no}: expected a JSON object")
        metrics.append(row)
    record = _load_record(path / "record") if (path / "record").is_dir() else None
    label = str(config.get("model") or path.name)
    return RunRecord(path=path, label=label, config=config, metrics=metrics, record=record)


# --------------------------------------------------------------------------- numbers

def histogram_density(edges, counts) -> tuple[np.ndarray, np.ndarray]:
    """Bin centers and a density (per unit of ``edges``) that integrates to 1 over the bins."""
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if edges.ndim != 1 or counts.shape != (len(edges) - 1,):
        raise ValueError(f"histogram_density: edges {edges.shape} and counts {counts.shape} "
                         "must be (B+1,) and (B,)")
    widths = np.diff(edges)
    if np.any(widths <= 0):
        raise ValueError("histogram_density: edges must be strictly increasing")
    total = counts.sum()
    if total <= 0:
        raise ValueError("histogram_density: the counts sum to zero")
    return (edges[:-1] + edges[1:]) / 2, counts / (total * widths)


def _stats(run: RunRecord, layer: str) -> dict[str, np.ndarray]:
    if run.record is None:
        raise ValueError(f"run {run.label} ({run.path}) has no record/ folder (train with --record)")
    run.record.layer(layer)  # ValueError listing the layers if absent
    stats = run.record.stats.get(layer)
    if stats is None or not len(stats["step"]):
        raise ValueError(f"run {run.label} ({run.path}): stats.csv has no rows for layer {layer!r}")
    return stats


def drift_summary(run: RunRecord, layer: str) -> dict[str, float]:
    """Final mean drift, final std ratio and max |mean drift| of ``layer``'s weights."""
    stats = _stats(run, layer)
    return {"final_mean_drift": float(stats["w_mean_drift"][-1]),
            "final_std_ratio": float(stats["w_std_ratio"][-1]),
            "max_abs_mean_drift": float(np.max(np.abs(stats["w_mean_drift"])))}


def _range(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.max() - values.min()) if len(values) else math.nan


def percentile_spread(run: RunRecord) -> dict[str, dict[str, float]]:
    """For p15/p50/p85: max - min over record points with epoch >= 1 and over all of them.

    Returns ``{"p15": {"after_first_epoch": r1, "total": r}, ...}`` (NaN where no points).
    """
    if run.record is None or run.record.percentiles is None:
        raise ValueError(f"run {run.label} ({run.path}) has no recorded percentiles "
                         "(record/percentiles.csv missing or empty)")
    table = run.record.percentiles
    later = table["epoch"] >= 1
    return {p: {"after_first_epoch": _range(table[p][later]), "total": _range(table[p])}
            for p in PERCENTILES}


def cosine_summary(run: RunRecord) -> dict[tuple[str, str], float]:
    """Mean gradient cosine over record points per (layer, companion); {} if none recorded."""
    if run.record is None:
        return {}
    out = {}
    for key, (_, cosine) in run.record.cosine.items():
        finite = cosine[np.isfinite(cosine)]
        out[key] = float(finite.mean()) if len(finite) else math.nan
    return out


def layer_title(run: RunRecord, layer: str) -> str:
    """``"W1 (NSMConv2d 32x1x5x5)"`` from the run's layers.json."""
    if run.record is None:
        return layer
    entry = run.record.layer(layer)
    shape = "x".join(str(s) for s in entry.get("shape", []))
    detail = " ".join(s for s in (str(entry.get("type", "")), shape) if s)
    return f"{layer} ({detail})" if detail else layer


# --------------------------------------------------------------------------- plotting helpers

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
        common = [n for n in runs[0].record.layer_names
                  if all(n in r.record.layer_names for r in runs[1:])]
        if not common:
            raise ValueError("the runs have no layer name in common: "
                             + "; ".join(f"{r.label}: {r.record.layer_names}" for r in runs))
        return common
    layers = [layers] if isinstance(layers, str) else list(layers)
    for r in runs:
        for name in layers:
            if name not in r.record.layer_names:
                raise ValueError(f"run {r.label} ({r.path}) has no layer {name!r}; "
                                 f"its layers are {r.record.layer_names}")
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


# --------------------------------------------------------------------------- plots

def plot_convergence(runs, ax: Optional[Axes] = None) -> Axes:
    """Test error (%) vs epoch, one line per run (runs without evaluated epochs are skipped)."""
    runs = [runs] if isinstance(runs, RunRecord) else list(runs)
    if ax is None:
        ax = _figure(1)[1][0]
    for i, run in enumerate(runs):
        rows = [m for m in run.metrics if m.get("test_error") is not None and "epoch" in m]
        if rows:
            ax.plot([m["epoch"] for m in rows], [100 * m["test_error"] for m in rows],
                    marker="o", markersize=3, color=_color(i), label=run.label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.set_title("Convergence")
    _legend(ax)
    return ax


def plot_weight_evolution(run: RunRecord, layer: str, ax: Optional[Axes] = None) -> Axes:
    """SI Fig. 4 (top): the weight histogram of ``layer`` over training as one image.

    x = epoch, y = weight in units of the initial std, color = fraction of the layer's
    weights in the bin (log scale; empty bins are blank). Adds one QuadMesh to
    ``ax.collections`` and a colorbar beside ``ax``.
    """
    from matplotlib.colors import LogNorm

    if run.record is None:
        raise ValueError(f"run {run.label} ({run.path}) has no record/ folder (train with --record)")
    entry = run.record.layer(layer)
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
    mesh = ax.pcolormesh(x, y, fraction, norm=LogNorm(vmin=vmin, vmax=1.0), cmap="viridis",
                         shading="flat")
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
    for ax, ylabel, what in ((axes[0], "mean - initial mean (weight units)", "mean drift"),
                             (axes[1], "std / initial std", "std ratio")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {what}")
        _legend(ax)
    axes[0].ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    return axes


def plot_weight_histograms(runs, layers: Optional[Sequence[str]] = None,
                           axes: Optional[Sequence[Axes]] = None) -> list:
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
            ax.plot(centers, density, drawstyle="steps-mid", color=_color(i),
                    label=f"{run.label} (epoch {run.record.epochs[-1]:.4g})")
        ax.set_title(layer_title(runs[0], layer))
        ax.set_xlabel("weight")
        ax.set_ylabel("density (1 / weight unit)")
        _legend(ax)
    return axes


def plot_weight_means(runs, layers: Optional[Sequence[str]] = None,
                      axes: Optional[Sequence[Axes]] = None) -> list:
    """SI Fig. 6: per layer, the mean weight vs epoch, one line per run."""
    return _per_layer_lines(runs, layers, axes, "w_mean", "mean weight (weight units)",
                            "Mean weight per layer")


def plot_grad_means(runs, layers: Optional[Sequence[str]] = None,
                    axes: Optional[Sequence[Axes]] = None) -> list:
    """SI Fig. 7: per layer, the mean gradient since the previous record point vs epoch."""
    return _per_layer_lines(runs, layers, axes, "g_mean", "mean gradient (loss / weight unit)",
                            "Mean gradient per layer")


def _cosine_layers(runs: list[RunRecord]) -> list[str]:
    """Layers with cosine rows in some run, in network order (unknown names last)."""
    order = list(dict.fromkeys(n for r in runs for n in r.record.layer_names))
    with_data = {layer for r in runs for layer, _ in r.record.cosine}
    return [n for n in order if n in with_data] + sorted(with_data - set(order))


def plot_grad_cosine(runs, layers: Optional[Sequence[str]] = None,
                     axes: Optional[Sequence[Axes]] = None) -> list:
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
            ax.plot(epochs, cosine, marker=".", color=_color(companions.index(companion) if by_companion else i),
                    linestyle=styles[companions.index(companion) % len(styles)],
                    label=f"{run.label} vs {companion}")
        ax.axhline(0.0, color="gray", linestyle=":", linewidth=1)
        owner = next((r for r in runs if layer in r.record.layer_names), None)
        ax.set_title(layer_title(owner, layer) if owner else layer)
        ax.set_xlabel("epoch")
        ax.set_ylabel("gradient cosine")
        _legend(ax)
    return axes


def plot_percentiles(run: RunRecord, ax: Optional[Axes] = None) -> Axes:
    """15th/50th/85th percentile of the last hidden layer's input vs epoch (three lines)."""
    if run.record is None or run.record.percentiles is None:
        raise ValueError(f"run {run.label} ({run.path}) has no recorded percentiles "
                         "(record/percentiles.csv missing or empty)")
    if ax is None:
        ax = _figure(1)[1][0]
    table = run.record.percentiles
    for p, style in zip(PERCENTILES, ("--", "-", "--")):
        ax.plot(table["epoch"], table[p], linestyle=style, marker=".", label=f"{p[1:]}th percentile")
    hidden = run.record.layers.get("hidden") or {}
    title = f"{run.label}: {hidden['layer']}" if hidden.get("layer") else run.label
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("epoch")
    ax.set_ylabel(textwrap.fill(str(hidden.get("quantity") or "input to hidden units"), 36))
    _legend(ax)
    return ax


# --------------------------------------------------------------------------- analyze

def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _summary(run: RunRecord) -> dict:
    out = {"label": run.label, "model": run.model, "path": str(run.path),
           "dataset": run.config.get("dataset"), "seed": run.config.get("seed"),
           "epochs_evaluated": sum(1 for m in run.metrics if m.get("test_error") is not None),
           "final_test_error": run.final_test_error, "recorded": run.record is not None}
    if run.record is not None:
        out["drift"] = {layer: drift_summary(run, layer) for layer in run.record.layer_names
                        if len(run.record.stats.get(layer, {}).get("step", ()))}
        out["percentile_spread"] = (percentile_spread(run) if run.record.percentiles is not None
                                    else None)
        cosine: dict[str, dict[str, float]] = {}
        for (layer, companion), value in cosine_summary(run).items():
            cosine.setdefault(layer, {})[companion] = value
        out["grad_cosine_mean"] = cosine
    return out


def analyze(run_dirs: Sequence[PathLike], out: PathLike, layer: str = "W3") -> dict[str, Path]:
    """Load the runs and write every figure they have data for, plus ``analysis.json``.

    Always ``convergence.png``; with at least one recorded run also ``weight_evolution.png``
    (``layer``, one panel per recorded run), ``weight_drift.png`` (``layer``),
    ``weight_histograms.png``, ``weight_means.png``, ``grad_means.png`` (layers common to
    the recorded runs), ``percentiles.png`` (if some run recorded them) and
    ``grad_cosine.png`` (if some run has cosine rows). Returns file stem -> path.
    Everything is checked before anything is written.
    """
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ValueError("analyze: no run directories given")
    runs = [load_run(d) for d in run_dirs]
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} ({run.path.name})"
    recorded = [r for r in runs if r.record is not None]
    for run in recorded:
        if layer not in run.record.layer_names:
            raise ValueError(f"run {run.label} ({run.path}) has no layer {layer!r}; "
                             f"its layers are {run.record.layer_names} (choose one with layer=...)")
    summaries = [_summary(r) for r in runs]
    layers = _layers(recorded, None) if recorded else []
    with_percentiles = [r for r in recorded if r.record.percentiles is not None]
    cos_layers = _cosine_layers(recorded) if recorded else []

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def save(name: str, fig) -> None:
        written[name] = save_figure(out / f"{name}.png", fig)
        fig.clear()

    fig, (ax,) = _figure(1, pyplot=False)
    plot_convergence(runs, ax=ax)
    save("convergence", fig)
    if recorded:
        fig, axes = _figure(len(recorded), pyplot=False, title=f"Weight histograms of {layer} over training")
        for run, ax in zip(recorded, axes):
            plot_weight_evolution(run, layer, ax=ax)
        save("weight_evolution", fig)
        fig, axes = _figure(2, pyplot=False, title=f"Weight drift of {layer}")
        plot_weight_drift(runs, layer, axes=axes)
        save("weight_drift", fig)
        for name, plot, title in (
                ("weight_histograms", plot_weight_histograms, "Weight distributions after training"),
                ("weight_means", plot_weight_means, "Mean weight per layer"),
                ("grad_means", plot_grad_means, "Mean gradient per layer")):
            fig, axes = _figure(len(layers), pyplot=False, title=title)
            plot(runs, layers, axes=axes)
            save(name, fig)
        if with_percentiles:
            fig, axes = _figure(len(with_percentiles), pyplot=False,
                                title="Percentiles of the last hidden layer's input")
            for run, ax in zip(with_percentiles, axes):
                plot_percentiles(run, ax=ax)
            save("percentiles", fig)
        if cos_layers:
            fig, axes = _figure(len(cos_layers), pyplot=False,
                                title="Gradient cosine with companion models")
            plot_grad_cosine(runs, cos_layers, axes=axes)
            save("grad_cosine", fig)
    written["analysis"] = write_json(out / "analysis.json", _json_safe(
        {"layer": layer, "runs": summaries,
         "figures": {k: str(v) for k, v in written.items()}}))
    return written
