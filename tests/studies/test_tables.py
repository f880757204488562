"""A sweep's table against the dCNN (nsm.studies.tables.compare_to_reference): each model's mean
minus the reference's with its 95% Welch interval, the reading, and how table.md and table.csv
show them. Intervals are checked against the formula worked by hand with t from published tables."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from nsm.studies.tables import aggregate, compare_pairs, compare_to_reference, format_csv, format_markdown

T_975_DF4 = 2.776445105  # Student's t, 97.5% quantile, 4 degrees of freedom (standard tables)


def _row(model: str, errs: list[float], dataset: str = "mnist") -> dict:
    return {
        "dataset": dataset,
        "model": model,
        "description": "",
        "seeds": list(range(len(errs))),
        "pending_seeds": [],
        "epochs": 3,
        "samples": 20,
        "n_last": 1,
        "error_pct": errs,
        "error_mean_pct": sum(errs) / len(errs) if errs else math.nan,
        "error_std_pct": math.nan,
        "final_error_mean_pct": math.nan,
        "best_error_mean_pct": math.nan,
        "paper_error_pct": math.nan,
        "wall_seconds": 1.0,
    }


def test_each_model_against_the_dcnn_by_hand():
    rows = compare_to_reference(
        [
            _row("dcnn", [4.0, 5.0, 6.0]),
            _row("bnsm", [3.0, 4.0, 5.0]),  # equal spreads and sizes: df = 4
            _row("gnsm", [0.50, 0.52, 0.51]),  # -4.49 +- 2.49
            _row("ste", [9.0, 9.2, 9.1]),
        ]
    )
    dcnn, bnsm, gnsm, ste = rows
    assert dcnn["reference"] == "" and dcnn["reading"] == "" and math.isnan(dcnn["diff_pct"])
    half = T_975_DF4 * math.sqrt(1 / 3 + 1 / 3)  # each sample variance is 1
    assert bnsm["reference"] == "dcnn"
    assert bnsm["diff_pct"] == pytest.approx(-1.0, abs=1e-12)
    assert bnsm["diff_df"] == pytest.approx(4.0, rel=1e-12)
    assert (bnsm["diff_low_pct"], bnsm["diff_high_pct"]) == pytest.approx((-1 - half, -1 + half), rel=1e-8)
    assert bnsm["reading"] == "no difference"  # -1 +- 2.27 contains 0
    assert gnsm["reading"] == "lower" and gnsm["diff_high_pct"] < 0
    assert ste["reading"] == "higher" and ste["diff_low_pct"] > 0


def test_too_few_seeds_and_no_reference():
    rows = compare_to_reference(
        [
            _row("dcnn", [0.7, 0.8]),
            _row("bnsm", [0.6]),  # one seed: a difference but no interval
            _row("gnsm", []),  # none finished
            _row("bnsm", [1.0, 2.0], dataset="emnist"),  # its dataset has no dCNN row
        ]
    )
    _, one, none, alone = rows
    assert one["reading"] == "too few seeds" and one["diff_pct"] == pytest.approx(0.6 - 0.75, abs=1e-12)
    assert math.isnan(one["diff_low_pct"]) and math.isnan(one["diff_df"])
    assert none["reading"] == "too few seeds" and math.isnan(none["diff_pct"])
    assert alone["reference"] == "" and alone["reading"] == "" and math.isnan(alone["diff_pct"])


def test_another_reference_and_level():
    rows = compare_to_reference(
        [_row("dcnn-150", [1.0, 2.0, 3.0]), _row("dcnn", [2.0, 3.0, 4.0])], reference="dcnn-150", level=0.9
    )
    t_95_df4 = 2.131846786  # the 95% quantile: a two-sided 90% interval
    assert rows[1]["reference"] == "dcnn-150" and rows[1]["diff_pct"] == pytest.approx(1.0, abs=1e-12)
    assert rows[1]["diff_high_pct"] == pytest.approx(1 + t_95_df4 * math.sqrt(2 / 3), rel=1e-8)


def test_table_md_and_csv_show_the_comparison():
    rows = compare_to_reference(
        [_row("dcnn", [4.0, 5.0, 6.0]), _row("bnsm", [3.0, 4.0, 5.0]), _row("gnsm", [0.50, 0.52, 0.51])]
    )
    md = format_markdown(rows, "nsm reproduce test: a table", "nsm reproduce test")
    half = T_975_DF4 * math.sqrt(2 / 3)
    assert "| dataset | model | minus | difference | 95% interval | df | reading |" in md
    assert f"| mnist | bnsm | dcnn | -1.00 | [{-1 - half:+.2f}, {-1 + half:+.2f}] | 4.0 | no difference |" in md
    assert "| mnist | gnsm | dcnn | -4.49 | [" in md and md.rstrip().endswith("beats dcnn |")
    table = list(csv.DictReader(io.StringIO(format_csv(rows))))
    assert [r["reading"] for r in table] == ["", "no difference", "lower"]
    assert float(table[1]["diff_low_pct"]) == pytest.approx(-1 - half, abs=1e-4)
    assert table[1]["reference"] == "dcnn" and table[0]["diff_pct"] == "nan"


def test_no_comparison_section_without_a_reference():
    rows = compare_to_reference([_row("bnsm", [1.0, 2.0]), _row("gnsm", [1.0, 1.5])])
    md = format_markdown(rows, "nsm reproduce test: a table", "nsm reproduce test")
    assert "Welch" not in md and md.count("| dataset |") == 1


def test_rows_without_their_comparison_get_one_in_the_csv():
    """format_csv takes rows made by hand (older callers) and compares each within itself only."""
    table = list(csv.DictReader(io.StringIO(format_csv([_row("bnsm", [1.0, 2.0])]))))
    assert table[0]["reading"] == "" and table[0]["reference"] == ""


def test_aggregate_compares_the_finished_runs(tmp_path):
    """From run folders: the seeds' errors (mean of the last evaluations, in %) go into the
    interval, and an unfinished seed is left out of it."""
    errs = {"dcnn": [0.020, 0.030, 0.040], "bnsm": [0.010, 0.020, None]}
    for model, values in errs.items():
        for seed, err in enumerate(values):
            if err is None:
                continue
            run = tmp_path / f"{model}-mnist-seed{seed}"
            run.mkdir()
            summary = dict(last5_test_error=err, final_test_error=err, wall_seconds=1.0, n_last=1, epochs=3, samples=20)
            (run / "summary.json").write_text(json.dumps(summary))
    rows = aggregate(tmp_path, [("mnist", "dcnn"), ("mnist", "bnsm")], [0, 1, 2], partial=True)
    bnsm = rows[1]
    assert bnsm["pending_seeds"] == [2] and bnsm["reading"] == "no difference"
    assert bnsm["diff_pct"] == pytest.approx(1.5 - 3.0, abs=1e-12)
    # Welch: variances 0.5 (n=2) and 1 (n=3): se^2 = 0.25 + 1/3
    q = 0.25 + 1 / 3
    df = q * q / (0.25**2 / 1 + (1 / 3) ** 2 / 2)
    assert bnsm["diff_df"] == pytest.approx(df, rel=1e-12)
    assert bnsm["diff_high_pct"] - bnsm["diff_pct"] == pytest.approx(bnsm["diff_pct"] - bnsm["diff_low_pct"], rel=1e-12)


def test_a_summary_with_a_non_finite_error_is_named(tmp_path):
    """A hand-edited summary.json whose error is NaN (JSON's NaN) passed as a number, and the
    comparison then failed with "a needs at least 2 finite values", naming no file."""
    for seed, err in ((0, 0.02), (1, float("nan"))):
        run = tmp_path / f"dcnn-mnist-seed{seed}"
        run.mkdir()
        summary = dict(last5_test_error=err, final_test_error=0.02, wall_seconds=1.0, n_last=1, epochs=3, samples=1)
        (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=r"dcnn-mnist-seed1/summary.json: last5_test_error should be finite numbers"):
        aggregate(tmp_path, [("mnist", "dcnn"), ("mnist", "bnsm")], [0, 1], partial=True)


def test_the_other_reporting_rules_are_compared_as_the_main_one():
    """`final` and `best` (each seed's final epoch, its best evaluation) against the dCNN's, by
    the same Welch rule: a reading that hangs on how a run is reported shows in the table."""
    dcnn = _row("dcnn", [4.0, 5.0, 6.0]) | {"final_error_pct": [4.0, 5.0, 6.0], "best_error_pct": [3.0, 3.1, 3.2]}
    bnsm = _row("bnsm", [3.0, 4.0, 5.0]) | {"final_error_pct": [1.0, 2.0, 3.0], "best_error_pct": [3.0, 4.0, 5.0]}
    gnsm = _row("gnsm", [3.0, 4.0, 5.0]) | {"final_error_pct": [5.0], "best_error_pct": []}  # one final, no best
    rows = compare_to_reference([dcnn, bnsm, gnsm])
    half = T_975_DF4 * math.sqrt(1 / 3 + 1 / 3)
    assert bnsm["reading"] == "no difference"  # the main rule: -1 +- 2.27
    assert bnsm["final_reading"] == "lower" and bnsm["final_diff_pct"] == pytest.approx(-3.0, abs=1e-12)
    assert (bnsm["final_diff_low_pct"], bnsm["final_diff_high_pct"]) == pytest.approx((-3 - half, -3 + half))
    # best: variances 1 and 0.01, so df = (1/3 + 0.01/3)^2 / ((1/3)^2/2 + (0.01/3)^2/2)
    df = (1.01 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (0.01 / 3) ** 2 / 2)
    assert bnsm["best_diff_pct"] == pytest.approx(0.9, abs=1e-12) and bnsm["best_diff_df"] == pytest.approx(df)
    assert bnsm["best_reading"] == "no difference"
    assert gnsm["final_reading"] == "too few seeds" and gnsm["final_diff_pct"] == pytest.approx(0.0, abs=1e-12)
    assert gnsm["best_reading"] == "" and math.isnan(gnsm["best_diff_pct"])  # no best to compare
    assert dcnn["final_reading"] == "" and math.isnan(dcnn["final_diff_pct"])
    md = format_markdown(rows, "nsm reproduce test: a table", "nsm reproduce test")
    assert "| dataset | model | minus | rule | difference | 95% interval | df | reading |" in md
    assert f"| mnist | bnsm | dcnn | final | -3.00 | [{-3 - half:+.2f}, {-3 + half:+.2f}] | 4.0 | beats dcnn |" in md
    assert "| mnist | bnsm | dcnn | best | +0.90 | [" in md and "| mnist | gnsm | dcnn | final | 0.00 | – | – |" in md
    assert "| gnsm | dcnn | best |" not in md
    table = {r["model"]: r for r in csv.DictReader(io.StringIO(format_csv(rows)))}
    assert table["bnsm"]["final_reading"] == "lower" and table["bnsm"]["best_reading"] == "no difference"
    assert table["bnsm"]["final_error_pct"] == "1.0000;2.0000;3.0000" and table["gnsm"]["best_error_pct"] == ""
    assert float(table["bnsm"]["final_diff_high_pct"]) == pytest.approx(-3 + half, abs=1e-4)


def test_without_other_rules_there_is_no_rules_table():
    rows = compare_to_reference([_row("dcnn", [4.0, 5.0]), _row("bnsm", [3.0, 4.0])])
    md = format_markdown(rows, "nsm reproduce test: a table", "nsm reproduce test")
    assert "| rule |" not in md and md.count("| dataset |") == 2


def test_aggregate_keeps_each_seeds_final_and_best(tmp_path):
    for seed, (last, final, best) in enumerate([(0.02, 0.021, 0.019), (0.03, 0.032, 0.028)]):
        run = tmp_path / f"bnsm-mnist-seed{seed}"
        run.mkdir()
        summary = dict(last5_test_error=last, final_test_error=final, best_test_error=best, wall_seconds=1.0)
        (run / "summary.json").write_text(json.dumps(summary | dict(n_last=1, epochs=3, samples=20)))
    (row,) = aggregate(tmp_path, [("mnist", "bnsm")], [0, 1])
    assert row["final_error_pct"] == pytest.approx([2.1, 3.2]) and row["best_error_pct"] == pytest.approx([1.9, 2.8])
    assert row["final_error_mean_pct"] == pytest.approx(2.65) and row["best_error_mean_pct"] == pytest.approx(2.35)
    del summary["best_test_error"]  # a run from before summaries kept the best: no seed's best is used
    (tmp_path / "bnsm-mnist-seed1" / "summary.json").write_text(
        json.dumps(summary | dict(n_last=1, epochs=3, samples=20))
    )
    (row,) = aggregate(tmp_path, [("mnist", "bnsm")], [0, 1])
    assert row["best_error_pct"] == [] and math.isnan(row["best_error_mean_pct"])


def test_chosen_pairs_are_compared_by_the_same_rule():
    """A variant against the model it changes (compare_pairs), within each dataset that has
    both, and table.md's table of them."""
    rows = compare_to_reference(
        [
            _row("dcnn", [4.0, 5.0, 6.0]),
            _row("bnsm", [3.0, 4.0, 5.0]),
            _row("bnsm-wide", [0.50, 0.52, 0.51]),
            _row("bnsm", [1.0, 2.0], dataset="emnist"),  # no bnsm-wide here: no pair
        ]
    )
    pairs = compare_pairs(rows, [("bnsm-wide", "bnsm"), ("bnsm", "dcnn")])
    assert [(p["dataset"], p["model"], p["reference"]) for p in pairs] == [
        ("mnist", "bnsm-wide", "bnsm"),
        ("mnist", "bnsm", "dcnn"),
    ]
    wide, bnsm = pairs
    # variances 1e-4 (n=3) and 1 (n=3): df = (1/3 + 1e-4/3)^2 / ((1/3)^2/2 + (1e-4/3)^2/2)
    df = (1.0001 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (1e-4 / 3) ** 2 / 2)
    assert wide["diff_pct"] == pytest.approx(0.51 - 4.0, abs=1e-12) and wide["diff_df"] == pytest.approx(df)
    assert wide["reading"] == "lower" and wide["diff_high_pct"] < 0
    assert {k: bnsm[k] for k in ("diff_pct", "diff_low_pct", "reading")} == {
        k: rows[1][k] for k in ("diff_pct", "diff_low_pct", "reading")
    }  # the same numbers as the comparison with the reference
    md = format_markdown(rows, "nsm reproduce test: a table", "nsm reproduce test", [("bnsm-wide", "bnsm")])
    assert md.count("| dataset | model | minus | difference |") == 2 and "Chosen pairs of models" in md
    assert md.rstrip().splitlines()[-1].startswith("| mnist | bnsm-wide | bnsm | -3.49 | [")
    assert md.rstrip().endswith("| beats bnsm |")
    assert "Chosen pairs" not in format_markdown(rows, "nsm reproduce test: a table", "nsm reproduce test")
    with pytest.raises(ValueError, match="two models"):
        compare_pairs(rows, [("bnsm", "bnsm")])


def test_the_candidates_table_compares_each_change_with_the_model_it_changes():
    """The pairs the plan of results/mnist-candidates fixed before its runs."""
    from nsm.studies.catalog import TABLES, PaperTable

    assert TABLES.get("mnist-candidates").pairs == (
        ("bnsm-unitbias", "bnsm"),
        ("bnsm-wide", "bnsm"),
        ("bnsm-binconcrete", "bnsm"),
        ("dcnn-wide", "dcnn"),
        ("bnsm-wide", "dcnn-wide"),
    )
    with pytest.raises(ValueError, match="'gnsm' not in it"):
        PaperTable("t", "a table", ("bnsm", "dcnn"), ("mnist",), pairs=(("gnsm", "bnsm"),))
    with pytest.raises(ValueError, match="two different models"):
        PaperTable("t", "a table", ("bnsm", "dcnn"), ("mnist",), pairs=(("bnsm", "bnsm"),))


def test_seeds_without_spread_are_not_read_as_a_difference():
    """Final and best errors are whole test images (0.01 points on MNIST): two seeds of each
    may tie exactly, and a zero-width interval read "beats dcnn" from one image's gap."""
    dcnn = _row("dcnn", [4.0, 5.0]) | {"final_error_pct": [0.72, 0.72]}
    bnsm = _row("bnsm", [3.0, 4.0]) | {"final_error_pct": [0.71, 0.71]}
    rows = compare_to_reference([dcnn, bnsm])
    assert bnsm["final_reading"] == "no spread" and bnsm["final_diff_pct"] == pytest.approx(-0.01, abs=1e-12)
    assert math.isnan(bnsm["final_diff_low_pct"]) and math.isnan(bnsm["final_diff_df"])
    md = format_markdown(rows, "nsm reproduce test: a table", "nsm reproduce test")
    assert "| mnist | bnsm | dcnn | final | -0.01 | – | – | no spread: cannot tell |" in md
