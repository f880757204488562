"""The statistics of ``nsm.training.recorder`` on hand-built models with known weights and gradients,
and the recorder inside training (``--record``)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from nsm import NSMLinear
from nsm.models import build_model
from nsm.training.config import TrainConfig
from nsm.training.loop import fit
from nsm.training.recorder import (
    Recorder,
    copy_weights,
    cosine_similarity,
    gradient_agreement,
    histogram_counts,
    histogram_edges,
    layer_gradients,
    percentiles,
    unit_input,
    weight_layers,
    weight_stats,
)
from toys import toy_dataset


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_weight_layers_names_matrices_and_filters_in_order_and_skips_norms():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 4), nn.ReLU(), NSMLinear(4, 3)
    )
    layers = weight_layers(model)
    assert [(name, path) for name, path, _ in layers] == [("W1", "0"), ("W2", "3"), ("W3", "5")]
    assert layers[2][2] is model[5]


def test_weight_stats_known_values():
    w = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # mean 3, unbiased std sqrt(14/3)
    s = weight_stats(w, init_mean=1.0, init_std=2.0)
    assert s["w_mean"] == pytest.approx(3.0)
    assert s["w_std"] == pytest.approx(math.sqrt(14 / 3))
    assert s["w_mean_drift"] == pytest.approx(2.0)
    assert s["w_std_ratio"] == pytest.approx(math.sqrt(14 / 3) / 2)
    assert s["w_abs_max"] == 6.0


def test_histogram_edges_and_counts_with_out_of_range_values_in_end_bins():
    edges = histogram_edges(0.5, bins=4, span=2.0)  # [-1, -0.5, 0, 0.5, 1]
    np.testing.assert_allclose(edges, [-1.0, -0.5, 0.0, 0.5, 1.0])
    w = torch.tensor([-3.0, -1.0, -0.75, -0.5, -0.1, 0.0, 0.2, 0.5, 0.9, 1.0, 7.0])
    # bins [-1,-0.5) [-0.5,0) [0,0.5) [0.5,1]; -3 -> first, 7 -> last
    assert histogram_counts(w, edges).tolist() == [3, 2, 2, 4]
    assert histogram_counts(torch.randn(1000, generator=torch.Generator().manual_seed(0)), edges).sum() == 1000
    with pytest.raises(ValueError, match="bins"):
        histogram_edges(1.0, bins=0)


def test_cosine_similarity_of_known_vectors():
    a = torch.tensor([1.0, 0.0])
    assert cosine_similarity(a, torch.tensor([3.0, 0.0])) == pytest.approx(1.0)
    assert cosine_similarity(a, torch.tensor([-2.0, 0.0])) == pytest.approx(-1.0)
    assert cosine_similarity(a, torch.tensor([0.0, 5.0])) == pytest.approx(0.0)
    assert cosine_similarity(a, torch.tensor([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert cosine_similarity(torch.ones(2, 2), torch.ones(4)) == pytest.approx(1.0)  # flattened
    assert math.isnan(cosine_similarity(a, torch.zeros(2)))
    with pytest.raises(ValueError, match="different sizes"):
        cosine_similarity(a, torch.ones(3))


def test_percentiles_of_known_values():
    assert percentiles(torch.arange(101.0)) == pytest.approx([15.0, 50.0, 85.0])
    assert percentiles(torch.arange(11.0).view(11, 1), (0, 25, 100)) == pytest.approx([0.0, 2.5, 10.0])
    with pytest.raises(ValueError, match="empty"):
        percentiles(torch.zeros(0))


def test_unit_input_is_the_nsm_drive_or_the_layer_output():
    torch.manual_seed(0)
    nsm_layer, lin = NSMLinear(6, 3), nn.Linear(6, 3)
    x = torch.randn(5, 6).sign()
    torch.testing.assert_close(unit_input(nsm_layer, x), nsm_layer.drive(x))
    torch.testing.assert_close(unit_input(lin, x), lin(x))
    # the drive is what sets the firing probability: P = (1 + erf t)/2
    torch.testing.assert_close(nsm_layer.firing_probability(x), (1 + torch.erf(unit_input(nsm_layer, x))) / 2)


def test_copy_weights_between_nsm_and_sigmoid_networks():
    torch.manual_seed(0)
    a, b = build_model("bnsm", (1, 28, 28), 10), build_model("sigmoid", (1, 28, 28), 10)
    copy_weights(a, b)
    for (_, _, la), (_, _, lb) in zip(weight_layers(a), weight_layers(b)):
        assert torch.equal(la.weight, lb.weight) and torch.equal(la.bias, lb.bias)
    with pytest.raises(ValueError, match="cannot match"):
        copy_weights(a, build_model("bnsm-fc", (1, 28, 28), 10))


def test_layer_gradients_equal_autograd_and_leave_grad_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    x, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)
    g = layer_gradients(model, x, y)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(g["W1"], model[0].weight.grad)
    torch.testing.assert_close(g["W2"], model[2].weight.grad)
    model.zero_grad(set_to_none=True)
    layer_gradients(model, x, y, draws=3)
    assert model[0].weight.grad is None


def test_gradient_agreement_is_one_for_a_deterministic_copy():
    torch.manual_seed(0)
    a = build_model("dcnn", (1, 16, 16), 3)
    b = build_model("dcnn", (1, 16, 16), 3)
    x, y = torch.rand(6, 1, 16, 16), torch.tensor([0, 1, 2] * 2)
    cos = gradient_agreement(a, b, x, y)
    assert list(cos) == ["W1", "W2", "W3", "W4"]
    assert all(c == pytest.approx(1.0, abs=1e-6) for c in cos.values())


def test_nsm_and_binconcrete_gradients_agree_but_less_than_two_nsm_draws():
    """Same weights, same (structured) batch of 32, 8 noise draws per gradient: two independent
    bNSM gradient estimates agree closely (cos > 0.9; measured 0.94-0.99 in the hidden layers
    over 4 seeds), the bNSM and its BinConcrete relaxation clearly but less (cos > 0.45,
    measured 0.63-0.84; chance for 800+ entries is ~0 +- 0.035)."""
    torch.manual_seed(0)
    a, b = build_model("bnsm", (1, 16, 16), 3), build_model("bnsm-binconcrete", (1, 16, 16), 3)
    again = build_model("bnsm", (1, 16, 16), 3)
    data = toy_dataset()
    x, y = data.train_x[:32], data.train_y[:32]
    relaxed = gradient_agreement(a, b, x, y, draws=8)
    same = gradient_agreement(a, again, x, y, draws=8)
    for name in ("W1", "W2", "W3"):
        assert same[name] > 0.9, same
        assert 0.45 < relaxed[name] < same[name], relaxed


def _tiny_model():
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[0.5, 0.5], [-0.5, 1.5]]))
        model[2].bias.zero_()
    return model


def test_recorder_with_known_weights_and_gradients(tmp_path):
    model = _tiny_model()
    probe_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    rec = Recorder(
        model, tmp_path, probe_x=probe_x, probe_y=torch.tensor([0, 1, 0]), steps_per_epoch=2, every=2, bins=4, span=2.0
    )
    rec.record()
    for grad in (torch.tensor([[1.0, 1.0], [1.0, 1.0]]), torch.tensor([[-1.0, 3.0], [3.0, 3.0]])):
        model[0].weight.grad = grad
        model[2].weight.grad = torch.zeros(2, 2)
        rec.after_backward()
        rec.after_step()  # the second step is a record point (every=2)
    rows = _rows(tmp_path / "record" / "stats.csv")
    assert [(r["step"], r["layer"]) for r in rows] == [("0", "W1"), ("0", "W2"), ("2", "W1"), ("2", "W2")]
    assert rows[0]["g_mean"] == "" and rows[0]["w_mean"] == "0.5"
    # mean gradient over the two steps: (1 + 2) / 2; mean |g|: (1 + 2.5) / 2
    assert float(rows[2]["g_mean"]) == pytest.approx(1.5)
    assert float(rows[2]["g_abs_mean"]) == pytest.approx(1.75)
    assert rows[2]["g_steps"] == "2" and float(rows[2]["epoch"]) == 1.0
    assert float(rows[3]["g_mean"]) == 0.0
    # percentiles of the last hidden layer's input: W1's output on the probe batch
    pct = _rows(tmp_path / "record" / "percentiles.csv")
    out = model[0](probe_x).detach()  # [[1, 2], [-1, 0], [0, 2]]
    assert pct[0]["layer"] == "W1"
    assert [float(pct[0][k]) for k in ("p15", "p50", "p85")] == pytest.approx(
        np.percentile(out.numpy(), [15, 50, 85]).tolist()
    )
    hist = np.load(tmp_path / "record" / "histograms.npz")
    assert hist["steps"].tolist() == [0, 2]
    std0 = torch.tensor([1.0, -1.0, 2.0, 0.0]).std().item()
    np.testing.assert_allclose(hist["W1_edges"], np.linspace(-2 * std0, 2 * std0, 5))
    # weights -1, 0, 1, 2 on edges (-2.58, -1.29, 0, 1.29, 2.58) (std0 = 1.29)
    assert hist["W1_counts"][0].tolist() == [0, 1, 2, 1]
    layers = json.loads((tmp_path / "record" / "layers.json").read_text())
    assert [entry["name"] for entry in layers["layers"]] == ["W1", "W2"]
    assert layers["hidden"]["layer"] == "W1" and "Linear" in layers["hidden"]["quantity"]


def _fit(tmp_path, name, **fields):
    config = TrainConfig(
        model="bnsm", epochs=2, batch_size=30, samples=2, out=str(tmp_path), run_name=name, progress=False, **fields
    )
    return fit(config, dataset=toy_dataset(), log=lambda *a: None)


def test_recording_writes_the_record_and_does_not_change_training(tmp_path):
    plain = _fit(tmp_path, "plain")
    rec = _fit(tmp_path, "rec", record=True, record_every=4, record_probe=20, record_compare=["sigmoid"])
    assert not (tmp_path / "plain" / "record").exists()
    # the recorder draws from a forked RNG: the same training, bit for bit
    a = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=False)["model_state"]
    b = torch.load(tmp_path / "rec" / "checkpoint.pt", weights_only=False)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert plain["final_test_error"] == rec["final_test_error"]
    folder = tmp_path / "rec" / "record"
    assert sorted(p.name for p in folder.iterdir()) == [
        "grad_cosine.csv",
        "histograms.npz",
        "layers.json",
        "percentiles.csv",
        "stats.csv",
    ]
    steps = sorted({int(r["step"]) for r in _rows(folder / "stats.csv")})
    assert steps == [0, 4, 6]  # every 4 steps, and the end of training
    cos = _rows(folder / "grad_cosine.csv")
    assert {r["companion"] for r in cos} == {"sigmoid"} and len(cos) == 3 * 4
    assert all(-1 <= float(r["cosine"]) <= 1 for r in cos)
    layers = json.loads((folder / "layers.json").read_text())
    assert layers["hidden"]["layer"] == "W3" and "drive" in layers["hidden"]["quantity"]


def test_without_record_no_recorder_is_made_and_nothing_is_written(tmp_path, monkeypatch):
    """Off means off: fit never builds a recorder (so no hooks, no per-step work)."""
    import nsm.training.loop

    def refuse(*args, **kwargs):
        raise AssertionError("a recorder was made although record=False")

    monkeypatch.setattr(nsm.training.loop, "make_recorder", refuse)
    _fit(tmp_path, "off")
    assert sorted(p.name for p in (tmp_path / "off").iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "curves.png",
        "metrics.jsonl",
        "summary.json",
    ]


def test_a_companion_of_another_shape_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="companion model 'bnsm-fc' does not fit"):
        _fit(tmp_path, "bad", record=True, record_compare=["bnsm-fc"])
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_record_options_are_validated():
    with pytest.raises(ValueError, match="record_every"):
        TrainConfig(record_every=5)  # without record=True
    with pytest.raises(ValueError, match="record_every"):
        TrainConfig(record=True, record_every=-1)
    with pytest.raises(ValueError, match="record_compare.*'nope'"):
        TrainConfig(record=True, record_compare=["nope"])
    with pytest.raises(ValueError, match="record_probe"):
        TrainConfig(record=True, record_probe=0)


def test_nsm_analyze_on_recorded_runs_writes_every_figure(tmp_path, capsys):
    """End to end: two tiny recorded runs (with the CLI's train options), then `nsm analyze`."""
    from nsm.cli import build_parser, main

    args = build_parser().parse_args(
        ["train", "--record", "--record-every", "3", "--compare-grad", "bnsm-binconcrete,sigmoid"]
    )
    assert (args.record, args.record_every, args.compare_grad) == (True, 3, "bnsm-binconcrete,sigmoid")
    _fit(tmp_path, "nsm", record=True, record_every=3, record_probe=20, record_compare=["bnsm-binconcrete", "sigmoid"])
    sigmoid = TrainConfig(
        model="sigmoid",
        epochs=2,
        batch_size=30,
        samples=1,
        out=str(tmp_path),
        run_name="sig",
        progress=False,
        record=True,
    )
    fit(sigmoid, dataset=toy_dataset(), log=lambda *a: None)
    out = tmp_path / "figures"
    assert main(["analyze", str(tmp_path / "nsm"), str(tmp_path / "sig"), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "analysis.json",
            "convergence.png",
            "grad_cosine.png",
            "grad_means.png",
            "percentiles.png",
            "weight_drift.png",
            "weight_evolution.png",
            "weight_histograms.png",
            "weight_means.png",
        ]
    )
    for name in names:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out
    assert main(["analyze", str(tmp_path / "nsm"), "--out", str(tmp_path / "other"), "--layer", "W9"]) == 2
    assert "W9" in capsys.readouterr().err
