"""`nsm reproduce`'s table, status and curves say what the runs hold: each cell once, an
interrupted run that will start again said to, no wall time for a cell that has none, and the
full S of each run drawn as such (toy data or written run files only)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from matplotlib.colors import to_rgba

from nsm.studies.reproduce import format_status, rebuild_table, run_table, table_status
from nsm.studies.tables import aggregate, format_csv, format_markdown
from toys import toy_dataset

OPTS = {"epochs": 2, "batch_size": 30, "samples": 2, "threads": 1, "progress": False, "compile": "off"}


def _run(runs, model, seed, metrics, samples, dataset="mnist"):
    """A finished run's files: config.json, metrics.jsonl and a summary whose full S is ``samples``."""
    d = runs / f"{model}-{dataset}-seed{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model": model, "dataset": dataset, "seed": seed}))
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    full = [m for m in metrics if m.get("samples", samples) == samples][-5:]
    summary = {
        "last5_test_error": sum(m["test_error"] for m in full) / len(full),
        "final_test_error": metrics[-1]["test_error"],
        "wall_seconds": 10.0,
        "epochs": metrics[-1]["epoch"],
        "samples": samples,
        "n_last": len(full),
    }
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def test_a_cell_is_asked_for_once_and_an_empty_list_is_not_the_whole_table(tmp_path):
    # models=["bnsm", "bnsm"] planned the runs twice and wrote the row twice, "1 of 2 runs finished"
    _run(tmp_path / "runs", "bnsm", 0, [{"epoch": 1, "test_error": 0.02, "samples": 4}], samples=4)
    for kwargs, said in (
        ({"models": ["bnsm", "bnsm"]}, r"models names \['bnsm'\] more than once"),
        ({"datasets": ["mnist", "mnist"]}, r"datasets names \['mnist'\] more than once"),
        ({"models": []}, "models is empty"),
        ({"models": ["bnsm"], "datasets": []}, "datasets is empty"),
    ):
        for call in (rebuild_table, table_status, run_table):
            with pytest.raises(ValueError, match=said):
                call("mnist", out=tmp_path, seeds=[0], **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no table written
    rows = rebuild_table("mnist", out=tmp_path, seeds=[0], models=["bnsm"], command="test")
    assert [(r["model"], r["seeds"]) for r in rows] == [("bnsm", [0])]
    assert "Incomplete" not in (tmp_path / "table.md").read_text()


def test_a_cell_without_a_finished_seed_shows_no_wall_time(tmp_path):
    _run(tmp_path, "bnsm", 0, [{"epoch": 1, "test_error": 0.02, "samples": 4}], samples=4)
    rows = aggregate(tmp_path, [("mnist", "bnsm"), ("mnist", "dcnn")], [0], partial=True)
    assert rows[0]["wall_seconds"] == 10.0 and math.isnan(rows[1]["wall_seconds"])
    md = format_markdown(rows, "t", "c")
    assert "| mnist | bnsm | 2.00 | 2.00 | – | 0.775 | 1 | 1 | 1 | 4 | 10 |" in md
    assert "| mnist | dcnn | – | – | – | 0.880 | 0/1 | – | – | – | – |" in md  # was a wall time of 0
    dcnn = format_csv(rows).splitlines()[2].split(",")
    assert dcnn[:4] == ["mnist", "dcnn", "nan", "nan"] and dcnn[12] == "nan"  # missing, as the error is


def test_the_table_says_its_last_5_are_at_the_full_s(tmp_path):
    _run(tmp_path, "bnsm", 0, [{"epoch": 1, "test_error": 0.02, "samples": 4}], samples=4)
    md = format_markdown(aggregate(tmp_path, [("mnist", "bnsm")], [0]), "t", "c")
    assert "each seed's mean over its last evaluated epochs at the full S (SI 4.7)" in md


def _train(out, logs=None, **overrides):
    """run_table on the toy data; torch's thread count (fit sets it) is put back after."""
    threads = torch.get_num_threads()
    try:
        return run_table(
            "mnist",
            out=out,
            seeds=[0],
            models=["dcnn"],
            overrides={**OPTS, **overrides},
            load=lambda name, config: toy_dataset(),
            log=(logs.append if logs is not None else lambda s: None),
            command="test",
        )
    finally:
        torch.set_num_threads(threads)


def test_status_says_which_interrupted_run_will_start_again_and_why(tmp_path):
    _train(tmp_path)
    run = tmp_path / "runs" / "dcnn-mnist-seed0"
    (run / "summary.json").unlink()  # interrupted after its last epoch: resumable as it is
    ask = {"seeds": [0], "models": ["dcnn"]}
    (same,) = table_status("mnist", out=tmp_path, overrides=OPTS, **ask)
    assert (same["state"], same["restart"], same["epochs_done"], same["seconds_left"]) == ("interrupted", "", 2, 0.0)
    # another thread count: run_table would move it aside and start again, so nothing is done
    (other,) = table_status("mnist", out=tmp_path, overrides={**OPTS, "threads": 2}, **ask)
    assert other["state"] == "interrupted" and other["restart"] == "threads: 1 there, 2 here"
    assert other["seconds_left"] > 0  # all of it, at the run's own pace
    line = format_status([other]).splitlines()[2]
    assert line.startswith(
        "| dcnn-mnist-seed0 | interrupted; will restart: threads: 1 there, 2 here | 2 of 2 epochs done (moved aside"
    )
    assert format_status([same]).splitlines()[2].startswith("| dcnn-mnist-seed0 | interrupted | 2 of 2 epochs done |")
    # and run_table does what the status said, for the reason it gave
    logs = []
    _train(tmp_path, logs, threads=2)
    assert f"moved the incomplete run {run} to {run}.incomplete-1 (threads: 1 there, 2 here)" in logs
    assert (run / "summary.json").is_file()


def test_status_refuses_a_steal_after_that_run_table_would(tmp_path):
    for value in (-1.0, math.nan, 59.0):
        with pytest.raises(ValueError, match="steal_after must be >= 60 seconds"):
            table_status("mnist", out=tmp_path, seeds=[0], models=["bnsm"], steal_after=value)
    assert table_status("mnist", out=tmp_path, seeds=[0], models=["bnsm"], steal_after=60.0)[0]["state"] == (
        "not started"
    )


def _dots(fig):
    """(epoch, filled) of every drawn evaluation."""
    (ax,) = fig.axes
    return sorted(
        (line.get_xdata()[0], to_rgba(line.get_markerfacecolor()) != to_rgba("white"))
        for line in ax.lines
        if line.get_marker() == "o"
    )


def test_the_curves_fill_the_evaluations_at_the_runs_own_full_s(tmp_path):
    from nsm.studies.figures import plot_table_curves

    # --eval-samples 50 above --samples 10: the full S is 10, not the largest S seen
    metrics = [{"epoch": e, "test_error": 0.03 - 0.01 * e, "samples": s} for e, s in ((1, 50), (2, 50), (3, 10))]
    _run(tmp_path, "bnsm", 0, metrics, samples=10)
    # another seed of the same model at its full S throughout, and a deterministic network (S=1)
    _run(tmp_path, "bnsm", 1, [{**m, "samples": 10} for m in metrics], samples=10)
    _run(tmp_path, "dcnn", 0, [{**m, "samples": 1} for m in metrics], samples=1)
    fig = plot_table_curves(tmp_path, [("mnist", "bnsm")], [0])
    assert _dots(fig) == [(1, False), (2, False), (3, True)]
    fig = plot_table_curves(tmp_path, [("mnist", "bnsm"), ("mnist", "dcnn")], [0, 1])
    assert _dots(fig) == [(1, False), (1, True), (1, True), (2, False), (2, True), (2, True)] + [(3, True)] * 3


@pytest.mark.parametrize(
    "fields",
    [
        {"epoch": 3, "in_epoch": [1]},
        {"epoch": "x"},
        {"epoch": True},
        {"epoch": -1},
        {"epoch": 3, "in_epoch": {"batch": "a"}},
        {"epoch": 3, "wall_seconds": "x"},
    ],
)
def test_status_names_a_checkpoint_whose_fields_have_the_wrong_type(tmp_path, fields):
    """`--status` reads an interrupted run's checkpoint; one nsm did not write (a list where its
    position in the epoch is, a word for its epoch) gave an AttributeError or TypeError traceback."""
    from nsm.utils.io import save_torch

    run = tmp_path / "runs" / "dcnn-mnist-seed0"
    run.mkdir(parents=True)
    save_torch(run / "checkpoint.pt", fields)
    with pytest.raises(ValueError, match=r"checkpoint.pt: not a checkpoint nsm wrote \(epoch"):
        table_status("mnist", out=tmp_path, seeds=[0], models=["dcnn"])


def test_status_leaves_times_that_are_not_numbers_out_of_its_estimate(tmp_path):
    """The time left comes from the run's own epoch and test times; a hand-edited metrics line
    whose times are words is left out of the estimate (it raised a TypeError)."""
    from nsm.studies.reproduce import _seconds_left
    from nsm.training.config import TrainConfig

    config = TrainConfig(model="dcnn", epochs=4, samples=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    lines = [
        {"epoch": 1, "train_seconds": "slow", "test_seconds": 2.0, "samples": 1, "test_error": 0.1},
        {"epoch": 2, "train_seconds": 10.0, "test_seconds": "x", "samples": 1, "test_error": 0.1},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    assert _seconds_left(run, config, 2) == pytest.approx(2 * (10.0 + 2.0))
    lines[1]["train_seconds"] = "x"
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    assert _seconds_left(run, config, 2) is None  # no epoch time left to go by
