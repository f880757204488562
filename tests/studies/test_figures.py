"""nsm.studies.figures: loading run directories, the summary numbers, the plots and `analyze`."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from nsm.studies.figures import (  # noqa: E402
    analyze,
    cosine_summary,
    drift_summary,
    histogram_density,
    layer_title,
    load_run,
    percentile_spread,
    plot_convergence,
    plot_grad_cosine,
    plot_grad_means,
    plot_percentiles,
    plot_weight_drift,
    plot_weight_evolution,
    plot_weight_histograms,
    plot_weight_means,
)

STATS_HEADER = "step,epoch,layer,w_mean,w_std,w_mean_drift,w_std_ratio,w_abs_max,g_mean,g_abs_mean,g_steps"
# Deliberately not sorted by step: load_run must sort.
STATS_ROWS = [
    "10,1.0,W1,0.02,0.55,0.02,1.1,1.3,0.001,0.01,10",
    "0,0.0,W1,0.0,0.5,0.0,1.0,1.2,,,",
    "0,0.0,W2,0.1,0.2,0.0,1.0,0.4,,,",
    "20,2.0,W1,-0.03,0.6,-0.03,1.2,1.4,-0.002,0.02,10",
    "10,1.0,W2,0.15,0.25,0.05,1.25,0.45,0.003,0.03,10",
    "20,2.0,W2,0.12,0.3,0.02,1.5,0.5,0.004,0.04,10",
]
W1_EDGES = [-1.0, -0.5, 0.0, 0.5, 1.0]
W1_COUNTS = [[3, 6, 6, 3], [2, 7, 7, 2], [1, 8, 8, 1]]  # 18 weights
W2_EDGES = [-0.5, 0.0, 0.25, 0.5]  # non-uniform bins
W2_COUNTS = [[2, 5, 5], [3, 4, 5], [4, 4, 4]]  # 12 weights
PERCENTILE_ROWS = [
    "0,0.0,W2,-1.0,0.0,1.0,0.0,1.0",
    "20,2.0,W2,-1.2,0.1,2.0,0.2,1.5",
    "10,1.0,W2,-1.5,0.2,1.4,0.1,1.2",
]
COSINE_ROWS = [
    "10,1.0,W1,stnn-fc,0.5",
    "20,2.0,W1,stnn-fc,0.7",
    "10,1.0,W2,stnn-fc,0.2",
    "20,2.0,W2,stnn-fc,-0.4",
    "10,1.0,W2,sigmoid,0.9",
    "20,2.0,W2,sigmoid,0.8",
]


def make_run(path, model="bnsm", record=True, cosine=True, errors=(0.5, 0.25)):
    """A tiny run directory with known numbers: 2 layers, record points at steps 0, 10, 20."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps({"model": model, "dataset": "mnist", "seed": 0, "epochs": len(errors)})
    )
    (path / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"epoch": e, "test_error": err, "train_error": err / 2, "train_loss": 1.0 / e, "test_nll": 0.5})
            + "\n"
            for e, err in enumerate(errors, start=1)
        )
    )
    if not record:
        return path
    rec = path / "record"
    rec.mkdir()
    (rec / "layers.json").write_text(
        json.dumps(
            {
                "version": 1,
                "steps_per_epoch": 10,
                "record_every": 10,
                "layers": [
                    {
                        "name": "W1",
                        "module": "1",
                        "type": "NSMConv2d",
                        "shape": [2, 1, 3, 3],
                        "init_mean": 0.0,
                        "init_std": 0.5,
                    },
                    {
                        "name": "W2",
                        "module": "4",
                        "type": "NSMLinear",
                        "shape": [3, 4],
                        "init_mean": 0.1,
                        "init_std": 0.2,
                    },
                ],
                "hidden": {"layer": "W2", "quantity": "pre-activation of the hidden units"},
                "companions": ["stnn-fc", "sigmoid"] if cosine else [],
            }
        )
    )
    (rec / "stats.csv").write_text("\n".join([STATS_HEADER, *STATS_ROWS]) + "\n")
    np.savez(
        rec / "histograms.npz",
        steps=np.array([0, 10, 20], dtype=np.int64),
        epochs=np.array([0.0, 1.0, 2.0]),
        W1_edges=np.array(W1_EDGES),
        W1_counts=np.array(W1_COUNTS, dtype=np.int64),
        W2_edges=np.array(W2_EDGES),
        W2_counts=np.array(W2_COUNTS, dtype=np.int64),
    )
    (rec / "percentiles.csv").write_text("\n".join(["step,epoch,layer,p15,p50,p85,mean,std", *PERCENTILE_ROWS]) + "\n")
    (rec / "grad_cosine.csv").write_text(
        "\n".join(["step,epoch,layer,companion,cosine", *(COSINE_ROWS if cosine else [])]) + "\n"
    )
    return path


