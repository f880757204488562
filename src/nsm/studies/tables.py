"""The table of a sweep: its rows from the finished runs' summaries, and ``table.md`` /
``table.csv``.

- :func:`aggregate`: one row per (dataset, model): each seed's error (the mean over its last
  evaluated epochs at the full S, SI 4.7), their mean and sample std, the final and best
  epochs' means, the paper's number (:data:`PAPER_ERRORS`) and the wall time;
- :func:`compare_to_reference`: each row against the reference model of its dataset (the
  dCNN): the difference of the means with its 95% Welch interval over seeds and what it says
  (:mod:`nsm.studies.compare`): the rule that reads the paper's claim; and the same comparison
  under the two other ways of reporting a run (:data:`RULES`: its final epoch, its best), so a
  table shows whether the reading hangs on the reporting rule;
- :func:`compare_pairs`: chosen pairs of models by the same rule (a variant against the model
  it changes), for a table of ``table.md``;
- :func:`format_markdown`, :func:`format_csv`, :func:`write_table`: the files.
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..models import MODELS
from ..utils.checks import is_number
from ..utils.io import atomic_write, read_json_object
from .compare import verdict, welch_interval

__all__ = [
    "PAPER_ERRORS",
    "REFERENCE_MODEL",
    "COMPARISON_LEVEL",
    "RULES",
    "aggregate",
    "compare_to_reference",
    "compare_pairs",
    "format_comparisons",
    "format_markdown",
    "format_csv",
    "write_table",
]

# Test error (%) the paper reports (docs/design.md §7), by dataset then model.
PAPER_ERRORS: dict[str, dict[str, float]] = {
    "mnist": {
        "dcnn": 0.880,
        "bnsm": 0.775,
        "gnsm": 0.805,
        "ste": 2.13,
        "bd": 3.11,
        "wbd": 2.72,
        "sn": 2.05,
        "bn": 1.10,
    },
    "emnist": {"dcnn": 6.938, "bnsm": 6.185, "gnsm": 6.256},
    "nmnist": {"dcnn": 0.927, "bnsm": 0.689, "gnsm": 0.701},
    "dvs-gesture": {"dcnn": 9.16, "bnsm": 8.56, "gnsm": 8.83},
    "cifar10": {"dcnn": 10.47, "bnsm": 9.98, "gnsm": 10.35},
    "cifar100": {"dcnn": 34.37, "bnsm": 34.85, "gnsm": 34.84},
}

# Every model of a dataset is compared with this one (when the table has it), at this level.
REFERENCE_MODEL = "dcnn"
COMPARISON_LEVEL = 0.95
# What a comparison's reading means, as table.md says it (the CSV keeps the first words).
_READINGS = {
    "lower": "beats {ref}",
    "higher": "trails {ref}",
    "no difference": "no difference",
    "too few seeds": "too few seeds",
    "no spread": "no spread: cannot tell",
}


# The other ways of reporting a run, compared as the main one is: rule -> (its per-seed errors in
# a row, what table.md calls it). The main rule (the mean over the last evaluated epochs at the
# full S, SI 4.7) is the row's ``error_pct``; ``best`` is chosen on the test set, so it flatters.
RULES: dict[str, tuple[str, str]] = {
    "final": ("final_error_pct", "the final epoch"),
    "best": ("best_error_pct", "the best evaluation at the full S"),
}


_SUMMARY_NUMBERS = ("last5_test_error", "final_test_error", "wall_seconds", "n_last", "epochs", "samples")


def _read_summary(path: Path) -> dict:
    """A finished run's summary.json, with the numbers a table is made of."""
    summary = read_json_object(path, "a finished run's summary", _SUMMARY_NUMBERS)
    wrong = [k for k in (*_SUMMARY_NUMBERS, "best_test_error") if k in summary and not is_number(summary[k])]
    if wrong:
        raise ValueError(f"{path}: {', '.join(wrong)} should be finite numbers; expected a finished run's summary")
    return summary


