"""``nsm evaluate`` end to end on tiny runs trained on real MNIST (Fashion-MNIST as OOD)."""

from __future__ import annotations

import json

import pytest
import torch

from nsm.cli import main
from nsm.studies.evaluate import evaluate_run, load_trained
from nsm.training.config import TrainConfig
from nsm.training.loop import fit


def _run(tmp_path, mnist_dir, model):
    config = TrainConfig(
        model=model,
        epochs=1,
        train_subset=3000,
        test_subset=100,
        samples=2,
        data_dir=str(mnist_dir),
        out=str(tmp_path / "runs"),
        progress=False,
    )
    return fit(config, log=lambda *a: None)["run_dir"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_dir):
    tmp = tmp_path_factory.mktemp("evaluate")
    return {m: _run(tmp, mnist_dir, m) for m in ("bnsm", "dcnn")}


def test_evaluate_command_writes_numbers_and_figures(runs, tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            runs["bnsm"],
            runs["dcnn"],
            "--out",
            str(out),
            "--samples",
            "4",
            "--shift-subset",
            "40",
            "--angles",
            "0,90",
            "--device-subset",
            "40",
            "--device-samples",
            "2",
            "--test-subset",
            "100",
        ]
    )
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "accuracy_vs_samples.png",
        "devices.png",
        "evaluation.json",
        "evaluation.md",
        "ood.png",
        "reliability.png",
        "rotation.png",
    ]
    data = json.loads((out / "evaluation.json").read_text())
    bnsm, dcnn = data["runs"]
    assert (bnsm["label"], bnsm["samples"], dcnn["samples"]) == ("bnsm", 4, 1)
    u = bnsm["uncertainty"]
    assert 0 <= u["error"] <= 1 and u["nll"] > 0 and 0 <= u["ece"] <= 1 and 0 <= u["brier"] <= 2
    assert u["mutual_information"] > 0  # the NSM's samples disagree
    assert dcnn["uncertainty"]["mutual_information"] == 0  # one deterministic pass
    assert sorted(bnsm["accuracy_vs_samples"], key=int) == ["1", "2"] and list(dcnn["accuracy_vs_samples"]) == ["1"]
    assert bnsm["rotation"]["angle"] == [0.0, 90.0] and len(bnsm["rotation"]["entropy"]) == 2
    ood = bnsm["ood"]
    assert ood["dataset"] == "fashion-mnist" and ood["n_in"] == ood["n_out"] == 40
    assert 0 <= ood["entropy"]["auroc"] <= 1 and 0 <= ood["mutual_information"]["auroc"] <= 1
    assert dcnn["ood"]["mutual_information"]["auroc"] == 0.5  # MI is 0 for all: no information
    dev = bnsm["devices"]
    assert {"levels", "p_spread", "read_noise"} <= set(dev) and "p_spread" not in dcnn["devices"]
    assert all(0 <= v <= 1 for v in dev["levels"].values())
    assert "| bnsm | 4 |" in (out / "evaluation.md").read_text()


def test_rotation_makes_the_nsm_less_certain(runs):
    """Upright digits vs digits turned by 90 degrees: the mean predictive entropy rises and
    the accuracy falls (a trained model, 100 images, S = 8)."""
    res = evaluate_run(
        runs["bnsm"],
        samples=8,
        shift_subset=100,
        angles=[0, 90],
        ood=None,
        devices=False,
        test_subset=100,
        log=lambda *a: None,
    )
    rot = res["rotation"]
    assert rot["entropy"][1] > rot["entropy"][0]
    assert rot["accuracy"][1] < rot["accuracy"][0]


def test_bad_run_directories_are_refused(tmp_path, runs):
    with pytest.raises(FileNotFoundError, match="not a finished nsm run directory"):
        load_trained(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_trained(tmp_path)
    torch.save({"hello": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="not an nsm checkpoint"):
        load_trained(tmp_path)
    with pytest.raises(ValueError, match="samples must be a positive int"):
        evaluate_run(runs["dcnn"], samples=0)