@pytest.fixture
def run(tmp_path):
    return load_run(make_run(tmp_path / "run"))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --------------------------------------------------------------------------- loading


def test_load_run_parses_known_numbers(run, tmp_path):
    assert run.path == tmp_path / "run" and run.label == "bnsm" and run.model == "bnsm"
    assert run.config["dataset"] == "mnist"
    assert [m["test_error"] for m in run.metrics] == [0.5, 0.25]
    assert run.final_test_error == 0.25
    rec = run.record
    assert rec.layer_names == ["W1", "W2"] and rec.layers["steps_per_epoch"] == 10
    w1 = rec.stats["W1"]
    assert w1["step"].tolist() == [0, 10, 20] and w1["step"].dtype == np.int64
    assert w1["epoch"].tolist() == [0.0, 1.0, 2.0]
    assert w1["w_mean"].tolist() == [0.0, 0.02, -0.03]
    assert w1["w_std_ratio"].tolist() == [1.0, 1.1, 1.2]
    assert np.isnan(w1["g_mean"][0]) and w1["g_mean"][1:].tolist() == [0.001, -0.002]
    assert np.isnan(w1["g_steps"][0]) and w1["g_steps"][1:].tolist() == [10, 10]
    assert rec.stats["W2"]["w_mean_drift"].tolist() == [0.0, 0.05, 0.02]
    assert rec.steps.tolist() == [0, 10, 20] and rec.epochs.tolist() == [0.0, 1.0, 2.0]
    edges, counts = rec.hist["W2"]
    assert edges.tolist() == W2_EDGES and counts.tolist() == W2_COUNTS
    assert rec.percentiles["step"].tolist() == [0, 10, 20]
    assert rec.percentiles["p15"].tolist() == [-1.0, -1.5, -1.2]
    assert rec.percentiles["p85"].tolist() == [1.0, 1.4, 2.0]
    assert set(rec.cosine) == {("W1", "stnn-fc"), ("W2", "stnn-fc"), ("W2", "sigmoid")}
    epochs, cosine = rec.cosine[("W2", "stnn-fc")]
    assert epochs.tolist() == [1.0, 2.0] and cosine.tolist() == [0.2, -0.4]
    assert layer_title(run, "W1") == "W1 (NSMConv2d 2x1x3x3)"


def test_load_run_without_record(tmp_path):
    run = load_run(make_run(tmp_path / "plain", model="sigmoid", record=False))
    assert run.record is None and run.label == "sigmoid" and run.final_test_error == 0.25


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl"])
def test_missing_run_file_is_named(tmp_path, name):
    path = make_run(tmp_path / "run", record=False)
    (path / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"{name}.*not an nsm run directory"):
        load_run(path)


def test_missing_record_file_is_named(tmp_path):
    path = make_run(tmp_path / "run")
    (path / "record" / "stats.csv").unlink()
    with pytest.raises(FileNotFoundError, match="stats.csv"):
        load_run(path)


def test_optional_record_files_may_be_absent(tmp_path):
    path = make_run(tmp_path / "run")
    (path / "record" / "percentiles.csv").unlink()
    (path / "record" / "grad_cosine.csv").unlink()
    rec = load_run(path).record
    assert rec.percentiles is None and rec.cosine == {}


@pytest.mark.parametrize(
    "header, row, match",
    [
        (STATS_HEADER.replace(",g_steps", ""), None, "missing column.*g_steps"),
        (STATS_HEADER, "0,0.0,W1,abc,0.5,0.0,1.0,1.2,,,", "line 2.*w_mean"),
        (STATS_HEADER, "0,0.0,W1,0.0", "line 2.*fields"),
    ],
)
def test_corrupt_csv_names_file(tmp_path, header, row, match):
    path = make_run(tmp_path / "run")
    (path / "record" / "stats.csv").write_text(header + "\n" + (row or "") + "\n")
    with pytest.raises(ValueError, match=f"stats.csv.*{match}"):
        load_run(path)