def aggregate(
    runs: Path, cells: Sequence[tuple[str, str]], seeds: Sequence[int], *, partial: bool = False
) -> list[dict]:
    """One row per (dataset, model) from the finished runs' summaries (errors in %).

    A seed without a finished run raises ``FileNotFoundError``; with ``partial=True`` the row
    is made from the seeds that finished (``seeds``) and names the others (``pending_seeds``),
    its numbers (wall time included) NaN and its epochs/samples/n_last None when none has finished."""
    rows = []
    for dataset, model in cells:
        summaries, done, pending = [], [], []
        for seed in seeds:
            path = Path(runs) / f"{model}-{dataset}-seed{seed}" / "summary.json"
            if not path.exists():
                if not partial:
                    raise FileNotFoundError(f"missing finished run {path.parent}")
                pending.append(seed)
                continue
            summaries.append(_read_summary(path))
            done.append(seed)
        errs = [100 * s["last5_test_error"] for s in summaries]
        finals = [100 * s["final_test_error"] for s in summaries]
        # older summaries lack the best evaluation: then no seed's is used
        bests = (
            [100 * s["best_test_error"] for s in summaries] if all("best_test_error" in s for s in summaries) else []
        )
        first = summaries[0] if summaries else {}
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "description": MODELS.get(model).description if model in MODELS else "",
                "seeds": done,
                "pending_seeds": pending,
                "epochs": first.get("epochs"),
                "samples": first.get("samples"),
                "n_last": min(s["n_last"] for s in summaries) if summaries else None,
                "error_pct": errs,
                "error_mean_pct": statistics.fmean(errs) if errs else math.nan,
                "error_std_pct": statistics.stdev(errs) if len(errs) > 1 else math.nan,
                "final_error_pct": finals,
                "best_error_pct": bests,
                "final_error_mean_pct": statistics.fmean(finals) if finals else math.nan,
                "best_error_mean_pct": statistics.fmean(bests) if bests else math.nan,
                "paper_error_pct": PAPER_ERRORS.get(dataset, {}).get(model, math.nan),
                "wall_seconds": sum(s["wall_seconds"] for s in summaries) if summaries else math.nan,
            }
        )
    return compare_to_reference(rows)


def _compare(errs: Sequence[float], ref: Sequence[float], level: float) -> dict:
    """``errs`` against ``ref`` (per-seed errors in %): diff, low, high, df (NaN where they
    cannot be had) and the reading."""
    out = dict(diff=math.nan, low=math.nan, high=math.nan, df=math.nan)
    if len(errs) < 2 or len(ref) < 2:
        if errs and ref:
            out["diff"] = statistics.fmean(errs) - statistics.fmean(ref)
        return out | {"reading": "too few seeds"}
    interval = welch_interval(errs, ref, level)
    if interval["se"] == 0:  # no seed-to-seed spread in either: no interval to give
        return out | {"diff": interval["diff"], "reading": verdict(interval)}
    return out | {k: interval[k] for k in ("diff", "low", "high", "df")} | {"reading": verdict(interval)}


def compare_to_reference(
    rows: list[dict], reference: str = REFERENCE_MODEL, level: float = COMPARISON_LEVEL
) -> list[dict]:
    """Add to each row (in place; returns ``rows``) its comparison with the ``reference`` model's
    row of the same dataset, over the seeds each has finished:

    - ``reference``: that model's name, or ``""`` where the row is the reference itself or its
      dataset has no reference row (then the other fields are NaN and ``reading`` is ``""``);
    - ``diff_pct``: the row's mean error minus the reference's, in points;
    - ``diff_low_pct``, ``diff_high_pct``, ``diff_df``: the two-sided Welch interval at
      ``level`` (each model's sample std, Welch-Satterthwaite degrees of freedom;
      :func:`nsm.studies.compare.welch_interval`);
    - ``reading``: ``"lower"`` if the whole interval is below 0 (the model beats the reference),
      ``"higher"`` if above 0 (it trails), ``"no difference"`` if it contains 0, and
      ``"too few seeds"`` (interval NaN) while either has fewer than two finished seeds, or
      ``"no spread"`` (interval NaN) where neither's error varies over its seeds;
    - the same five, prefixed ``final_`` and ``best_`` (``final_diff_pct``, ...,
      ``best_reading``), for the per-seed errors of the other reporting rules (:data:`RULES`)
      where both rows have them (``final_error_pct``, ``best_error_pct``; else ``""`` and NaN).
    """
    refs = {r["dataset"]: r for r in rows if r["model"] == reference}
    for r in rows:
        ref = refs.get(r["dataset"])
        r["reference"] = "" if ref is None or ref is r else reference
        for prefix, key in (("", "error_pct"), *((f"{rule}_", k) for rule, (k, _) in RULES.items())):
            r.update({f"{prefix}diff{k}": math.nan for k in ("_pct", "_low_pct", "_high_pct", "_df")})
            r[f"{prefix}reading"] = ""
            if not r["reference"] or (prefix and not (r.get(key) and ref.get(key))):
                continue
            c = _compare(r[key], ref[key], level)
            r.update(
                {
                    f"{prefix}diff_pct": c["diff"],
                    f"{prefix}diff_low_pct": c["low"],
                    f"{prefix}diff_high_pct": c["high"],
                    f"{prefix}diff_df": c["df"],
                    f"{prefix}reading": c["reading"],
                }
            )
    return rows


