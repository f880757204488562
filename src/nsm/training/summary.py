"""A finished run's reported numbers, from its per-epoch metrics (SI 4.7).

- :func:`reported_numbers`: the final epoch's error, the mean over the last 5 evaluations made
  at the full S by the schedule (:meth:`nsm.training.config.TrainConfig.reported`: the cheap
  evaluations of ``eval_samples`` never count) and the best of those;
- :func:`resummarize`: recompute them for a finished run directory from its ``metrics.jsonl``
  and ``config.json`` and rewrite ``summary.json`` where they differ (``nsm summarize``): for
  runs whose summary was written under an older rule.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..utils.checks import is_number
from ..utils.io import read_json_object, read_text, write_json
from .checkpoint import load_run_config
from .config import TrainConfig

__all__ = ["reported_numbers", "resummarize", "read_metrics", "REPORTED_FIELDS"]

REPORTED_FIELDS = ("final_test_error", "last5_test_error", "n_last", "best_test_error", "best_epoch")


def reported_numbers(history: list[dict], config: TrainConfig, samples: int) -> dict:
    """``final_test_error``, ``last5_test_error`` (over ``n_last`` <= 5 evaluations),
    ``best_test_error`` and ``best_epoch`` (the first of equal ones; chosen on the test set:
    reported, never the result) of a run evaluated as ``history`` says, at full S ``samples``."""
    evaluated = [h for h in history if "test_error" in h]
    # an epoch evaluated before metrics recorded their S was evaluated at the full S
    full = [h for h in evaluated if h.get("samples", samples) == samples and config.reported(h["epoch"])]
    if not full:
        raise ValueError("no epoch was evaluated at the full S: the run has no reported error")
    last = full[-5:]
    best = min(full, key=lambda h: h["test_error"])
    return {
        "final_test_error": evaluated[-1]["test_error"],
        "last5_test_error": sum(h["test_error"] for h in last) / len(last),
        "n_last": len(last),
        "best_test_error": best["test_error"],
        "best_epoch": best["epoch"],
    }


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``, one JSON object per line (blank lines skipped);
    a line that is not one is a ``ValueError`` naming the file and line."""
    rows = []
    for n, line in enumerate(read_text(path, "one JSON object per line").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {n}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {n}: expected a JSON object")
        rows.append(row)
    return rows


def resummarize(run_dir: str | os.PathLike, *, write: bool = True) -> dict[str, tuple]:
    """``{field: (in summary.json, recomputed)}`` for each reported number of the finished run
    in ``run_dir`` that :func:`reported_numbers` computes otherwise; with ``write``,
    ``summary.json`` is rewritten (atomically) with the recomputed ones, its other fields kept."""
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").is_file():
        raise FileNotFoundError(f"{run_dir} has no summary.json: not a finished run (nothing to recompute)")
    summary = read_json_object(run_dir / "summary.json", "a finished run's summary", ("samples", "epochs"))
    config = load_run_config(run_dir)
    history = read_metrics(run_dir / "metrics.jsonl")
    where = run_dir / "metrics.jsonl"
    last = 0
    for i, h in enumerate(history, 1):
        epoch = h.get("epoch")
        if not (isinstance(epoch, int) and not isinstance(epoch, bool)) or not is_number(h.get("test_error", 0.0)):
            raise ValueError(f"{where}, row {i}: expected an epoch's metrics (an int epoch, a numeric test_error)")
        if epoch <= last:
            raise ValueError(f"{where}, row {i}: epoch {epoch} after epoch {last} (epochs must increase)")
        last = epoch
    if not history or last != summary["epochs"]:
        raise ValueError(f"{where} does not end at the run's last epoch ({summary['epochs']})")
    if config.epochs != summary["epochs"] or summary["samples"] not in (config.samples, 1):
        raise ValueError(
            f"{run_dir}: config.json ({config.epochs} epochs, S = {config.samples}) is not the configuration of "
            f"summary.json ({summary['epochs']} epochs, S = {summary['samples']})"
        )
    new = reported_numbers(history, config, summary["samples"])
    changes = {k: (summary.get(k), v) for k, v in new.items() if summary.get(k) != v}
    if changes and write:
        write_json(run_dir / "summary.json", {**summary, **new})
    return changes
