"""Edge cases of nsm.studies.devices: one read-noise draw per Monte-Carlo pass, units without
variance, layers a device cannot store, and the checks of DeviceModel and quantize."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrizations

import nsm
from nsm.nn.layers import NSMConv2d, NSMLinear
from nsm.nn.mc import mc_sample_probs
from nsm.studies import devices as D
from nsm.studies.devices import DeviceModel, DeviceNSMLayer, ReadNoiseLayer, quantize, with_device


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pm1(shape, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen(seed)).float() * 2 - 1


# ----------------------------------------------------------------------------- read noise per pass


@pytest.mark.parametrize("max_pass", [1, 3, 20, 200, 8192])
def test_each_monte_carlo_pass_gets_its_own_read(max_pass):
    """S passes of a deterministic layer under read noise: S distinct outputs per example,
    whatever max_pass (one draw per batched pass gave 1 for S = 20 at max_pass = 200)."""
    torch.manual_seed(0)
    dev = with_device(nn.Sequential(nn.Linear(8, 3)), DeviceModel(read_noise=0.2), generator=gen(1))
    x = torch.randn(4, 8, generator=gen(2))
    p = mc_sample_probs(dev, x, 20, max_pass=max_pass)  # (S, N, K)
    for n in range(4):
        assert len(torch.unique(p[:, n, 0])) == 20


@pytest.mark.parametrize("max_pass", [1, 6, 50, 8192])
def test_every_wrapper_reads_once_per_pass(monkeypatch, max_pass):
    """A bNSM with spread and read noise (DeviceNSMLayer) and its real-valued readout
    (ReadNoiseLayer): each wrapper reads its weight once per pass of the example, S times."""
    torch.manual_seed(0)
    model = nsm.build_model("bnsm", (1, 16, 16), 3)
    dev = with_device(model, DeviceModel(p_spread=0.1, read_noise=0.1), generator=gen(3))
    wrappers = [m for m in dev.modules() if isinstance(m, (DeviceNSMLayer, ReadNoiseLayer))]
    assert {type(m) for m in wrappers} == {DeviceNSMLayer, ReadNoiseLayer}
    reads: dict[int, int] = {}
    original = D._read

    def counting(weight, read_noise, generator):
        reads[id(weight)] = reads.get(id(weight), 0) + 1
        return original(weight, read_noise, generator)

    monkeypatch.setattr(D, "_read", counting)
    nsm.mc_predict(dev, torch.rand(1, 1, 16, 16), 6, max_pass=max_pass)
    assert [reads.get(id(m.layer.weight), 0) for m in wrappers] == [6] * len(wrappers)


@pytest.mark.parametrize("kind", ["device-linear", "device-conv", "read-linear", "read-nsm", "read-conv"])
def test_each_stacked_copy_is_computed_with_its_own_read(kind):
    """With copies = k (as Monte-Carlo prediction sets it), copy c of the batch is the layer's
    output with the c-th read, drawn in order from the generator; the copies differ."""
    torch.manual_seed(4)
    if "conv" in kind:
        layer = (NSMConv2d if kind.startswith("device") else nn.Conv2d)(2, 3, 3, padding=1)
        x = pm1((2, 2, 5, 5), seed=5)
    else:
        layer = nn.Linear(6, 4) if kind == "read-linear" else NSMLinear(6, 4, p=0.5)
        x = pm1((2, 6), seed=5)
    k = 3

    def make():
        if kind.startswith("device"):
            return DeviceNSMLayer(layer, torch.full_like(layer.weight, 0.4), read_noise=0.3, generator=gen(6))
        return ReadNoiseLayer(layer, read_noise=0.3, generator=gen(6))

    dev, replay = make(), make()
    reads = [replay.read_weight() for _ in range(k)]
    dev.copies = k
    with nsm.forward_mode(layer, "mean"), torch.no_grad():
        out = dev(x.repeat((k,) + (1,) * (x.dim() - 1)))
        if kind.startswith("device"):
            expect = torch.cat([2 * replay.firing_probability(x, w) - 1 for w in reads])
        else:
            expect = torch.cat([functional_call(layer, {"weight": w}, (x,)) for w in reads])
    assert torch.allclose(out, expect, atol=1e-6)
    assert not torch.allclose(out[:2], out[2:4])
    with pytest.raises(ValueError, match="copies=3"):
        dev(x[:1].repeat((4,) + (1,) * (x.dim() - 1)))  # 4 rows are not 3 copies


def test_one_read_per_call_outside_monte_carlo_prediction():
    """Called directly (copies = 1), a wrapper reads once per call: the examples of the
    batch share the read."""
    layer = nn.Linear(5, 2, bias=False)
    dev = ReadNoiseLayer(layer, 0.3, generator=gen(7))
    x = torch.randn(1, 5, generator=gen(8)).repeat(4, 1)
    with torch.no_grad():
        out = dev(x)
    assert torch.equal(out, out[:1].expand(4, 2))


# ----------------------------------------------------------------------------- zero variance


def _zero_unit_layer(kind: str, bias):
    """A layer whose unit 0 has no variance (all its weights 0), unit 1 an ordinary one."""
    torch.manual_seed(9)
    if kind == "linear":
        layer, x = NSMLinear(6, 2, bias=bias is not None), pm1((3000, 6), seed=10)
    else:
        layer, x = NSMConv2d(2, 2, 3, padding=1, bias=bias is not None), pm1((300, 2, 4, 4), seed=10)
    with torch.no_grad():
        layer.weight[0].zero_()
        if bias is not None:
            layer.bias.copy_(torch.tensor([bias, 0.3]))
    return layer, x


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("bias", [None, 0.0, -0.5])
@pytest.mark.parametrize("p", ["nominal", "per-synapse"])
def test_a_unit_without_variance_fires_as_the_layer_does(kind, bias, p):
    """Var[u] = 0, u = b: sgn(b) with certainty (+1 for b = 0 and without bias), as the library's
    layers fire (drive_terms), in every mode and in the firing probability; the wrapper flipped
    a coin (P = 1/2) for b = 0."""
    layer, x = _zero_unit_layer(kind, bias)
    q = None if p == "nominal" else torch.full_like(layer.weight, 0.5)
    dev = DeviceNSMLayer(layer, q, generator=gen(11))
    sure = 1.0 if bias is None or bias >= 0 else -1.0
    want_p = torch.tensor(1.0 if sure > 0 else 0.0)
    with torch.no_grad():
        assert (layer.firing_probability(x[:5])[:, 0] == want_p).all()
        assert torch.equal(dev.firing_probability(x[:5])[:, 0], layer.firing_probability(x[:5])[:, 0])
        for mode in ("sample", "mean", "threshold"):
            with nsm.forward_mode(layer, mode):
                got, ref = dev(x)[:, 0], layer(x)[:, 0]
            assert torch.equal(got, torch.full_like(got, sure)), mode
            assert torch.equal(got, ref), mode
        # the ordinary unit is unchanged: its firing rate matches its probability
        rate = (dev(x)[:, 1] > 0).double().mean()
        assert abs(rate - dev.firing_probability(x)[:, 1].double().mean()) < 0.05


def test_a_unit_whose_inputs_are_zero_has_no_variance():
    """variance="exact": a unit whose non-zero weights all meet zero inputs has u = b exactly."""
    layer = NSMLinear(4, 2, p=0.5, variance="exact", bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]]))
    x = torch.tensor([[0.0, 0.0, 1.0, -1.0]]).repeat(2000, 1)
    dev = DeviceNSMLayer(layer, torch.full_like(layer.weight, 0.3), generator=gen(12))
    with torch.no_grad():
        assert dev.firing_probability(x[:1])[0, 0] == 1.0 == layer.firing_probability(x[:1])[0, 0]
        assert torch.equal(dev(x)[:, 0], torch.ones(2000))


def test_quantization_to_zero_rows_keeps_the_convention():
    """3 levels zero a row of small weights: with and without p spread the unit fires +1 (no bias)."""
    net = nn.Sequential(NSMLinear(6, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.1, -0.1, 0.05, 0.1, -0.2, 0.1], [1.0, -1.0, 0.5, 0.3, 0.2, -0.9]]))
    x = pm1((2000, 6), seed=13)
    for dm in (DeviceModel(levels=3), DeviceModel(levels=3, p_spread=0.05)):
        with torch.no_grad():
            out = with_device(net, dm, generator=gen(14))(x)[:, 0]
        assert torch.equal(out, torch.ones(2000)), dm


# ----------------------------------------------------------------------------- what a device can store


def _old_weight_norm(layer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in favour of the parametrization
        return nn.utils.weight_norm(layer)


@pytest.mark.parametrize(
    "wrap",
    [parametrizations.weight_norm, parametrizations.spectral_norm, _old_weight_norm],
    ids=["weight_norm", "spectral_norm", "old-weight_norm"],
)
@pytest.mark.parametrize("dm", [DeviceModel(levels=2), DeviceModel(read_noise=0.5)], ids=["levels", "read"])
def test_a_computed_weight_is_refused(wrap, dm):
    """A parametrized (or hook-computed) weight is not a parameter of its layer: the device used
    to leave such a layer untouched, silently; it is refused, naming the layer."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), wrap(nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"layer '2' \(\w*Linear\) has a weight computed"):
        with_device(net, dm)
    with pytest.raises(ValueError, match="has a weight computed"):
        with_device(wrap(nn.Linear(4, 2)), dm)
    if wrap is not _old_weight_norm:  # (torch cannot deep-copy a module with the old hook)
        with_device(net, DeviceModel())  # the ideal device changes nothing: a plain copy


