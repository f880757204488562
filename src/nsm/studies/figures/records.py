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
import io
import math
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from ...data.files import DataError, check_zip_directory, npy_header, open_regular, read_npz
from ...training.recorder import STATS_COLUMNS
from ...training.summary import read_metrics
from ...utils.io import read_json

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
    """Read a CSV with at least ``columns`` into column arrays; ValueError naming the file.

    The file is opened without blocking (:func:`~nsm.data.files.open_regular`: a FIFO in its
    place is refused, never waited on) and read as UTF-8; a malformed CSV (a field longer than
    :func:`csv.field_size_limit`, ...) or bytes that are not UTF-8 are a ValueError naming the
    file."""
    try:
        with open_regular(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            try:
                data = _csv_columns(path, reader, columns, text, integer)
            except csv.Error as exc:
                raise ValueError(f"{path}, line {reader.line_num}: not a CSV file nsm wrote ({exc})") from None
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1]
        raise ValueError(
            f"{path}: not UTF-8 text ({exc.reason}: byte {bad!r}); nsm writes its CSV files in UTF-8"
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


def _csv_columns(path: Path, reader, columns: Sequence[str], text: Sequence[str], integer: Sequence[str]) -> dict:
    """The values of ``columns``, a list per column, from an open ``csv.reader`` of ``path``."""
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
                    f"{path}, line {line}: column {c!r} has {value[:80]!r}, "
                    f"expected a{'n integer' if c in integer else ' number'}"
                ) from None
    return data


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
        if not isinstance(entry["name"], str) or not entry["name"]:
            raise ValueError(f"{path}: layers[{i}]['name'] is {entry['name']!r:.80}, expected a layer name (a string)")
        for key in ("init_mean", "init_std"):
            if not isinstance(entry[key], (int, float)) or isinstance(entry[key], bool):
                raise ValueError(f"{path}: layers[{i}][{key!r}] is {entry[key]!r:.80}, expected a number")
    names = [entry["name"] for entry in layers["layers"]]

    table = _read_csv(required("stats.csv"), STATS_COLUMNS)
    stats = {
        name: _select(table, table["layer"] == name, drop=("layer",))
        for name in dict.fromkeys([*names, *table["layer"].tolist()])
    }

    path = required("histograms.npz")
    arrays = _read_histograms(path, names)
    steps, epochs = arrays["steps"].astype(np.int64), arrays["epochs"].astype(np.float64)
    hist = {name: (arrays[f"{name}_edges"].astype(np.float64), arrays[f"{name}_counts"].copy()) for name in names}

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


def _read_histograms(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays of ``histograms.npz`` for the layers ``names``: ``steps`` and ``epochs``
    (R,), and per layer L ``L_edges`` (B+1,) and ``L_counts`` (R, B), read in bounded memory.

    The file must be as the recorder writes it (:func:`numpy.savez`): exactly those members,
    stored uncompressed, numeric C-order arrays of those consistent shapes, each declaring no
    more data than its member holds. All of it is checked on the ``.npy`` headers before any
    data is read, then :func:`~nsm.data.files.read_npz` reads them (checking it all again), so
    no header can make this allocate more than the file holds, and nothing is decompressed.
    Anything else is a ``ValueError`` naming the file."""
    keys = list(dict.fromkeys(["steps", "epochs", *(f"{n}_{part}" for n in names for part in ("edges", "counts"))]))
    declared = _npz_headers(path, keys)
    (rows,) = _shape(path, declared, "steps", 1)
    if declared["epochs"][1] != (rows,):
        raise ValueError(f"{path}: 'steps' {(rows,)} and 'epochs' {declared['epochs'][1]} must be equal 1-d shapes")
    for name in names:
        (n_edges,) = _shape(path, declared, f"{name}_edges", 1)
        counts = declared[f"{name}_counts"][1]
        if n_edges < 2 or counts != (rows, n_edges - 1):
            raise ValueError(
                f"{path}: layer {name!r} has edges {(n_edges,)} and counts {counts}; "
                f"expected (B+1,) and ({rows}, B) with B >= 1"
            )
    return read_npz(path, declared, name=str(path))


def _shape(path: Path, declared: dict, key: str, ndim: int) -> tuple[int, ...]:
    """The shape the header of array ``key`` declares, if it has ``ndim`` dimensions."""
    shape = declared[key][1]
    if len(shape) != ndim:
        raise ValueError(f"{path}: array {key!r} has shape {shape}, expected {ndim} dimension(s)")
    return shape


def _npz_headers(path: Path, keys: Sequence[str]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """``{key: (dtype, shape)}`` as the ``.npy`` headers of the ``.npz`` file ``path`` declare
    them, which must hold exactly the arrays ``keys``; only headers are read."""
    shown = str(path)
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            check_zip_directory(fh, size, len(keys), shown)  # before zipfile makes an object per entry
        except DataError as exc:
            raise ValueError(f"{exc} (steps, epochs, and L_edges and L_counts for each layer of layers.json)") from None
        try:
            with zipfile.ZipFile(fh) as zf:
                infos = {info.filename: info for info in zf.infolist()}
                for key in keys:
                    if f"{key}.npy" not in infos:
                        layer = key.rpartition("_")[0]
                        what = f"the histogram of layer {layer!r}" if key not in ("steps", "epochs") else "it"
                        raise DataError(f"{shown}: no array {key!r}; {what} needs one (it has {sorted(infos)[:10]})")
                return {key: _npy_header(zf, infos[f"{key}.npy"], size, shown) for key in keys}
        except DataError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, struct.error) as exc:
            raise ValueError(f"{shown}: not a readable .npz file ({type(exc).__name__}: {exc})") from None


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, shown: str) -> tuple[np.dtype, tuple]:
    """(dtype, shape) of one member of :func:`_npz_headers`, read from its header alone."""
    where = f"{shown}: array {info.filename[:-4]!r}"
    fp, shape, fortran, dtype = npy_header(zf, info, size, where, "the recorder stores it")
    fp.close()
    if dtype.kind not in "iuf" or fortran:
        order = ", in Fortran order" if fortran else ""
        raise DataError(f"{where}: dtype {dtype}{order}; the recorder writes C-order integer or float arrays")
    if any(n < 0 for n in shape):
        raise DataError(f"{where}: a negative dimension in its shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > info.file_size:
        raise DataError(
            f"{where} declares shape {shape} of {dtype} ({nbytes:,} bytes), more than its {info.file_size:,} bytes"
        )
    return dtype, shape


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
    metrics = read_metrics(path / "metrics.jsonl")
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
