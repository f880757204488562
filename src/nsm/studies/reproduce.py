"""Reproduce a table of the paper: models x datasets x seeds, then one Markdown/CSV table.

``nsm reproduce mnist`` trains every model of the MNIST comparison on the paper's protocol (docs/design.md §5)
(overridable: epochs, seeds, samples), one run directory per (model, dataset, seed) under
``OUT/runs/``, skipping runs that already finished there with the same protocol, and writes
``OUT/table.md`` and ``OUT/table.csv`` (:mod:`nsm.studies.tables`):

- each seed's error is the mean test error over its last 5 evaluated epochs at the full S
  (SI 4.7; the cheaper evaluations of ``eval_samples`` do not count; fewer if fewer were
  evaluated, as the table says);
- each cell is the mean +- sample standard deviation of those over seeds;
- beside it the paper's number for that cell (docs/design.md §7), where the paper gives one,
  and the training + test wall time summed over seeds;
- each model against the dCNN of its dataset: the difference of the means with its 95% Welch
  interval over seeds, and whether the model beats it, trails it or neither.

The tables it knows are :data:`nsm.studies.catalog.TABLES`.

An interrupted run (a run directory without ``summary.json``) is resumed from its checkpoint
(``fit(..., resume=RUN_DIR)``; from its start if it has none) when its ``config.json`` is this
run's configuration; otherwise (no ``config.json``, or another device, thread count...) it is
renamed ``NAME.incomplete-K`` and the run starts again. A finished run with another protocol
is an error (nothing is overwritten): choose another ``--out``.

Several workers (processes, on one machine or several sharing ``OUT``) may run the same
table at once: each claims a run before training it (:mod:`nsm.studies.claim`), skips runs that are
finished or claimed by a live worker, and at its end writes the table from the runs finished
so far (the last worker to end writes the complete one). ``worker=(K, N)`` trains only every
N-th run of the plan, starting at the K-th (a fixed split, claims still apply).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..training.checkpoint import config_differences
from ..training.config import TrainConfig
from ..utils.checks import is_int, is_number
from ..utils.io import read_json, read_json_object
from .catalog import MNIST_MODELS, TABLES, PaperTable  # noqa: F401 (their old home)
from .claim import HEARTBEAT_SECONDS, claim_run, live_holder
from .table_files import check_table_files, write_table_locked
from .tables import PAPER_ERRORS, aggregate, format_csv, format_markdown, write_table  # noqa: F401 (their old home)

__all__ = [
    "run_table",
    # their homes are nsm.studies.catalog and nsm.studies.tables; kept here for older imports
    "PaperTable",
    "TABLES",
    "PAPER_ERRORS",
    "aggregate",
    "write_table",
    "table_status",
    "rebuild_table",
    "format_status",
    "PROTOCOL_FIELDS",
]

# The config fields that define a run; a finished run is reused only if they all match.
PROTOCOL_FIELDS = (
    "model",
    "dataset",
    "seed",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "lr_schedule",
    "lr_step",
    "lr_gamma",
    "lr_decay_start",
    "samples",
    "eval_every",
    "eval_last",
    "eval_samples",
    "train_subset",
    "test_subset",
    "model_options",
    "dataset_options",
)


def _cells(table: PaperTable, models, datasets) -> list[tuple[str, str]]:
    """The (dataset, model) cells asked for: None is all of the table's, a list names some, each
    once (an empty list, or a name twice, would train the whole table or a run twice)."""
    for name, chosen, allowed in (("model", models, table.models), ("dataset", datasets, table.datasets)):
        if chosen is None:
            continue
        chosen = list(chosen)
        if not chosen:
            raise ValueError(f"{name}s is empty; give None for all of table {table.name!r}'s")
        repeated = sorted({c for c in chosen if chosen.count(c) > 1})
        if repeated:
            raise ValueError(f"{name}s names {repeated} more than once, got {chosen}")
        unknown = [c for c in chosen if c not in allowed]
        if unknown:
            raise ValueError(f"{name}(s) {unknown} not in table {table.name!r}; it has: {', '.join(allowed)}")
    models = table.models if models is None else models
    return [(d, m) for d in (table.datasets if datasets is None else datasets) for m in models]


def _run_state(run_dir: Path, config: TrainConfig) -> str:
    """'new', 'done' (finished with the same protocol) or 'incomplete'; raises on a mismatch."""
    if not run_dir.exists():
        return "new"
    if not (run_dir / "summary.json").exists():
        return "incomplete"
    saved = read_json_object(run_dir / "config.json", "the run's configuration")
    want = config.to_dict()
    # a field missing from an older run's config.json had its default value then
    default = TrainConfig.saved_defaults()
    saved = {f: saved.get(f, default[f]) for f in PROTOCOL_FIELDS}
    diff = [f for f in PROTOCOL_FIELDS if saved[f] != want[f]]
    if diff:
        detail = ", ".join(f"{f}: {saved.get(f)!r} there, {want[f]!r} asked" for f in diff)
        raise ValueError(
            f"{run_dir} holds a finished run with another protocol ({detail}); use another --out, or move that run away"
        )
    return "done"


def _resumable(run_dir: Path, config: TrainConfig) -> tuple[Optional[TrainConfig], str]:
    """The configuration to resume the interrupted run in ``run_dir`` with, or (None, why not).

    Its ``out`` may differ (another worker's path to the same folder), and it keeps the denormal
    mode it began with (``flush_denormal``: runs begun before the option did not flush); any
    other field that differs (FREE_FIELDS aside) would change what is computed, so the run
    starts again."""
    try:
        saved = read_json(run_dir / "config.json", "the run's configuration")
    except (OSError, ValueError) as exc:
        return None, f"no readable config.json: {exc.__class__.__name__}"
    if not isinstance(saved, dict):
        return None, "config.json holds no configuration"
    config = dataclasses.replace(
        config,
        out=saved.get("out", config.out),
        flush_denormal=saved.get("flush_denormal", TrainConfig.saved_defaults()["flush_denormal"]),
    )
    diff = config_differences(saved, config)
    return (None, "; ".join(diff)) if diff else (config, "")


def _move_aside(run_dir: Path) -> Path:
    for k in range(1, 10000):
        dest = run_dir.with_name(f"{run_dir.name}.incomplete-{k}")
        if not dest.exists():
            run_dir.rename(dest)
            return dest
    raise RuntimeError(f"could not move the incomplete run {run_dir} aside")


def _claim_path(out: Path, config: TrainConfig) -> Path:
    return out / "runs" / f"{config.run_name}.claim"


def _plan(table, out: Path, seeds, models, datasets, overrides, strict: bool = True):
    """(table, cells, [(config, state)]): every run of the table, validated before any starts;
    state as :func:`_run_state` gives it, or, with ``strict=False``, 'other protocol' where it
    would raise."""
    table = TABLES.get(table) if isinstance(table, str) else table
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct non-negative ints, got {seeds}")
    cells = _cells(table, models, datasets)
    plan = []
    for dataset, model in cells:
        for seed in seeds:
            fields = {
                **table.protocol.get(dataset, {}),
                **dict(overrides or {}),
                "model": model,
                "seed": seed,
                "out": str(out / "runs"),
                "run_name": f"{model}-{dataset}-seed{seed}",
            }
            config = TrainConfig.for_dataset(dataset, **fields)
            try:
                state = _run_state(out / "runs" / config.run_name, config)
            except ValueError:
                if strict:
                    raise
                state = "other protocol"
            plan.append((config, state))
    return table, cells, plan


def table_status(
    table: str | PaperTable,
    *,
    out: str | os.PathLike,
    seeds: Sequence[int] = (0, 1),
    models: Optional[Sequence[str]] = None,
    datasets: Optional[Sequence[str]] = None,
    overrides: Optional[dict] = None,
    steal_after: Optional[float] = None,
) -> list[dict]:
    """Where each run of the table stands in ``out``, without training or writing anything.

    One dict per run: ``run``, ``state`` ('finished', 'running' in a live worker, 'interrupted',
    'not started', or 'other protocol': finished with another one), ``epochs_done`` and
    ``step`` (into the next epoch; from the checkpoint, or the finished run), ``epochs``,
    ``wall_seconds`` (training and testing so far), ``holder`` (the live worker's claim line),
    ``test_error`` (a finished run's mean over its last evaluated epochs at the full S),
    ``restart`` (an interrupted run that :func:`run_table` would not resume but move aside and
    start again: why, e.g. ``threads: 1 there, 2 here``; else ''), ``seconds_left``."""
    from ..training.checkpoint import read_checkpoint

    out = Path(out)
    _, _, plan = _plan(table, out, seeds, models, datasets, overrides, strict=False)
    if steal_after is not None:
        _check_steal_after(steal_after)
    rows = []
    for config, state in plan:
        run_dir = out / "runs" / config.run_name
        row = {"run": config.run_name, "epochs": config.epochs, "epochs_done": 0, "step": None}
        row.update(state=state, wall_seconds=None, holder="", test_error=None, seconds_left=None, restart="")
        if state in ("done", "other protocol"):
            summary = read_json_object(run_dir / "summary.json", "the run's summary")
            row.update(epochs_done=summary.get("epochs"), wall_seconds=summary.get("wall_seconds"))
            row.update(test_error=summary.get("last5_test_error"), state="finished" if state == "done" else state)
            rows.append(row)
            continue
        row["holder"] = live_holder(_claim_path(out, config), steal_after=steal_after)
        ckpt_path = run_dir / "checkpoint.pt"
        if ckpt_path.is_file():
            row.update(_checkpoint_progress(read_checkpoint(ckpt_path), ckpt_path))
        done = row["epochs_done"]
        if row["holder"]:
            row["state"] = "running"
        elif state == "incomplete":
            row["state"] = "interrupted"
            resumed, why = _resumable(run_dir, config)  # as run_table will decide
            if resumed is None:
                row["restart"], done = why, 0  # what it did is moved aside: all of it is left
        else:
            row["state"] = "not started"
        row["seconds_left"] = _seconds_left(run_dir, config, done)
        rows.append(row)
    return rows


def _checkpoint_progress(ckpt: dict, path: Path) -> dict:
    """``epochs_done``, ``step`` and ``wall_seconds`` of a run's checkpoint; fields of the wrong
    type (a file nsm did not write) are a ``ValueError`` naming it, not a traceback."""
    epoch, in_epoch, wall = ckpt.get("epoch", 0), ckpt.get("in_epoch") or {}, ckpt.get("wall_seconds")
    step = in_epoch.get("batch") if isinstance(in_epoch, dict) else None
    if (
        not (is_int(epoch) and epoch >= 0)
        or not isinstance(in_epoch, dict)
        or not (step is None or is_int(step))
        or not (wall is None or is_number(wall))
    ):
        raise ValueError(
            f"{path}: not a checkpoint nsm wrote (epoch {epoch!r}, in_epoch {in_epoch!r}, wall_seconds {wall!r})"
        )
    return {"epochs_done": epoch, "step": step, "wall_seconds": wall}


def _check_steal_after(steal_after: float, name: str = "steal_after") -> None:
    if not steal_after >= 2 * HEARTBEAT_SECONDS:  # NaN too
        raise ValueError(
            f"{name} must be >= {2 * HEARTBEAT_SECONDS:g} seconds (twice the claims' heartbeat), got {steal_after}"
        )


def _seconds_left(run_dir: Path, config: TrainConfig, done: int) -> Optional[float]:
    """About how long the unfinished run still needs, from its own pace: the median training
    time of its last 5 epochs per epoch left, and its last evaluation's time per Monte-Carlo
    sample for each evaluation left at its S. None before one epoch and one evaluation."""
    from ..models.registry import is_stochastic
    from .figures.records import load_run

    try:
        metrics = load_run(run_dir).metrics
    except (OSError, ValueError):
        return None
    # an estimate: a line whose times are not numbers (a hand-edited file) is left out of it
    trained = [m["train_seconds"] for m in metrics if is_number(m.get("train_seconds"))][-5:]
    tested = [m for m in metrics if is_number(m.get("test_seconds")) and is_int(m.get("samples")) and m["samples"] > 0]
    if not trained or not tested:
        return None
    per_sample = tested[-1]["test_seconds"] / tested[-1]["samples"]
    full = config.samples if is_stochastic(config.model) else 1
    left = 0.0
    for epoch in range(done + 1, config.epochs + 1):
        samples = config.samples_at(epoch, full)
        left += statistics.median(trained) + (0.0 if samples is None else per_sample * samples)
    return left


def format_status(rows: list[dict]) -> str:
    """The rows of :func:`table_status` as a Markdown table, with a line of totals."""
    lines = [
        "| run | state | progress | training + test time | left (about) | test error |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        progress = f"{r['epochs_done']} of {r['epochs']} epochs done" if r["epochs_done"] else ""
        if r["step"]:
            steps = f"{r['step']} step{'s' if r['step'] != 1 else ''} into "
            progress += f", {steps}the next" if progress else f"{steps}epoch 1"
        progress = progress or "–"
        hours = "–" if r["wall_seconds"] is None else f"{r['wall_seconds'] / 3600:.1f} h"
        left = r.get("seconds_left")
        left = "–" if left is None else f"{left / 3600:.1f} h"
        error = "–" if r["test_error"] is None else f"{100 * r['test_error']:.2f}%"
        state = r["state"] + (f" ({r['holder']})" if r["holder"] else "")
        if r.get("restart"):  # the next run moves it aside and starts again
            state += f"; will restart: {r['restart']}"
            progress = "–" if progress == "–" else f"{progress} (moved aside when it restarts)"
        lines.append(f"| {r['run']} | {state} | {progress} | {hours} | {left} | {error} |")
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append("")
    lines.append(f"{len(rows)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    return "\n".join(lines)


def run_table(
    table: str | PaperTable,
    *,
    out: str | os.PathLike,
    seeds: Sequence[int] = (0, 1),
    models: Optional[Sequence[str]] = None,
    datasets: Optional[Sequence[str]] = None,
    overrides: Optional[dict] = None,
    log: Callable[[str], None] = print,
    load: Optional[Callable] = None,
    worker: Optional[tuple[int, int]] = None,
    steal_after: Optional[float] = None,
    title: Optional[str] = None,
    command: Optional[str] = None,
) -> list[dict]:
    """Train every (dataset, model, seed) not yet finished under ``out/runs`` and not claimed by
    another live worker, write ``out/table.md`` and ``out/table.csv`` from the runs finished by
    then (:func:`write_table`), and return their rows (:func:`aggregate` with ``partial=True``).

    Each run follows its dataset's protocol (:data:`nsm.training.config.PROTOCOLS`; the MNIST one by
    default), then the table's own per-dataset ``protocol``, then ``overrides``: TrainConfig
    fields for every run (epochs, samples, eval_every, subsets, device, data_dir, ...).
    ``load(dataset_name, config)``: returns the Dataset (default: :func:`nsm.data.load_dataset`).
    ``worker=(K, N)``: train only runs K-1, K-1+N, ... of the plan (1 <= K <= N).
    ``steal_after``: seconds without heartbeat after which another worker's claim is stale
    (:func:`nsm.studies.claim.claim_run`); None: only claims of dead processes on this host are.
    """
    from ..data import load_dataset
    from ..training.loop import fit

    table, cells, plan = _plan(table, Path(out), seeds, models, datasets, overrides)
    check_table_files(Path(out))  # now, not after hours of training
    if worker is not None and not (len(worker) == 2 and 1 <= worker[0] <= worker[1]):
        raise ValueError(f"worker must be (K, N) with 1 <= K <= N, got {worker}")
    if steal_after is not None:
        _check_steal_after(steal_after)
    out = Path(out)
    mine = plan if worker is None else plan[worker[0] - 1 :: worker[1]]
    todo = sum(state != "done" for _, state in mine)
    part = "" if worker is None else f"; worker {worker[0]}/{worker[1]} takes {len(mine)} of them"
    log(
        f"table {table.name}: {len(cells)} cell(s) x {len(seeds)} seed(s) = {len(plan)} runs, "
        f"{sum(state == 'done' for _, state in plan)} already finished in {out / 'runs'}{part}"
    )
    loaded: dict[str, object] = {}
    k = 0
    for config, state in mine:
        run_dir = out / "runs" / config.run_name
        if state == "done":
            continue
        k += 1
        claim, holder = claim_run(_claim_path(out, config), steal_after=steal_after, log=log)
        if claim is None:
            log(f"[{k}/{todo}] {config.run_name}: claimed by {holder}; skipped")
            continue
        with claim:
            state = _run_state(run_dir, config)  # another worker may have finished it meanwhile
            if state == "done":
                log(f"[{k}/{todo}] {config.run_name}: finished by another worker")
                continue
            resume = None
            if state == "incomplete":
                resumed, why = _resumable(run_dir, config)
                if resumed is None:
                    log(f"moved the incomplete run {run_dir} to {_move_aside(run_dir)} ({why})")
                else:
                    config, resume = resumed, run_dir
            # the data a run's config asks for: one dataset (with its subsets and options) in memory
            key = json.dumps(
                [config.dataset, config.data_dir, config.train_subset, config.test_subset, config.dataset_options],
                sort_keys=True,
            )
            if key not in loaded:
                loaded.clear()
                loaded[key] = (
                    load
                    or (
                        lambda name, c: load_dataset(
                            name,
                            c.data_dir,
                            train_subset=c.train_subset,
                            test_subset=c.test_subset,
                            **c.dataset_options,
                        )
                    )
                )(config.dataset, config)
            log(
                f"[{k}/{todo}] {config.model} on {config.dataset}, seed {config.seed}"
                + (" (resuming the interrupted run)" if resume else "")
            )
            t0 = time.perf_counter()
            fit(config, dataset=loaded[key], log=lambda s: log("    " + s), resume=resume)
            log(f"    done in {time.perf_counter() - t0:.0f} s")
    rows = write_table_locked(out, cells, seeds, title or table.title, command, table.pairs)
    unfinished = [config for config, _ in plan if not (out / "runs" / config.run_name / "summary.json").exists()]
    running = [
        config.run_name for config in unfinished if live_holder(_claim_path(out, config), steal_after=steal_after)
    ]
    if unfinished:
        log(
            f"table written from {len(plan) - len(unfinished)} of {len(plan)} runs: {len(running)} still "
            f"running in other workers{' (' + ', '.join(running) + ')' if running else ''}, "
            f"{len(unfinished) - len(running)} not started; run the same command again when they end"
        )
    return rows


def rebuild_table(
    table: str | PaperTable,
    *,
    out: str | os.PathLike,
    seeds: Sequence[int] = (0, 1),
    models: Optional[Sequence[str]] = None,
    datasets: Optional[Sequence[str]] = None,
    overrides: Optional[dict] = None,
    title: Optional[str] = None,
    command: Optional[str] = None,
) -> list[dict]:
    """Write ``out/table.md``, ``out/table.csv`` and ``out/curves.png`` from the runs already
    finished in ``out``, as :func:`run_table` would at its end, and return the rows; trains
    nothing and touches no run. A run in ``out`` made under another protocol than the one
    asked for raises ``ValueError``, as it does in :func:`run_table`."""
    table, cells, _ = _plan(table, Path(out), seeds, models, datasets, overrides)
    check_table_files(Path(out))
    return write_table_locked(Path(out), cells, seeds, title or table.title, command, table.pairs)
