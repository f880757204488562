"""The recorder's companions and probe on networks with batch normalization or model options:
a companion gets the run's whole current state (batch normalization included) and is built as
the run's network is (dataset mapping, model options); the percentiles of a batch-norm network
are those of the normalized unit input; options that change nothing are refused."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

import nsm.training.loop
from nsm.data import Dataset
from nsm.models import build_model
from nsm.nn.layers import NSMLayer
from nsm.training.config import TrainConfig
from nsm.training.loop import fit
from nsm.training.recorder import Recorder, copy_weights, gradient_agreement, make_recorder, weight_layers
from toys import toy_dataset

BN_MODELS = ("dcnn-bn", "sigmoid-bn", "bnn")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here at one thread, then as it was."""


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _norms(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _perturb_norms(model, seed=1):
    """Scale, shift and running statistics of every batch normalization away from their init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in _norms(model):
            n = bn.num_features
            bn.weight.copy_(0.5 + 2 * torch.rand(n, generator=g))
            bn.bias.copy_(torch.randn(n, generator=g))
            bn.running_mean.copy_(torch.randn(n, generator=g))
            bn.running_var.copy_(0.5 + torch.rand(n, generator=g))
            bn.num_batches_tracked.fill_(7)


def _norm_state(bn):
    return {k: v.clone() for k, v in bn.state_dict().items()}


# ---------------------------------------------------------------------------- 1. copy_weights


@pytest.mark.parametrize("name", BN_MODELS)
def test_a_batch_norm_network_against_a_fresh_copy_of_itself_agrees_exactly(name):
    """Same deterministic network, same weights, same batch: every cosine is 1 (the old copy
    left the companion's scale and shift at init: 0.95-0.97 for dcnn-bn, -0.23..0.59 for bnn)."""
    data = toy_dataset()
    torch.manual_seed(0)
    model = build_model(name, data.in_shape, data.num_classes)
    companion = build_model(name, data.in_shape, data.num_classes)
    _perturb_norms(model)
    cos = gradient_agreement(model, companion, data.train_x[:20], data.train_y[:20])
    assert len(cos) == 4 and all(c == pytest.approx(1.0, abs=1e-6) for c in cos.values()), cos
    for a, b in zip(_norms(model), _norms(companion)):  # running statistics too
        sa, sb = _norm_state(a), _norm_state(b)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_batch_norms_are_matched_by_the_layer_they_follow_across_architectures():
    """dcnn-bn -> bnn (other module indices, other weight-layer types): each normalization gets
    the one after the same weight layer; a network without normalization copies none and a
    normalization the source does not have keeps its own state."""
    data = toy_dataset()
    torch.manual_seed(0)
    source = build_model("dcnn-bn", data.in_shape, data.num_classes)
    _perturb_norms(source)
    target = build_model("bnn", data.in_shape, data.num_classes)
    assert source.state_dict().keys() != target.state_dict().keys()  # not the whole-state path
    copy_weights(source, target)
    for a, b in zip(_norms(source), _norms(target), strict=True):
        sa, sb = _norm_state(a), _norm_state(b)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    for (_, _, la), (_, _, lb) in zip(weight_layers(source), weight_layers(target)):
        assert torch.equal(la.weight, lb.weight) and torch.equal(la.bias, lb.bias)

    plain = build_model("dcnn", data.in_shape, data.num_classes)
    fresh = build_model("dcnn-bn", data.in_shape, data.num_classes)
    before = [_norm_state(bn) for bn in _norms(fresh)]
    copy_weights(plain, fresh)
    assert all(torch.equal(s[k], _norm_state(bn)[k]) for s, bn in zip(before, _norms(fresh)) for k in s)
    copy_weights(source, plain)  # and the other way: nothing to copy the normalizations to
    assert torch.equal(plain[0].weight, source[0].weight)


def _config(tmp_path, name, **fields):
    base = dict(epochs=2, batch_size=30, samples=1, progress=False, threads=1, compile="off", out=str(tmp_path))
    return TrainConfig(**{**base, "run_name": name, **fields})


def test_a_recorded_batch_norm_run_compared_with_itself_has_cosine_one_at_every_record_point(tmp_path):
    """End to end: dcnn-bn trained with --record --compare-grad dcnn-bn: the companion is the
    run's network with the run's current weights and normalization, so every cosine is 1
    (the old copy gave 0.9993 once the scale and shift had moved)."""
    config = _config(
        tmp_path, "self", model="dcnn-bn", record=True, record_every=2, record_probe=20, record_compare=["dcnn-bn"]
    )
    fit(config, dataset=toy_dataset(), log=lambda *a: None)
    cos = _rows(tmp_path / "self" / "record" / "grad_cosine.csv")
    assert sorted({int(r["step"]) for r in cos}) == [0, 2, 4, 6]
    assert len(cos) == 4 * 4
    assert all(float(r["cosine"]) == pytest.approx(1.0, abs=1e-6) for r in cos), [r["cosine"] for r in cos]


# ---------------------------------------------------------------------------- 2. building companions


class _Stop(Exception):
    """Raised by the stand-in make_recorder: the test needs the recorder, not the training."""


def _recorder_of(monkeypatch, config, dataset):
    """The recorder fit builds for ``config`` (fit is stopped right after building it)."""
    made = []

    def make(*args, **kwargs):
        made.append(make_recorder(*args, **kwargs))
        raise _Stop

    monkeypatch.setattr(nsm.training.loop, "make_recorder", make)
    with pytest.raises(_Stop):
        fit(config, dataset=dataset, log=lambda *a: None)
    return made[0]


def test_the_runs_own_model_as_companion_gets_the_runs_model_options(tmp_path, monkeypatch):
    """bnsm trained with estimator=ste: the companion 'bnsm' is the same ste network (the noise
    floor), not bnsm with its default prob estimator; another companion keeps its defaults."""
    config = _config(
        tmp_path,
        "ste",
        model="bnsm",
        model_options={"estimator": "ste"},
        record=True,
        record_probe=20,
        record_compare=["bnsm", "bnsm-binconcrete"],
    )
    rec = _recorder_of(monkeypatch, config, toy_dataset())
    same = rec.companions["bnsm"]
    assert repr(same) == repr(rec.model)
    assert all("estimator=ste" in repr(m) for m in same.modules() if isinstance(m, NSMLayer))
    other = [m for m in rec.companions["bnsm-binconcrete"].modules() if isinstance(m, NSMLayer)]
    assert other and all("estimator=binconcrete" in repr(m) for m in other)


def test_a_companion_is_the_network_its_name_is_on_the_runs_dataset(tmp_path, monkeypatch):
    """On cifar10, --model bnsm trains bnsm-allconv; --compare-grad bnsm is that network too
    (it was the Table 6 bnsm: 4 weight layers against 10, refused). Synthetic cifar-shaped data;
    nothing is trained."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 3, 32, 32, generator=g), torch.arange(24) % 10
    data = Dataset("cifar10", x[:20], y[:20], x[20:], y[20:], 10)
    config = _config(tmp_path, "cifar", model="bnsm", dataset="cifar10", record=True, record_compare=["bnsm"])
    rec = _recorder_of(monkeypatch, config, data)
    assert len(weight_layers(rec.model)) == 10
    assert repr(rec.companions["bnsm"]) == repr(rec.model)
    with pytest.raises(ValueError, match="record_compare.*sigmoid.*allconv"):
        TrainConfig(dataset="cifar10", record=True, record_compare=["sigmoid"])


# ---------------------------------------------------------------------------- 3. percentiles


def test_the_percentiles_of_a_batch_norm_network_are_those_of_the_normalized_unit_input(tmp_path):
    """dcnn-bn: the units of W3 (Linear, then BatchNorm1d, then ReLU) rectify BN(u), not u:
    the recorded percentiles are those of the normalization's output with the probe batch's
    statistics (training mode), and its running statistics are left as they were."""
    data = toy_dataset()
    torch.manual_seed(0)
    model = build_model("dcnn-bn", data.in_shape, data.num_classes)
    _perturb_norms(model)
    x = data.train_x[:20]
    rec = Recorder(model, tmp_path, probe_x=x, probe_y=data.train_y[:20], steps_per_epoch=3)
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    rec.record()
    assert all(torch.equal(b, buffers[k]) for k, b in model.named_buffers())
    row = _rows(tmp_path / "record" / "percentiles.csv")[0]
    assert row["layer"] == "W3"
    with torch.no_grad():
        h = x
        for module in model[:9]:  # conv, BN, ReLU, pool, conv, BN, ReLU, pool, flatten
            h = (
                nn.functional.batch_norm(h, None, None, module.weight, module.bias, training=True, eps=module.eps)
                if isinstance(module, nn.modules.batchnorm._BatchNorm)
                else module(h)
            )
        u = model[9](h)  # (20, 512): the linear layer's output
        bn = model[10]
        mean, var = u.mean(0), u.var(0, unbiased=False)
        expected = (bn.weight * (u - mean) / torch.sqrt(var + bn.eps) + bn.bias).double().numpy()
    got = [float(row[k]) for k in ("p15", "p50", "p85")]
    np.testing.assert_allclose(got, np.percentile(expected, [15, 50, 85]), rtol=1e-4, atol=1e-5)
    assert float(row["mean"]) == pytest.approx(expected.mean(), abs=1e-4)
    assert float(row["std"]) == pytest.approx(expected.std(ddof=1), rel=1e-4)
    assert not np.allclose(got, np.percentile(u.double().numpy(), [15, 50, 85]), rtol=1e-2)
    layers = json.loads((tmp_path / "record" / "layers.json").read_text())
    assert layers["hidden"] == {"layer": "W3", "quantity": "unit input u (BatchNorm1d output)"}


def test_the_percentiles_of_an_nsm_are_still_its_drive(tmp_path):
    """bnsm (no normalization): unchanged, the drive t of W3 given its sampled input, drawn
    from the same random state as the recorder's (forked from the global one)."""
    data = toy_dataset()
    torch.manual_seed(0)
    model = build_model("bnsm", data.in_shape, data.num_classes)
    x = data.train_x[:20]
    rec = Recorder(model, tmp_path, probe_x=x, probe_y=data.train_y[:20], steps_per_epoch=3)
    torch.manual_seed(5)
    rec.record()
    row = _rows(tmp_path / "record" / "percentiles.csv")[0]
    _, path, layer = weight_layers(model)[2]
    at = int(path)
    torch.manual_seed(5)
    with torch.no_grad():
        t = layer.drive(model[:at](x)).double().numpy()
    got = [float(row[k]) for k in ("p15", "p50", "p85")]
    np.testing.assert_allclose(got, np.percentile(t, [15, 50, 85]), rtol=1e-5, atol=1e-6)
    assert "drive" in json.loads((tmp_path / "record" / "layers.json").read_text())["hidden"]["quantity"]


# ---------------------------------------------------------------------------- 4. options


def test_record_draws_without_a_companion_is_refused():
    for fields in ({"record_draws": 8}, {"record": True, "record_draws": 8}, {"record": True, "record_draws": 1}):
        with pytest.raises(ValueError, match="--record-draws.*--compare-grad"):
            TrainConfig(**fields)
    assert TrainConfig(record=True, record_compare=["sigmoid"], record_draws=8).record_draws == 8
    assert TrainConfig(record=True).record_draws == 4


def test_layers_json_gives_the_probe_size_actually_used(tmp_path):
    """record_probe 500 on 90 training images probes all 90, and says so."""
    data = toy_dataset()
    torch.manual_seed(0)
    model = build_model("dcnn", data.in_shape, data.num_classes)
    common = dict(
        train_x=data.train_x, train_y=data.train_y, device="cpu", steps_per_epoch=3, every=0, companions=[], seed=0
    )
    for probe, used in ((500, 90), (20, 20)):
        rec = make_recorder(model, tmp_path / str(probe), probe=probe, build=None, **common)
        rec.record()
        assert json.loads((tmp_path / str(probe) / "record" / "layers.json").read_text())["probe"] == used