def test_corrupt_metrics_names_file(tmp_path):
    path = make_run(tmp_path / "run", record=False)
    with open(path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "test_err\n')
    with pytest.raises(ValueError, match="metrics.jsonl, line 3"):
        load_run(path)


# --------------------------------------------------------------------------- numbers


def test_histogram_density_known_bins():
    centers, density = histogram_density(W2_EDGES, [4, 4, 4])
    assert centers == pytest.approx([-0.25, 0.125, 0.375])
    assert density == pytest.approx([4 / 6, 4 / 3, 4 / 3])
    assert np.sum(density * np.diff(W2_EDGES)) == pytest.approx(1.0)
    centers, density = histogram_density(W1_EDGES, W1_COUNTS[0])
    assert centers == pytest.approx([-0.75, -0.25, 0.25, 0.75])
    assert np.sum(density * 0.5) == pytest.approx(1.0)


@pytest.mark.parametrize("edges, counts", [([0, 1, 2], [1, 2, 3]), ([0, 1, 2], [0, 0]), ([0, 2, 1], [1, 1])])
def test_histogram_density_rejects_bad_input(edges, counts):
    with pytest.raises(ValueError, match="histogram_density"):
        histogram_density(edges, counts)


def test_drift_summary(run):
    assert drift_summary(run, "W1") == pytest.approx(
        {"final_mean_drift": -0.03, "final_std_ratio": 1.2, "max_abs_mean_drift": 0.03}
    )
    assert drift_summary(run, "W2") == pytest.approx(
        {"final_mean_drift": 0.02, "final_std_ratio": 1.5, "max_abs_mean_drift": 0.05}
    )
    with pytest.raises(ValueError, match=r"W9.*\['W1', 'W2'\]"):
        drift_summary(run, "W9")


def test_percentile_spread(run):
    spread = percentile_spread(run)
    assert spread["p15"] == pytest.approx({"after_first_epoch": 0.3, "total": 0.5})
    assert spread["p50"] == pytest.approx({"after_first_epoch": 0.1, "total": 0.2})
    assert spread["p85"] == pytest.approx({"after_first_epoch": 0.6, "total": 1.0})


def test_cosine_summary(run, tmp_path):
    assert cosine_summary(run) == pytest.approx(
        {("W1", "stnn-fc"): 0.6, ("W2", "stnn-fc"): -0.1, ("W2", "sigmoid"): 0.85}
    )
    assert cosine_summary(load_run(make_run(tmp_path / "plain", record=False))) == {}


# --------------------------------------------------------------------------- plots


def test_plot_convergence(run, tmp_path):
    other = load_run(make_run(tmp_path / "other", model="sigmoid", record=False, errors=(0.4, 0.3, 0.2)))
    ax = plot_convergence([run, other])
    assert len(ax.lines) == 2
    assert ax.lines[1].get_ydata().tolist() == pytest.approx([40.0, 30.0, 20.0])
    _, given = plt.subplots()
    assert plot_convergence([run], ax=given) is given and len(given.lines) == 1


def test_plot_weight_evolution(run):
    ax = plot_weight_evolution(run, "W1")
    assert len(ax.collections) == 1 and len(ax.images) == 0
    _, given = plt.subplots()
    assert plot_weight_evolution(run, "W2", ax=given) is given
    assert len(given.collections) == 1
    # y edges in units of the initial std (0.2), 3 record points x 3 bins
    assert given.get_ylim() == pytest.approx((-2.5, 2.5))
    assert given.collections[0].get_array().shape == (3, 3)


def test_plot_weight_drift(run, tmp_path):
    other = load_run(make_run(tmp_path / "other", model="stnn-fc"))
    axes = plot_weight_drift([run, other], "W2")
    assert len(axes) == 2 and [len(ax.lines) for ax in axes] == [2, 2]
    assert axes[1].lines[0].get_ydata().tolist() == [1.0, 1.25, 1.5]
    _, given = plt.subplots(1, 2)
    assert list(plot_weight_drift(run, "W1", axes=given)) == list(given)
    with pytest.raises(ValueError, match="expected 2 axes"):
        plot_weight_drift(run, "W1", axes=[given[0]])


@pytest.mark.parametrize("plot", [plot_weight_histograms, plot_weight_means, plot_grad_means])
def test_per_layer_plots(run, tmp_path, plot):
    other = load_run(make_run(tmp_path / "other", model="stnn-fc"))
    plain = load_run(make_run(tmp_path / "plain", record=False))  # skipped: no record
    axes = plot([run, other, plain])
    assert len(axes) == 2 and [len(ax.lines) for ax in axes] == [2, 2]
    assert axes[0].get_title() == "W1 (NSMConv2d 2x1x3x3)"
    _, given = plt.subplots()
    assert list(plot([run], layers=["W2"], axes=[given])) == [given] and len(given.lines) == 1
    with pytest.raises(ValueError, match="no layer 'W7'"):
        plot([run], layers=["W7"])


def test_plot_grad_means_skips_step_zero(run):
    (ax1, ax2) = plot_grad_means([run])
    assert ax2.lines[0].get_xdata().tolist() == [1.0, 2.0]
    assert ax2.lines[0].get_ydata().tolist() == [0.003, 0.004]


def test_plot_grad_cosine(run):
    axes = plot_grad_cosine([run])
    # lines = (run, companion) pairs with data for the layer + the axhline at 0
    assert [len(ax.lines) for ax in axes] == [1 + 1, 2 + 1]
    assert [line.get_label() for line in axes[1].lines[:2]] == ["bnsm vs stnn-fc", "bnsm vs sigmoid"]
    _, given = plt.subplots()
    assert list(plot_grad_cosine(run, layers=["W2"], axes=[given])) == [given]


def test_plot_percentiles(run):
    ax = plot_percentiles(run)
    assert len(ax.lines) == 3
    assert "bnsm" in ax.get_title() and "W2" in ax.get_title() and "pre-activation" in ax.get_ylabel()
    _, given = plt.subplots()
    assert plot_percentiles(run, ax=given) is given


# --------------------------------------------------------------------------- analyze

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_FIGURES = {
    "convergence",
    "weight_evolution",
    "weight_drift",
    "weight_histograms",
    "weight_means",
    "grad_means",
    "percentiles",
    "grad_cosine",
}


def test_analyze_two_recorded_runs(tmp_path):
    a = make_run(tmp_path / "run_a")
    b = make_run(tmp_path / "run_b", cosine=False, errors=(0.4, 0.2, 0.1))
    out = tmp_path / "out"
    written = analyze([a, b], out, layer="W2")
    assert set(written) == ALL_FIGURES | {"analysis"}
    assert {p.name for p in out.iterdir()} == {f"{n}.png" for n in ALL_FIGURES} | {"analysis.json"}
    for name in ALL_FIGURES:
        assert written[name] == out / f"{name}.png"
        assert written[name].read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["layer"] == "W2"
    ra, rb = summary["runs"]
    assert ra["label"] == "bnsm (run_a)" and rb["label"] == "bnsm (run_b)"  # duplicate labels
    assert ra["model"] == "bnsm" and ra["path"] == str(a)
    assert ra["final_test_error"] == 0.25 and rb["final_test_error"] == 0.1
    assert ra["drift"]["W2"] == pytest.approx(
        {"final_mean_drift": 0.02, "final_std_ratio": 1.5, "max_abs_mean_drift": 0.05}
    )
    assert ra["percentile_spread"]["p85"] == pytest.approx({"after_first_epoch": 0.6, "total": 1.0})
    assert ra["grad_cosine_mean"]["W1"] == pytest.approx({"stnn-fc": 0.6})
    assert ra["grad_cosine_mean"]["W2"] == pytest.approx({"stnn-fc": -0.1, "sigmoid": 0.85})
    assert rb["grad_cosine_mean"] == {}


def test_analyze_without_record(tmp_path):
    a = make_run(tmp_path / "run_a", model="sigmoid", record=False)
    out = tmp_path / "out"
    written = analyze([a], out)
    assert set(written) == {"convergence", "analysis"}
    assert {p.name for p in out.iterdir()} == {"convergence.png", "analysis.json"}
    (run,) = json.loads((out / "analysis.json").read_text())["runs"]
    assert run["label"] == "sigmoid" and run["final_test_error"] == 0.25 and not run["recorded"]


def test_analyze_skips_grad_cosine_without_rows(tmp_path):
    a = make_run(tmp_path / "run_a", cosine=False)
    written = analyze([a], tmp_path / "out", layer="W1")
    assert set(written) == (ALL_FIGURES - {"grad_cosine"}) | {"analysis"}


def test_analyze_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no run directories"):
        analyze([], tmp_path / "out")
    a = make_run(tmp_path / "run_a")
    with pytest.raises(ValueError, match=r"no layer 'W3'.*\['W1', 'W2'\]"):
        analyze([a], tmp_path / "out")  # default layer W3
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_colors_follow_position_among_all_runs(run, tmp_path):
    plain = load_run(make_run(tmp_path / "plain", record=False))
    conv = plot_convergence([plain, run])
    (ax, _) = plot_weight_means([plain, run])  # the unrecorded run is skipped but keeps its color
    assert ax.lines[0].get_color() == conv.lines[1].get_color() != conv.lines[0].get_color()


def _table_run(runs, model, seed, rows):
    path = runs / f"{model}-mnist-seed{seed}"
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": model, "dataset": "mnist", "seed": seed}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "summary.json").write_text("{}")
    return path


def test_table_curves_draw_every_seed_their_mean_and_the_paper(tmp_path):
    from matplotlib.colors import to_rgba

    from nsm.studies.figures import plot_table_curves

    runs = tmp_path / "runs"
    cells = [("mnist", "bnsm"), ("mnist", "dcnn")]
    assert plot_table_curves(runs, cells, [0, 1], {"mnist": {"bnsm": 0.775}}) is None  # nothing finished
    # two seeds: a cheap evaluation (S=10) at epoch 2, the full S=100 at 3 and 4; an untested epoch 1
    _table_run(
        runs,
        "bnsm",
        0,
        [
            {"epoch": 1},
            {"epoch": 2, "test_error": 0.02, "samples": 10},
            {"epoch": 3, "test_error": 0.010, "samples": 100},
            {"epoch": 4, "test_error": 0.008, "samples": 100},
        ],
    )
    _table_run(
        runs,
        "bnsm",
        1,
        [{"epoch": 2, "test_error": 0.03, "samples": 10}, {"epoch": 4, "test_error": 0.006, "samples": 100}],
    )
    unfinished = _table_run(runs, "dcnn", 0, [{"epoch": 1, "test_error": 0.5}])
    (unfinished / "summary.json").unlink()  # not finished: not drawn
    fig = plot_table_curves(runs, cells, [0, 1], {"mnist": {"bnsm": 0.775, "dcnn": 0.88}})
    (ax,) = fig.axes
    (mean,) = [line for line in ax.lines if line.get_label() == "bnsm (2 seeds)"]
    assert list(mean.get_xdata()) == [2, 4] and list(mean.get_ydata()) == pytest.approx([2.5, 0.7])
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(dots) == 5
    hollow = [
        (line.get_xdata()[0], line.get_ydata()[0])
        for line in dots
        if to_rgba(line.get_markerfacecolor()) == to_rgba("white")
    ]
    assert sorted(hollow) == [(2, pytest.approx(2.0)), (2, pytest.approx(3.0))]  # the cheap evaluations
    paper = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(paper) == 1 and list(paper[0].get_ydata()) == [0.775, 0.775]  # dcnn has no finished run
    assert ax.get_title() == "mnist (dashed: the paper)" and ax.get_yscale() == "log"


def test_table_curves_draw_a_deterministic_networks_cheap_evaluations_hollow(tmp_path):
    """A dCNN makes its cheap evaluations at S = 1 like its full ones; they are not in its
    reported error, and the figure drew them filled, as if they were."""
    from matplotlib.colors import to_rgba

    from nsm.studies.figures import plot_table_curves

    runs = tmp_path / "runs"
    path = _table_run(
        runs,
        "dcnn",
        0,
        [{"epoch": e, "test_error": 0.01 * e, "samples": 1} for e in (5, 8, 9, 10)],
    )
    config = {"model": "dcnn", "dataset": "mnist", "seed": 0, "epochs": 10, "eval_every": 5}
    (path / "config.json").write_text(json.dumps({**config, "eval_samples": 10, "eval_last": 3, "_environment": {}}))
    (path / "summary.json").write_text(json.dumps({"samples": 1}))
    (ax,) = plot_table_curves(runs, [("mnist", "dcnn")], [0], {}).axes
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    hollow = [line.get_xdata()[0] for line in dots if to_rgba(line.get_markerfacecolor()) == to_rgba("white")]
    assert len(dots) == 4 and hollow == [5]