def compare_pairs(rows: list[dict], pairs: Sequence[tuple[str, str]], level: float = COMPARISON_LEVEL) -> list[dict]:
    """Each ``(model, minus)`` pair of ``pairs`` compared within each dataset that has rows of
    both, as :func:`compare_to_reference` compares a model with the reference (by each seed's
    main-rule error): a list of dicts with ``dataset``, ``model``, ``reference`` (the model
    subtracted), ``diff_pct``, ``diff_low_pct``, ``diff_high_pct``, ``diff_df`` and
    ``reading``, in the order of ``pairs`` then of the datasets."""
    by_cell = {(r["dataset"], r["model"]): r for r in rows}
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    out = []
    for model, minus in pairs:
        if model == minus:
            raise ValueError(f"a pair compares two models; got {model!r} twice")
        for d in datasets:
            a, b = by_cell.get((d, model)), by_cell.get((d, minus))
            if a is None or b is None:
                continue
            c = _compare(a["error_pct"], b["error_pct"], level)
            out.append(
                {
                    "dataset": d,
                    "model": model,
                    "reference": minus,
                    "diff_pct": c["diff"],
                    "diff_low_pct": c["low"],
                    "diff_high_pct": c["high"],
                    "diff_df": c["df"],
                    "reading": c["reading"],
                }
            )
    return out


def _signed(x: float) -> str:
    """A difference in points with its sign, 0.00 without one (not -0.00 for -0.003)."""
    if math.isnan(x):
        return "–"
    text = f"{x:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text


