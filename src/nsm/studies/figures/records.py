"""Reading a training run directory, and the summary numbers of its record (SI Figs. 4-8).

A run directory (written by ``nsm train``) holds ``config.json`` and ``metrics.jsonl``;
trained with ``--record`` it also holds ``record/``::

    layers.json        layer names (W1, W2, ... in network order), types, shapes, initial
                       weight mean/std, the probed hidden layer and the companion models
    stats.csv          per (record point, layer): weight mean/std, their drift from
                       initialization, max |w|, mean gradient and mean |gradient|
    histograms.npz     per layer: bin edges (raw weight units) and counts per record point
    percentiles.csv    15th/50th/85th percentiles of the last hidden layer's input (optional)
    grad_cosine.csv    cosine between this run's gradient and a companion's (optional)

:func:`load_run` reads one directory into a :class:`RunRecord`. The pure number functions
(:func:`histogram_density`, :func:`drift_summary`, :func:`percentile_spread`,
:func:`cosine_summary`) are what the plots and :func:`~nsm.studies.figures.analyze` are
built on. Nothing here imports matplotlib.
"""

from __future__ import annotations

import csv
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from ...training.recorder import STATS_COLUMNS
from ...utils.io import read_json, read_text

__all__ = [
    "Record",
    "RunRecord",
    "load_run",
    "histogram_density",
    "drift_summary",
    "percentile_spread",
    "cosine_summary",
    "layer_title",
]

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


def _read_csv(
    path: Path, columns: Sequence[str], text: Sequence[str] = ("layer",), integer: Sequence[str] = ("step",)
) -> dict[str, np.ndarray]:
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
                    raise ValueError(
                        f"{path}, line {line}: column {c!r} has {value!r}, "
                        f"expected a{'n integer' if c in integer else ' number'}"
                    ) from None
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
            raise FileNotFoundError(
                f"{path} not found: a record/ folder needs layers.json, stats.csv and histograms.npz"
            )
        return path

    path = required("layers.json")
    layers = read_json(path, "the layer list of a recorded run")
    if not isinstance(layers, dict) or not isinstance(layers.get("layers"), list):
        raise ValueError(f"{path}: expected an object with a 'layers' list")
    if layers.get("version", 1) != 1:
        raise ValueError(f"{path}: unsupported record version {layers.get('version')!r} (this reads 1)")
    for i, entry in enumerate(layers["layers"]):
        if not isinstance(entry, dict) or not {"name", "init_mean", "init_std"} <= entry.keys():
            raise ValueError(f"{path}: layers[{i}] needs 'name', 'init_mean' and 'init_std'")
    names = [entry["name"] for entry in layers["layers"]]

    table = _read_csv(required("stats.csv"), STATS_COLUMNS)
    stats = {
        name: _select(table, table["layer"] == name, drop=("layer",))
        for name in dict.fromkeys([*names, *table["layer"].tolist()])
    }

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
            raise ValueError(
                f"{path}: no histogram for layer {name!r} (expected arrays {name}_edges and {name}_counts)"
            )
        edges, counts = arrays[f"{name}_edges"].astype(np.float64), arrays[f"{name}_counts"]
        if edges.ndim != 1 or counts.shape != (len(steps), len(edges) - 1):
            raise ValueError(
                f"{path}: layer {name!r} has edges {edges.shape} and counts {counts.shape}; "
                f"expected (B+1,) and ({len(steps)}, B)"
            )
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

    return Record(
        layers=layers, stats=stats, hist=hist, steps=steps, epochs=epochs, percentiles=percentiles, cosine=cosine
    )


def load_run(run_dir: PathLike) -> RunRecord:
    """Load a run directory: config, metrics and (if present) the ``record/`` folder."""
    path = Path(run_dir)
    for name in ("config.json", "metrics.jsonl"):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{path / name} not found: {path} is not an nsm run directory (one needs config.json and metrics.jsonl)"
            )
    config = read_json(path / "config.json", "the run configuration")
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
        raise ValueError(f"histogram_density: edges {edges.shape} and counts {counts.shape} must be (B+1,) and (B,)")
    widths = np.diff(edges)
    if np.any(widths <= 0):
        raise ValueError("histogram_density: edges must be strictly increasing")
    total = counts.sum()
    if total <= 0:
        raise ValueError("histogram_density: the counts sum to zero")
    return (edges[:-1] + edges[1:]) / 2, counts / (total * widths)


def _record(run: RunRecord) -> Record:
    """``run.record``; ValueError if the run was trained without ``--record``."""
    if run.record is None:
        raise ValueError(f"run {run.label} ({run.path}) has no record/ folder (train with --record)")
    return run.record


def _percentiles(run: RunRecord) -> dict[str, np.ndarray]:
    """``run.record.percentiles``; ValueError if the run has none."""
    if run.record is None or run.record.percentiles is None:
        raise ValueError(
            f"run {run.label} ({run.path}) has no recorded percentiles (record/percentiles.csv missing or empty)"
        )
    return run.record.percentiles


def _stats(run: RunRecord, layer: str) -> dict[str, np.ndarray]:
    _record(run).layer(layer)  # ValueError listing the layers if absent
    stats = run.record.stats.get(layer)
    if stats is None or not len(stats["step"]):
        raise ValueError(f"run {run.label} ({run.path}): stats.csv has no rows for layer {layer!r}")
    return stats


def drift_summary(run: RunRecord, layer: str) -> dict[str, float]:
    """Final mean drift, final std ratio and max |mean drift| of ``layer``'s weights."""
    stats = _stats(run, layer)
    return {
        "final_mean_drift": float(stats["w_mean_drift"][-1]),
        "final_std_ratio": float(stats["w_std_ratio"][-1]),
        "max_abs_mean_drift": float(np.max(np.abs(stats["w_mean_drift"]))),
    }


def _range(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.max() - values.min()) if len(values) else math.nan


def percentile_spread(run: RunRecord) -> dict[str, dict[str, float]]:
    """For p15/p50/p85: max - min over record points with epoch >= 1 and over all of them.

    Returns ``{"p15": {"after_first_epoch": r1, "total": r}, ...}`` (NaN where no points).
    """
    table = _percentiles(run)
    later = table["epoch"] >= 1
    return {p: {"after_first_epoch": _range(table[p][later]), "total": _range(table[p])} for p in PERCENTILES}


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
