"""Online learning (batch size 1, one pass): nsm.studies.online on a tiny synthetic dataset."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from nsm.models import build_model
from nsm.studies.online import default_eval_at, online_comparison, plot_online, run_online, train_online
from toys import toy_dataset

KEYS = {"examples", "test_error", "test_nll", "train_error_running", "samples", "seconds", "failed", "failed_at"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(name, seed=0):
    torch.manual_seed(seed)
    return build_model(name, (1, 16, 16), 3)


@pytest.mark.parametrize("name, lr", [("bnsm", 3e-3), ("dcnn", 1e-3)])
def test_online_learning_reduces_test_error(name, lr):
    d = toy_dataset()
    res = train_online(_model(name), d.train_x, d.train_y, d.test_x, d.test_y, lr=lr, eval_at=[0, 30, 90], samples=4)
    assert set(res) == KEYS
    assert res["failed"] is None and res["failed_at"] is None
    assert res["examples"] == [0, 30, 90]
    assert len(res["test_error"]) == len(res["test_nll"]) == len(res["train_error_running"]) == 3
    assert res["samples"] == (4 if name == "bnsm" else 1)  # no stochastic layers: one pass
    assert res["train_error_running"][0] is None
    assert all(0 <= e <= 1 for e in res["train_error_running"][1:])
    assert res["seconds"] > 0
    # Chance is 2/3; at least 30 percentage points better after one pass of 90 examples.
    start, end = res["test_error"][0], res["test_error"][-1]
    assert end <= start - 0.3, res["test_error"]
    assert end <= 0.2, res["test_error"]


def test_a_network_fixed_noise_free_is_tested_in_one_pass():
    """The BN baseline's layers are stochastic layers fixed at "threshold": no noise, so one
    pass, as nsm evaluate does (it reported S passes, each the same, at S times the cost)."""
    d = toy_dataset()
    res = train_online(_model("bn"), d.train_x, d.train_y, d.test_x, d.test_y, eval_at=[0, 10], samples=4)
    assert res["failed"] is None and res["samples"] == 1


def test_batch_norm_fails_on_a_batch_of_one():
    d = toy_dataset()
    res = train_online(_model("dcnn-bn"), d.train_x, d.train_y, d.test_x, d.test_y, eval_at=[0, 10, 90])
    assert set(res) == KEYS
    assert res["failed_at"] == 0
    assert "BatchNorm" in res["failed"] and "more than 1 value" in res["failed"]
    assert "ValueError" in res["failed"] and "after 0 examples" in res["failed"]
    assert "\n" not in res["failed"]
    assert res["examples"] == [0] and len(res["test_error"]) == 1  # what was measured before


def test_same_stream_gives_identical_results():
    d = toy_dataset()
    runs = [
        train_online(
            _model("dcnn"),
            d.train_x[:20],
            d.train_y[:20],
            d.test_x,
            d.test_y,
            lr=1e-3,
            eval_at=[10, 20],
            generator=torch.Generator().manual_seed(5),
        )
        for _ in range(2)
    ]
    for key in ("examples", "test_error", "test_nll", "train_error_running"):
        assert runs[0][key] == runs[1][key]
    # online_comparison: every model sees the same stream, so identical models agree.
    a, b = _model("dcnn"), _model("dcnn")
    out = online_comparison({"a": a, "b": b}, d, examples=20, eval_at=[0, 20], samples=2, lr=1e-3, seed=3)
    assert out["a"]["test_error"] == out["b"]["test_error"]
    assert out["a"]["train_error_running"] == out["b"]["train_error_running"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize(
    "eval_at, match",
    [
        ([], "at least one"),
        ([10, 5], "increasing"),
        ([5, 5], "increasing"),
        ([-1, 5], "non-negative"),
        ([0, 91], "exceed"),
        ([0, 2.5], "ints"),
        ([True], "ints"),
    ],
)
def test_eval_at_validation(eval_at, match):
    d = toy_dataset()
    with pytest.raises(ValueError, match=match):
        train_online(_model("dcnn"), d.train_x, d.train_y, d.test_x, d.test_y, eval_at=eval_at)


def test_other_argument_validation():
    d = toy_dataset()
    m = _model("dcnn")
    with pytest.raises(ValueError, match="samples"):
        train_online(m, d.train_x, d.train_y, d.test_x, d.test_y, samples=0)
    with pytest.raises(ValueError, match="lr"):
        train_online(m, d.train_x, d.train_y, d.test_x, d.test_y, lr=0)
    with pytest.raises(ValueError, match="same"):
        train_online(m, d.train_x, d.train_y[:5], d.test_x, d.test_y)
    with pytest.raises(ValueError, match="examples"):
        online_comparison({"m": m}, d, examples=91)
    with pytest.raises(ValueError, match="models"):
        run_online([], dataset=d, out="unused")


def test_default_eval_at():
    assert default_eval_at(10000) == [0, 100, 300, 1000, 3000, 10000]
    assert default_eval_at(500) == [0, 100, 300, 500]
    assert default_eval_at(60000)[-1] == 60000 and default_eval_at(60000).count(60000) == 1
    assert default_eval_at(100000)[-2:] == [60000, 100000]
    with pytest.raises(ValueError, match="examples"):
        default_eval_at(0)


def _fake(examples, errors, failed=None, failed_at=None):
    return {"examples": examples, "test_error": errors, "failed": failed, "failed_at": failed_at}


def test_plot_online_lines_and_failure_markers():
    results = {
        "bnsm": _fake([0, 100, 300], [0.9, 0.3, 0.1]),
        "dcnn": _fake([0, 100, 300], [0.9, 0.2, 0.05]),
        "dcnn-bn": _fake([0], [0.9], "ValueError on the training step of example 1: ...", 0),
        "never": _fake([], [], "RuntimeError on the training step of example 1: ...", 0),
    }
    fig, ax = plt.subplots()
    assert plot_online(results, ax) is ax
    labels = [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]
    assert len(labels) == 4
    assert labels[:2] == ["bnsm", "dcnn"]
    assert labels[2].startswith("dcnn-bn (failed: ValueError") and labels[3].startswith("never (failed: ")
    markers = [line for line in ax.lines if line.get_marker() == "x"]
    assert len(markers) == 2
    assert list(markers[0].get_xdata()) == [0] and list(markers[0].get_ydata()) == [pytest.approx(90.0)]
    assert ax.get_xscale() == "symlog"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == labels
    plt.close(fig)


def test_run_online_writes_json_and_figure(tmp_path):
    d = toy_dataset()
    out = tmp_path / "online"
    report = run_online(
        ["bnsm", "dcnn-bn"],
        dataset=d,
        examples=12,
        eval_at=[0, 12],
        samples=2,
        lr=1e-3,
        out=out,
        progress=False,
        log=lambda *a: None,
    )
    saved = json.loads((out / "online.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["config"]["models"] == ["bnsm", "dcnn-bn"] and saved["config"]["dataset"] == "toy"
    assert saved["config"]["eval_at"] == [0, 12] and saved["config"]["batch_size"] == 1
    assert saved["results"]["bnsm"]["examples"] == [0, 12] and saved["results"]["bnsm"]["failed"] is None
    assert saved["results"]["dcnn-bn"]["failed_at"] == 0
    assert (out / "online.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_online_command_on_real_mnist(mnist_dir, tmp_path, capsys):
    from nsm.cli import main

    out = tmp_path / "on"
    code = main(
        [
            "online",
            "bnsm,dcnn-bn",
            "--examples",
            "30",
            "--eval-at",
            "0,30",
            "--samples",
            "2",
            "--test-subset",
            "50",
            "--threads",
            "1",
            "--data-dir",
            str(mnist_dir),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "bnsm: test error" in printed.out and "after 30 examples" in printed.out
    assert (
        "dcnn-bn: failed: ValueError on the training step of example 1" in printed.out and "online.png" in printed.out
    )
    saved = json.loads((out / "online.json").read_text())
    assert saved["config"]["dataset"] == "mnist" and saved["results"]["bnsm"]["examples"] == [0, 30]
    assert main(["online", "bnsm", "--eval-at", "0,x", "--out", str(tmp_path / "bad")]) == 2
    assert "--eval-at must be comma-separated ints" in capsys.readouterr().err