def format_comparisons(rows: list[dict], level: float = COMPARISON_LEVEL) -> list[str]:
    """The lines of table.md's comparison with the reference model (none if no row has one)."""
    compared = [r for r in rows if r.get("reference")]
    if not compared:
        return []
    refs = sorted({r["reference"] for r in compared})
    pct = f"{100 * level:g}%"
    lines = [
        "",
        f"Against the {', '.join(refs)}: each model's mean error minus the {', '.join(refs)}'s, in points, "
        f"with its {pct} Welch interval over seeds (each model's sample std over its seeds, "
        "Welch–Satterthwaite degrees of freedom). The reading: `beats` if the "
        "whole interval is below 0, `trails` if it is above 0, `no difference` if it contains 0 "
        "(neither is better at this precision); it needs two finished seeds of each.",
        "",
        f"| dataset | model | minus | difference | {pct} interval | df | reading |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_comparison_cells(r, r["dataset"], r["model"], r["reference"]) for r in compared]
    by_rule = [(r, rule) for r in compared for rule in RULES if r.get(f"{rule}_reading")]
    if by_rule:
        lines += [
            "",
            "The same comparison by the other ways of reporting a run: "
            + "; ".join(f"`{rule}`, {what}" for rule, (_, what) in RULES.items())
            + " (chosen on the test set, so it flatters). A reading that changes with the rule "
            "hangs on how a run is reported.",
            "",
            f"| dataset | model | minus | rule | difference | {pct} interval | df | reading |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            _comparison_cells(r, r["dataset"], r["model"], r["reference"], rule, rule=rule) for r, rule in by_rule
        ]
    return lines


def _comparison_cells(r: dict, *first: str, rule: str = "") -> str:
    """A row of a comparison table: the ``first`` cells, then the rule's difference, interval,
    df and reading (the main rule's where ``rule`` is empty)."""
    p = f"{rule}_" if rule else ""
    low, high, df = r[f"{p}diff_low_pct"], r[f"{p}diff_high_pct"], r[f"{p}diff_df"]
    interval = "–" if math.isnan(low) else f"[{_signed(low)}, {_signed(high)}]"
    df = "–" if math.isnan(df) else ("∞" if math.isinf(df) else f"{df:.1f}")
    reading = _READINGS[r[f"{p}reading"]].format(ref=r["reference"])
    return "| " + " | ".join((*first, _signed(r[f"{p}diff_pct"]), interval, df, reading)) + " |"


def _pct(x: float, digits: int = 2) -> str:
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def format_markdown(rows: list[dict], title: str, command: str, pairs: Sequence[tuple[str, str]] = ()) -> str:
    """``table.md``: the errors, each model against the dCNN (by each reporting rule), and each
    ``(model, minus)`` pair of ``pairs`` (:func:`compare_pairs`)."""
    lines = [f"# {title}", "", f"Made by: `{command}`", ""]
    n_pending = sum(len(r.get("pending_seeds", ())) for r in rows)
    if n_pending:
        n_all = n_pending + sum(len(r["seeds"]) for r in rows)
        lines += [
            f"**Incomplete**: {n_all - n_pending} of {n_all} runs finished; `seeds` reads "
            f"finished/asked where a cell lacks some. Run the same command again (or let the "
            f"other workers end) to complete the table.",
            "",
        ]
    lines += [
        "Test error (%): mean ± std over seeds of each seed's mean over its last "
        "evaluated epochs at the full S (SI 4.7); `final` is the last epoch's error and `best` the lowest among "
        "the evaluations at the full S (means over seeds; `best` is chosen on the test set, so it "
        "flatters); "
        "`paper` is the paper's number (docs/design.md §7), – where it gives none. "
        "Wall time: training + testing, summed over seeds.",
        "",
        "| dataset | model | ours | final | best | paper | seeds | epochs | last-n | S | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours = _pct(r["error_mean_pct"]) + ("" if math.isnan(r["error_std_pct"]) else f" ± {_pct(r['error_std_pct'])}")
        pending = len(r.get("pending_seeds", ()))
        seeds = f"{len(r['seeds'])}/{len(r['seeds']) + pending}" if pending else f"{len(r['seeds'])}"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {ours} | {_pct(r['final_error_mean_pct'])} | "
            f"{_pct(r.get('best_error_mean_pct', math.nan))} | "
            f"{_pct(r['paper_error_pct'], 3)} | {seeds} | {_or_dash(r['epochs'])} | "
            f"{_or_dash(r['n_last'])} | {_or_dash(r['samples'])} | {_pct(r['wall_seconds'], 0)} |"
        )
    lines += format_comparisons(rows)
    compared = compare_pairs(rows, pairs)
    if compared:
        lines += [
            "",
            "Chosen pairs of models, by the same rule (the first model's mean error minus the second's, in points).",
            "",
            f"| dataset | model | minus | difference | {100 * COMPARISON_LEVEL:g}% interval | df | reading |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [_comparison_cells(r, r["dataset"], r["model"], r["reference"]) for r in compared]
    return "\n".join(lines) + "\n"


def _or_dash(x) -> str:
    return "–" if x is None else str(x)


CSV_COLUMNS = (
    "dataset",
    "model",
    "error_mean_pct",
    "error_std_pct",
    "error_pct",
    "final_error_mean_pct",
    "best_error_mean_pct",
    "paper_error_pct",
    "seeds",
    "epochs",
    "n_last",
    "samples",
    "wall_seconds",
    "description",
    "pending_seeds",
    "reference",
    "diff_pct",
    "diff_low_pct",
    "diff_high_pct",
    "diff_df",
    "reading",
    # the other reporting rules (RULES): each seed's error, then the comparison
    "final_error_pct",
    "best_error_pct",
    *(f"{rule}_{k}" for rule in RULES for k in ("diff_pct", "diff_low_pct", "diff_high_pct", "diff_df", "reading")),
)


_LIST_COLUMNS = ("error_pct", "final_error_pct", "best_error_pct")


def _csv_cell(r: dict, column: str):
    if column in _LIST_COLUMNS:
        return ";".join(f"{v:.4f}" for v in r.get(column, ()))
    if column in ("seeds", "pending_seeds"):
        return ";".join(map(str, r.get(column, ())))
    value = r.get(column, math.nan if column.endswith(("_pct", "_df")) else "")
    return f"{value:.4f}" if isinstance(value, float) else value


def format_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        if "reading" not in r:  # rows made without their comparison
            r = compare_to_reference([dict(r)])[0]
        writer.writerow([_csv_cell(r, c) for c in CSV_COLUMNS])
    return buf.getvalue()


def write_table(
    rows: list[dict],
    out: str | os.PathLike,
    title: str,
    command: Optional[str] = None,
    pairs: Sequence[tuple[str, str]] = (),
) -> tuple[Path, Path]:
    """Write ``out/table.md`` (with the ``pairs`` compared) and ``out/table.csv`` atomically;
    returns their paths."""
    out = Path(out)
    command = command or "nsm " + " ".join(sys.argv[1:])

    def text(s: str):
        return lambda tmp: Path(tmp).write_text(s, encoding="utf-8")

    md = atomic_write(out / "table.md", text(format_markdown(rows, title, command, pairs)))
    cs = atomic_write(out / "table.csv", text(format_csv(rows)))
    return md, cs