def test_a_model_without_weight_layers_is_refused():
    """A non-ideal device on a model with no weight layer would change nothing."""
    with pytest.raises(ValueError, match="no weight layer"):
        with_device(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), DeviceModel(read_noise=0.1))
    with_device(nn.Sequential(nn.ReLU()), DeviceModel())


# ----------------------------------------------------------------------------- DeviceModel, quantize


def test_nonlinearity_needs_levels():
    """nonlinearity shapes the conductance levels: without levels it did nothing (as clip_std, refused)."""
    with pytest.raises(ValueError, match="nonlinearity=3 .*needs levels"):
        DeviceModel(nonlinearity=3.0)
    assert DeviceModel(nonlinearity=0.0).ideal
    assert not DeviceModel(levels=4, nonlinearity=3.0).ideal


@pytest.mark.parametrize("levels", [2, 3, 8])
def test_clip_std_keeps_a_layer_of_equal_weights(levels):
    """The range is c * rms(w) (about 0, the centre of the states), not c * std(w) = 0 for a
    layer of equal weights, which sent every weight to 0."""
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.3)
    q = with_device(layer, DeviceModel(levels=levels, clip_std=2.0)).weight
    assert torch.allclose(q, torch.full((2, 3), 0.3))
    with torch.no_grad():  # nearly equal weights: all on the top state, not near 0
        layer.weight.copy_(torch.tensor([[0.30, 0.30, 0.30], [0.30, 0.30, 0.31]]))
    q = with_device(layer, DeviceModel(levels=levels, clip_std=2.0)).weight
    assert torch.allclose(q, torch.full((2, 3), 0.31))


def test_clip_std_range_is_the_rms():
    """w_max = min(max |w|, c rms(w)), rms computed by hand (offset weights: rms != std)."""
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    rms = math.sqrt((1 + 4 + 9 + 16) / 4)
    assert D._range(w, 1.0) == pytest.approx(rms)
    assert D._range(w, 2.0) == pytest.approx(4.0)  # 2 rms = 5.5 > max |w|


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("w_max", [None, 1.0])
def test_quantize_refuses_non_finite_weights_whichever_w_max(bad, w_max):
    """With an explicit w_max a NaN weight became +w_max silently; both paths refuse it."""
    w = torch.tensor([0.1, bad, -0.2])
    with pytest.raises(ValueError, match="non-finite"):
        quantize(w, 4, w_max=w_max)
