"""Reproduce a table of the paper: models x datasets x seeds, then one Markdown/CSV table.

``nsm reproduce mnist`` trains every model of the MNIST comparison on the SPEC protocol
(overridable: epochs, seeds, samples), one run directory per (model, dataset, seed) under
``OUT/runs/``, skipping runs that already finished there with the same protocol, and writes
``OUT/table.md`` and ``OUT/table.csv``:

- each seed's error is the mean test error over its last 5 evaluated epochs (SI 4.7; fewer
  if fewer were evaluated, as the table says);
- each cell is the mean +- sample standard deviation of those over seeds;
- beside it the paper's number for that cell (SPEC section 7), where the paper gives one,
  and the training + test wall time summed over seeds.

A run directory that exists without ``summary.json`` (an interrupted run) is renamed
``NAME.incomplete-K`` and the run starts again; a finished run with another protocol is an
error (nothing is overwritten): choose another ``--out``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .config import TrainConfig
from .io import atomic_write
from .models import MODELS
from .registry import Registry

__all__ = ["PaperTable", "TABLES", "PAPER_ERRORS", "run_table", "aggregate", "write_table",
           "PROTOCOL_FIELDS"]

# Test error (%) the paper reports (SPEC section 7), by dataset then model.
PAPER_ERRORS: dict[str, dict[str, float]] = {
    "mnist": {"dcnn": 0.880, "bnsm": 0.775, "gnsm": 0.805, "ste": 2.13, "bd": 3.11,
              "wbd": 2.72, "sn": 2.05, "bn": 1.10},
    "emnist": {"dcnn": 6.938, "bnsm": 6.185, "gnsm": 6.256},
    "nmnist": {"dcnn": 0.927, "bnsm": 0.689, "gnsm": 0.701},
    "dvs-gesture": {"dcnn": 9.16, "bnsm": 8.56, "gnsm": 8.83},
    "cifar10": {"dcnn": 10.47, "bnsm": 9.98, "gnsm": 10.35},
    "cifar100": {"dcnn": 34.37, "bnsm": 34.85, "gnsm": 34.84},
}

# The config fields that define a run; a finished run is reused only if they all match.
PROTOCOL_FIELDS = ("model", "dataset", "seed", "epochs", "batch_size", "lr", "weight_decay",
                   "lr_schedule", "lr_step", "lr_gamma", "lr_decay_start", "samples", "eval_every",
                   "train_subset", "test_subset", "model_options", "dataset_options")


@dataclass(frozen=True)
class PaperTable:
    """A table to reproduce: its models and datasets, and protocol overrides per dataset."""

    name: str
    description: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    protocol: dict = field(default_factory=dict)  # dataset -> {config field: value}


TABLES: Registry[PaperTable] = Registry("table")

MNIST_MODELS = ("dcnn", "bnsm", "gnsm", "ste", "bd", "wbd", "sn", "bn", "bnsm-binconcrete",
                "gnsm-binconcrete", "sigmoid", "stnn", "bnn", "s2m", "bnsm-fc", "stnn-fc")
TABLES.register("mnist", PaperTable(
    "mnist", "every model of the paper's MNIST comparison (SPEC section 7)", MNIST_MODELS, ("mnist",)))
TABLES.register("main", PaperTable(
    "main", "the paper's main table: bNSM, gNSM and dCNN on every dataset (SPEC section 7), each "
    "on the network and protocol the paper uses for it",
    ("dcnn", "bnsm", "gnsm"), ("mnist", "emnist", "nmnist", "dvs-gesture", "cifar10", "cifar100")))
TABLES.register("fashion-mnist", PaperTable(
    "fashion-mnist", "bNSM, gNSM and dCNN on Fashion-MNIST (Table 6 network; not in the paper)",
    ("dcnn", "bnsm", "gnsm"), ("fashion-mnist",)))


def _cells(table: PaperTable, models, datasets) -> list[tuple[str, str]]:
    for name, chosen, allowed in (("model", models, table.models), ("dataset", datasets, table.datasets)):
        unknown = [c for c in (chosen or ()) if c not in allowed]
        if unknown:
            raise ValueError(f"{name}(s) {unknown} not in table {table.name!r}; it has: {', '.join(allowed)}")
    return [(d, m) for d in (datasets or table.datasets) for m in (models or table.models)]


def _run_state(run_dir: Path, config: TrainConfig) -> str:
    """'new', 'done' (finished with the same protocol) or 'incomplete'; raises on a mismatch."""
    if not run_dir.exists():
        return "new"
    if not (run_dir / "summary.json").exists():
        return "incomplete"
    saved = json.loads((run_dir / "config.json").read_text())
    want = config.to_dict()
    # a field missing from an older run's config.json had its default value then
    default = TrainConfig().to_dict()
    saved = {f: saved.get(f, default[f]) for f in PROTOCOL_FIELDS}
    diff = [f for f in PROTOCOL_FIELDS if saved[f] != want[f]]
    if diff:
        detail = ", ".join(f"{f}: {saved.get(f)!r} there, {want[f]!r} asked" for f in diff)
        raise ValueError(f"{run_dir} holds a finished run with another protocol ({detail}); "
                         f"use another --out, or move that run away")
    return "done"


def _move_aside(run_dir: Path) -> Path:
    for k in range(1, 10000):
        dest = run_dir.with_name(f"{run_dir.name}.incomplete-{k}")
        if not dest.exists():
            run_dir.rename(dest)
            return dest
    raise RuntimeError(f"could not move the incomplete run {run_dir} aside")


def run_table(table: str | PaperTable, *, out: str | os.PathLike, seeds: Sequence[int] = (0, 1),
              models: Optional[Sequence[str]] = None, datasets: Optional[Sequence[str]] = None,
              overrides: Optional[dict] = None, log: Callable[[str], None] = print,
              load: Optional[Callable] = None) -> list[dict]:
    """Train every (dataset, model, seed) not yet finished under ``out/runs``; return the rows.

    Each run follows its dataset's protocol (:data:`nsm.config.PROTOCOLS`; the MNIST one by
    default), then the table's own per-dataset ``protocol``, then ``overrides``: TrainConfig
    fields for every run (epochs, samples, eval_every, subsets, device, data_dir, ...).
    ``load(dataset_name, config)``: returns the Dataset (default: :func:`nsm.data.load_dataset`).
    """
    from .data import load_dataset
    from .train import fit

    table = TABLES.get(table) if isinstance(table, str) else table
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct non-negative ints, got {seeds}")
    out = Path(out)
    cells = _cells(table, models, datasets)
    overrides = dict(overrides or {})
    plan = []
    for dataset, model in cells:
        for seed in seeds:
            fields = {**table.protocol.get(dataset, {}), **overrides, "model": model,
                      "seed": seed, "out": str(out / "runs"), "run_name": f"{model}-{dataset}-seed{seed}"}
            config = TrainConfig.for_dataset(dataset, **fields)  # validated before any run starts
            plan.append((config, _run_state(out / "runs" / config.run_name, config)))
    todo = sum(state != "done" for _, state in plan)
    log(f"table {table.name}: {len(cells)} cell(s) x {len(seeds)} seed(s) = {len(plan)} runs, "
        f"{len(plan) - todo} already finished in {out / 'runs'}")
    loaded: dict[str, object] = {}
    k = 0
    for config, state in plan:
        run_dir = out / "runs" / config.run_name
        if state == "done":
            continue
        k += 1
        if state == "incomplete":
            log(f"moved the incomplete run {run_dir} to {_move_aside(run_dir)}")
        if config.dataset not in loaded:
            loaded.clear()  # one dataset in memory at a time
            loaded[config.dataset] = (load or (lambda name, c: load_dataset(
                name, c.data_dir, train_subset=c.train_subset, test_subset=c.test_subset)))(config.dataset, config)
        log(f"[{k}/{todo}] {config.model} on {config.dataset}, seed {config.seed}")
        t0 = time.perf_counter()
        fit(config, dataset=loaded[config.dataset], log=lambda s: log("    " + s))
        log(f"    done in {time.perf_counter() - t0:.0f} s")
    return aggregate(out / "runs", cells, seeds)


def aggregate(runs: Path, cells: Sequence[tuple[str, str]], seeds: Sequence[int]) -> list[dict]:
    """One row per (dataset, model) from the finished runs' summaries (errors in %)."""
    rows = []
    for dataset, model in cells:
        summaries = []
        for seed in seeds:
            path = Path(runs) / f"{model}-{dataset}-seed{seed}" / "summary.json"
            if not path.exists():
                raise FileNotFoundError(f"missing finished run {path.parent}")
            summaries.append(json.loads(path.read_text()))
        errs = [100 * s["last5_test_error"] for s in summaries]
        rows.append({
            "dataset": dataset, "model": model,
            "description": MODELS.get(model).description if model in MODELS else "",
            "seeds": list(seeds),
            "epochs": summaries[0]["epochs"], "samples": summaries[0]["samples"],
            "n_last": min(s["n_last"] for s in summaries),
            "error_pct": errs,
            "error_mean_pct": statistics.fmean(errs),
            "error_std_pct": statistics.stdev(errs) if len(errs) > 1 else math.nan,
            "final_error_mean_pct": statistics.fmean(100 * s["final_test_error"] for s in summaries),
            "paper_error_pct": PAPER_ERRORS.get(dataset, {}).get(model, math.nan),
            "wall_seconds": sum(s["wall_seconds"] for s in summaries),
        })
    return rows


