"""``nsm evaluate`` on several runs of one model: each keeps its own line, curve and table row
(figures and rows were keyed by the model name, so a second seed replaced the first)."""

from __future__ import annotations

import json

import pytest

import nsm.studies.figures as F
from nsm.studies import evaluate as E
from nsm.training.config import TrainConfig
from nsm.training.loop import fit


def _run(out, mnist_dir, model, seed):
    config = TrainConfig(
        model=model,
        seed=seed,
        epochs=1,
        train_subset=200,
        test_subset=40,
        samples=2,
        data_dir=str(mnist_dir),
        out=str(out),
        run_name=f"{model}-s{seed}",
        progress=False,
    )
    return fit(config, log=lambda *a: None)["run_dir"]


def test_two_seeds_of_one_model_stay_apart(tmp_path, mnist_dir, monkeypatch):
    """Two dcnn seeds: two labels "dcnn (RUN FOLDER)", two curves in every figure, two rows."""
    runs = [_run(tmp_path / "runs", mnist_dir, "dcnn", seed) for seed in (0, 1)]
    drawn: dict[str, list] = {}

    def spy(name):
        original = getattr(F, name)

        def wrapped(*args, **kwargs):
            curves = args[1] if name == "plot_rotation" else args[0]
            drawn.setdefault(name, []).append(list(curves))
            return original(*args, **kwargs)

        monkeypatch.setattr(F, name, wrapped)

    for name in ("plot_accuracy_vs_samples", "plot_rotation", "plot_robustness"):
        spy(name)
    out = tmp_path / "ev"
    E.evaluate_runs(
        runs,
        out,
        samples=2,
        shift_subset=10,
        angles=[0, 90],
        ood="none",
        device_subset=10,
        device_samples=1,
        test_subset=40,
        log=lambda *a: None,
    )
    want = ["dcnn (dcnn-s0)", "dcnn (dcnn-s1)"]
    data = json.loads((out / "evaluation.json").read_text())
    assert [r["label"] for r in data["runs"]] == want
    assert drawn["plot_accuracy_vs_samples"] == [want] and drawn["plot_rotation"] == [want]
    assert drawn["plot_robustness"] and all(curves == want for curves in drawn["plot_robustness"])
    rows = [line for line in (out / "evaluation.md").read_text().splitlines() if line.startswith("| dcnn")]
    assert [row.split(" | ")[0] for row in rows] == ["| " + w for w in want]


@pytest.mark.parametrize(
    "runs, want",
    [
        ([("bnsm", "r/bnsm-s0"), ("dcnn", "r/dcnn-s0")], ["bnsm", "dcnn"]),
        (
            [("dcnn", "r/a"), ("bnsm", "r/b"), ("dcnn", "r/c")],
            ["dcnn (a)", "bnsm", "dcnn (c)"],
        ),
        ([("dcnn", "x/run"), ("dcnn", "y/run")], ["dcnn (x/run)", "dcnn (y/run)"]),
        ([("dcnn", "x/run"), ("dcnn", "x/run")], ["dcnn (x/run)", "dcnn (x/run) #2"]),
    ],
)
def test_unique_labels(runs, want):
    """The run folder's name after a repeated label; the whole path if that repeats too; a
    number for the same run given twice."""
    results = [{"label": label, "run_dir": run_dir} for label, run_dir in runs]
    assert E._unique_labels(results) == want