def _pct(x: float, digits: int = 2) -> str:
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def format_markdown(rows: list[dict], title: str, command: str) -> str:
    lines = [f"# {title}", "", f"Made by: `{command}`", "",
             "Test error (%): mean ± std over seeds of each seed's mean over its last "
             "evaluated epochs (SI 4.7); `final` is the last epoch's error (mean over seeds); "
             "`paper` is the paper's number (SPEC section 7), – where it gives none. "
             "Wall time: training + testing, summed over seeds.", "",
             "| dataset | model | ours | final | paper | seeds | epochs | last-n | S | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = _pct(r["error_mean_pct"]) + ("" if math.isnan(r["error_std_pct"]) else f" ± {_pct(r['error_std_pct'])}")
        lines.append(f"| {r['dataset']} | {r['model']} | {ours} | {_pct(r['final_error_mean_pct'])} | "
                     f"{_pct(r['paper_error_pct'], 3)} | {len(r['seeds'])} | {r['epochs']} | "
                     f"{r['n_last']} | {r['samples']} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("dataset", "model", "error_mean_pct", "error_std_pct", "error_pct",
               "final_error_mean_pct", "paper_error_pct", "seeds", "epochs", "n_last", "samples",
               "wall_seconds", "description")


def format_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([";".join(f"{v:.4f}" for v in r[c]) if c == "error_pct"
                         else ";".join(map(str, r[c])) if c == "seeds"
                         else f"{r[c]:.4f}" if isinstance(r[c], float) else r[c] for c in CSV_COLUMNS])
    return buf.getvalue()


def write_table(rows: list[dict], out: str | os.PathLike, title: str, command: Optional[str] = None
                ) -> tuple[Path, Path]:
    """Write ``out/table.md`` and ``out/table.csv`` atomically; returns their paths."""
    out = Path(out)
    command = command or "nsm " + " ".join(sys.argv[1:])

    def text(s: str):
        return lambda tmp: Path(tmp).write_text(s)

    md = atomic_write(out / "table.md", text(format_markdown(rows, title, command)))
    cs = atomic_write(out / "table.csv", text(format_csv(rows)))
    return md, cs
