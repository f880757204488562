"""Tests of nsm.studies.devices: conductance levels, per-synapse blank-out p, read noise, robustness."""

from __future__ import annotations

import dataclasses
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import nsm  # noqa: E402
from nsm.nn.layers import NSMConv2d, NSMLinear, nsm_layers, stochastic_layers  # noqa: E402
from nsm.studies.devices import (  # noqa: E402
    P_MAX,
    P_MIN,
    DeviceModel,
    DeviceNSMLayer,
    ReadNoiseLayer,
    accuracy_under,
    conductance_states,
    quantize,
    weight_layers,
    with_device,
)
from nsm.studies.figures.devices import plot_robustness  # noqa: E402


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pm1(shape, seed: int = 0) -> torch.Tensor:
    """Random +-1 tensor."""
    return torch.randint(0, 2, shape, generator=gen(seed)).float() * 2 - 1


# ----------------------------------------------------------------------------- quantize


def test_two_levels_give_sign_times_max():
    w = torch.randn(7, 9, generator=gen(1))
    w[0, 0] = 0.0  # sgn(0) = +1
    q = quantize(w, 2)
    w_max = w.abs().max()
    assert torch.equal(q, torch.where(w >= 0, w_max, -w_max))
    assert q is not w and w[0, 0] == 0.0  # a new tensor, w untouched


@pytest.mark.parametrize("nonlinearity", [0.0, 3.0])
def test_tensor_on_the_states_is_unchanged(nonlinearity):
    states = conductance_states(6, 0.7, nonlinearity, dtype=torch.float32)
    idx = torch.randint(0, 6, (50,), generator=gen(2))
    idx[:2] = torch.tensor([0, 5])  # both end states present: max |w| = w_max
    w = states[idx]
    assert torch.equal(quantize(w, 6, nonlinearity=nonlinearity), w)


def test_linear_states_five_levels_exact():
    assert torch.equal(conductance_states(5, 2.0), torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=torch.float64))
    w = torch.tensor([-2.0, -1.4, -0.6, 0.2, 0.49, 0.5, 0.51, 1.9, 2.0])
    expect = torch.tensor([-2.0, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0])  # a tie goes up
    assert torch.equal(quantize(w, 5), expect)


def test_tiny_nonlinearity_is_linear():
    lin = conductance_states(7, 1.0)
    assert torch.allclose(conductance_states(7, 1.0, 1e-9), lin, atol=1e-8)
    w = torch.randn(1000, generator=gen(3))
    assert torch.allclose(quantize(w, 7, nonlinearity=1e-9), quantize(w, 7), atol=1e-6)


def test_nonlinearity_three_hand_computed():
    nu, L = 3.0, 5
    g = [(1 - math.exp(-nu * k / (L - 1))) / (1 - math.exp(-nu)) for k in range(L)]
    hand = torch.tensor([2 * x - 1 for x in g], dtype=torch.float64)
    assert torch.allclose(conductance_states(L, 1.0, nu), hand, atol=1e-12)
    assert hand.tolist() == pytest.approx([-1.0, 0.1105583, 0.6351490, 0.8829480, 1.0], abs=1e-7)
    w = torch.tensor([-1.0, -0.5, -0.3, 0.36, 0.4, 0.7, 0.76, 0.95], dtype=torch.float64)
    expect = hand[[0, 0, 1, 1, 2, 2, 3, 4]]
    assert torch.allclose(quantize(w, L, nonlinearity=nu), expect, atol=1e-12)


@pytest.mark.parametrize("levels,nonlinearity", [(3, 0.0), (8, 0.0), (8, 2.0), (16, 5.0)])
def test_outputs_lie_on_the_states_and_are_nearest(levels, nonlinearity):
    w = torch.randn(40, 30, generator=gen(4), dtype=torch.float64)
    q = quantize(w, levels, nonlinearity=nonlinearity)
    states = conductance_states(levels, w.abs().max().item(), nonlinearity)
    dist = (w.reshape(-1, 1) - states).abs()
    on = (q.reshape(-1, 1) - states).abs().min(1).values
    assert on.max() < 1e-12
    assert torch.allclose((w.reshape(-1) - q.reshape(-1)).abs(), dist.min(1).values, atol=1e-12)


def test_w_max_argument():
    w = torch.tensor([-0.4, 0.1, 0.4, 0.6, 3.0])
    assert torch.equal(quantize(w, 3, w_max=1.0), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(quantize(w, 3, w_max=0.0), torch.zeros(5))
    assert torch.equal(quantize(torch.zeros(4), 4), torch.zeros(4))


@pytest.mark.parametrize("levels", [1, 0, -3, 2.0, True, None, "4"])
def test_invalid_levels_raise(levels):
    with pytest.raises(ValueError, match="levels"):
        quantize(torch.randn(3), levels)


def test_invalid_w_max_and_nonlinearity_raise():
    with pytest.raises(ValueError, match="w_max"):
        quantize(torch.randn(3), 4, w_max=-1.0)
    with pytest.raises(ValueError, match="nonlinearity"):
        quantize(torch.randn(3), 4, nonlinearity=-0.5)
    with pytest.raises(ValueError, match="non-finite"):
        quantize(torch.tensor([1.0, math.inf]), 4)


# ----------------------------------------------------------------------------- DeviceModel


@pytest.mark.parametrize(
    "kw,name",
    [
        (dict(levels=1), "levels"),
        (dict(levels=3.0), "levels"),
        (dict(nonlinearity=-1.0), "nonlinearity"),
        (dict(nonlinearity=math.inf), "nonlinearity"),
        (dict(p_spread=-0.1), "p_spread"),
        (dict(p_spread=math.nan), "p_spread"),
        (dict(read_noise=-1e-3), "read_noise"),
        (dict(read_noise="0.1"), "read_noise"),
        (dict(levels=4, clip_std=0.0), "clip_std"),
        (dict(levels=4, clip_std=-1.0), "clip_std"),
        (dict(levels=4, clip_std=math.inf), "clip_std"),
        (dict(levels=4, clip_std=True), "clip_std"),
        (dict(clip_std=2.0), "needs levels"),
    ],
)
def test_device_model_validation(kw, name):
    with pytest.raises(ValueError, match=name):
        DeviceModel(**kw)


def test_device_model_frozen_and_defaults():
    d = DeviceModel()
    assert d.ideal and d.levels is None and d.p_spread == 0.0
    assert not DeviceModel(levels=4).ideal
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.levels = 3  # type: ignore[misc]


# ----------------------------------------------------------------------------- with_device


@pytest.fixture(scope="module")
def bnsm_model():
    torch.manual_seed(0)
    return nsm.build_model("bnsm", (1, 16, 16), 3)


def _layer_inputs(layer):
    if isinstance(layer, NSMConv2d):
        return pm1((4, layer.in_channels, 9, 9), seed=5)
    return pm1((4, layer.in_features), seed=5)


def test_original_untouched(bnsm_model):
    before = {k: v.clone() for k, v in bnsm_model.state_dict().items()}
    dev = with_device(bnsm_model, DeviceModel(levels=2, p_spread=0.1, read_noise=0.1), generator=gen())
    nsm.mc_predict(dev, torch.rand(3, 1, 16, 16), 2)
    after = bnsm_model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(type(m) is not DeviceNSMLayer for m in bnsm_model.modules())


@pytest.mark.parametrize("name", ["bnsm", "bnsm-unitbias"])
def test_defaults_keep_firing_probabilities(name):
    """The ideal device is the layer itself, whichever scale the bias is on (bnsm-unitbias's u
    adds b ||w||, not b: a device layer that added b would shift every unit's P)."""
    torch.manual_seed(0)
    bnsm_model = nsm.build_model(name, (1, 16, 16), 3)
    with torch.no_grad():
        for layer in nsm_layers(bnsm_model):
            layer.bias.uniform_(-1.0, 1.0, generator=gen(7))  # a bias that matters
    dev = with_device(bnsm_model, DeviceModel(), generator=gen())
    pairs = list(zip(nsm_layers(bnsm_model), nsm_layers(dev)))
    assert len(pairs) == 3
    with nsm.forward_mode(dev, "mean"), torch.no_grad():
        for orig, new in pairs:
            x = _layer_inputs(orig)
            expect = 2 * orig.firing_probability(x) - 1
            assert (new(x) - expect).abs().max() < 1e-5
            # the device layer's Gaussian-law moments with the nominal p, as a tensor or None
            for p in (None, torch.full_like(orig.weight, orig.noise.mean)):
                wrapped = DeviceNSMLayer(new, p)
                assert (wrapped(x) - expect).abs().max() < 1e-5
                assert (wrapped.firing_probability(x) - orig.firing_probability(x)).abs().max() < 1e-5


def test_two_levels_every_weight_layer(bnsm_model):
    dev = with_device(bnsm_model, DeviceModel(levels=2))
    orig, new = weight_layers(bnsm_model), weight_layers(dev)
    assert len(orig) == len(new) == 4  # 2 conv, fc, readout
    for a, b in zip(orig, new):
        w_max = a.weight.abs().max()
        assert set(b.weight.unique().tolist()) == {-w_max.item(), w_max.item()}
        assert torch.equal(b.weight, torch.where(a.weight >= 0, w_max, -w_max))
        assert torch.equal(b.bias, a.bias)  # peripheral: full precision
        if hasattr(a, "magnitude"):
            assert torch.equal(b.magnitude, a.magnitude)


def test_clip_std_sets_the_range_per_layer():
    # w = (-3, -1, 0, 1, 3, 0.2), rms = sqrt(mean(w^2)) = sqrt(20.04 / 6) = 1.83
    layer = nn.Linear(6, 1, bias=False)
    w = torch.tensor([[-3.0, -1.0, 0.0, 1.0, 3.0, 0.2]])
    with torch.no_grad():
        layer.weight.copy_(w)
    rms = math.sqrt(sum(v * v for v in w.reshape(-1).tolist()) / 6)
    assert 2.0 * rms > 3.0  # 2 rms = 3.66 > max |w| = 3: the range stays max |w|, states -3, 0, 3
    q = with_device(layer, DeviceModel(levels=3, clip_std=2.0)).weight
    assert torch.equal(q, torch.tensor([[-3.0, 0.0, 0.0, 0.0, 3.0, 0.0]]))
    q = with_device(layer, DeviceModel(levels=3, clip_std=0.5)).weight  # range 0.5 rms = 0.91
    s = 0.5 * rms
    assert torch.allclose(q, torch.tensor([[-s, -s, 0.0, s, s, 0.0]]))
    q = with_device(layer, DeviceModel(levels=2, clip_std=0.5)).weight  # the sign, times the clipped range
    assert torch.allclose(q, torch.tensor([[-s, -s, s, s, s, s]]))


def test_clip_std_keeps_the_small_weights_of_a_trained_like_layer():
    # Gaussian weights, 20000 of them: max |w| is about 4.4 std, so 3 levels on +-max |w| send
    # |w| < 2.2 std (97 %) to 0; on +-2 std only |w| < 1 std (68 %)
    g = torch.Generator().manual_seed(3)
    layer = nn.Linear(400, 50)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(50, 400, generator=g))
    zero_max = (with_device(layer, DeviceModel(levels=3)).weight == 0).float().mean().item()
    zero_clip = (with_device(layer, DeviceModel(levels=3, clip_std=2.0)).weight == 0).float().mean().item()
    assert zero_max > 0.95 and abs(zero_clip - 0.683) < 0.01  # binomial sd 0.003


def test_weight_normalized_layers_quantize_v_only():
    model = nsm.build_model("dcnn-wn", (1, 16, 16), 3)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "magnitude"):
                m.magnitude.uniform_(0.5, 2.0)
    dev = with_device(model, DeviceModel(levels=3))
    for a, b in zip(weight_layers(model), weight_layers(dev)):
        assert b.weight.unique().numel() <= 3
        if hasattr(a, "magnitude"):
            assert torch.equal(a.magnitude, b.magnitude)


# ----------------------------------------------------------------------------- p spread


def test_per_synapse_p_statistics():
    layer = NSMLinear(200, 100, p=0.5)
    dev = with_device(layer, DeviceModel(p_spread=0.1), generator=gen(6))
    assert isinstance(dev, DeviceNSMLayer) and dev.p.shape == layer.weight.shape
    n = dev.p.numel()
    # clipping at 0.01 / 0.99 is 4.9 sigma away: negligible. Standard errors: of the mean
    # 0.1/sqrt(n) = 7e-4, of the std ~ 0.1/sqrt(2n) = 5e-4; we allow 5 of them.
    assert abs(dev.p.mean().item() - 0.5) < 5 * 0.1 / math.sqrt(n)
    assert abs(dev.p.std().item() - 0.1) < 5 * 0.1 / math.sqrt(2 * n)
    wide = with_device(layer, DeviceModel(p_spread=0.5), generator=gen(6))
    assert wide.p.min().item() == pytest.approx(P_MIN) and wide.p.max().item() == pytest.approx(P_MAX)
    # drawn once: fixed across passes
    p0 = dev.p.clone()
    dev(pm1((3, 200)))
    assert torch.equal(dev.p, p0)


def _tiny_linear():
    layer = NSMLinear(3, 2, p=0.3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]))
        layer.magnitude.copy_(torch.tensor([0.8, 1.6]))
        layer.bias.copy_(torch.tensor([0.1, -0.2]))
    p = torch.tensor([[0.2, 0.5, 0.9], [0.05, 0.6, 0.3]])
    return layer, p


def test_moments_by_hand_linear():
    layer, p = _tiny_linear()
    dev = DeviceNSMLayer(layer, p)
    z = torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]])
    mean, var = dev.moments(z)
    c = math.sqrt(2 * 0.3 * 0.7)
    W, P, beta, b = layer.weight.tolist(), p.tolist(), [0.8, 1.6], [0.1, -0.2]
    for n in range(2):
        for i in range(2):
            a = beta[i] * c - 0.3
            e = sum((P[i][j] + a) * W[i][j] * z[n, j].item() for j in range(3)) + b[i]
            v = sum(P[i][j] * (1 - P[i][j]) * W[i][j] ** 2 * z[n, j].item() ** 2 for j in range(3))
            assert mean[n, i].item() == pytest.approx(e, abs=1e-6)
            assert var[n, i].item() == pytest.approx(v, abs=1e-6)


def test_moments_by_hand_conv():
    layer = NSMConv2d(2, 3, 2, p=0.25)
    with torch.no_grad():
        layer.magnitude.uniform_(0.5, 1.5, generator=gen(7))
    p = torch.rand(layer.weight.shape, generator=gen(8)) * 0.8 + 0.1
    dev = DeviceNSMLayer(layer, p)
    z = pm1((1, 2, 3, 3), seed=9)
    mean, var = dev.moments(z)
    assert mean.shape == var.shape == (1, 3, 2, 2)
    c = layer.noise.c
    for o in range(3):
        a = layer.magnitude[o].item() * c - 0.25
        for r in range(2):
            for s in range(2):
                patch = z[0, :, r : r + 2, s : s + 2]
                w, q = layer.weight[o], p[o]
                e = ((q + a) * w * patch).sum().item() + layer.bias[o].item()
                v = (q * (1 - q) * w * w * patch * patch).sum().item()
                assert mean[0, o, r, s].item() == pytest.approx(e, abs=1e-5)
                assert var[0, o, r, s].item() == pytest.approx(v, abs=1e-5)


@pytest.mark.parametrize("variance", ["norm", "exact"])
@pytest.mark.parametrize("kind", ["linear", "conv", "conv-padded"])
def test_a_wrapped_layer_at_its_nominal_p_keeps_its_law_for_real_valued_inputs(variance, kind):
    # in mode "mean" a hidden layer reads erf(t), not +-1: the wrapper's variance must be the
    # layer's own (variance="norm" takes z^2 = 1), not the z^2 form, or a spread of 1e-9
    # would change the mean-field prediction (found by review: up to 0.04 in probability)
    torch.manual_seed(3)
    if kind == "linear":
        layer, x = NSMLinear(12, 5, p=0.3, variance=variance), torch.rand(7, 12) * 2 - 1
    else:
        layer = NSMConv2d(2, 3, 3, p=0.3, padding=1 if kind == "conv-padded" else 0, variance=variance)
        x = torch.rand(4, 2, 6, 6) * 2 - 1
    with torch.no_grad():
        layer.bias.uniform_(-0.5, 0.5)
        layer.magnitude.uniform_(0.5, 1.5)
    nominal = torch.full_like(layer.weight, 0.3)
    dev = DeviceNSMLayer(layer, nominal)
    want = layer.firing_probability(x)
    assert torch.allclose(dev.firing_probability(x), want, atol=1e-6)
    with nsm.forward_mode(layer, "mean"):
        assert torch.allclose(dev(x), layer(x), atol=1e-6)
        assert torch.allclose(dev(x), 2 * want - 1, atol=1e-6)


@pytest.mark.parametrize("bias_scale", ["weight", "unit"])
def test_both_wrappers_give_the_bias_the_norm_of_the_weight_read(bias_scale):
    # ReadNoiseLayer runs the layer's own pass with the read weight, so for bias_scale="unit"
    # its bias enters as b ||w_read||; DeviceNSMLayer must do the same (it used ||w_stored||)
    torch.manual_seed(0)
    layer = NSMLinear(40, 6, p=0.5, bias_scale=bias_scale)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(6))
    z = pm1((9, 40), seed=4)
    w_read = layer.weight.detach() + 0.2 * layer.weight.abs().max() * torch.randn(layer.weight.shape, generator=gen(5))
    with torch.no_grad():  # the layer as it computes with the read weight in place of its own
        read = NSMLinear(40, 6, p=0.5, bias_scale=bias_scale)
        read.load_state_dict({**layer.state_dict(), "weight": w_read})
        want = read.firing_probability(z)
    got = DeviceNSMLayer(layer).firing_probability(z, w_read)
    assert torch.allclose(got, want, atol=1e-6)


def test_modes_and_empirical_firing_rate():
    layer, p = _tiny_linear()
    dev = DeviceNSMLayer(layer, p, generator=gen(10))
    z = torch.tensor([1.0, -1.0, 1.0])
    P = dev.firing_probability(z.unsqueeze(0))[0]  # Phi(E[u] / sqrt(Var[u]))
    mean, var = dev.moments(z.unsqueeze(0))
    phi = 0.5 * (1 + torch.erf(mean / torch.sqrt(2 * var)))[0]
    assert torch.allclose(P, phi)
    n = 20000
    out = dev(z.expand(n, 3))
    assert set(out.unique().tolist()) <= {-1.0, 1.0}
    rate = (out > 0).float().mean(0)
    se = torch.sqrt(P * (1 - P) / n)
    assert ((rate - P).abs() < 5 * se).all(), (rate, P)
    with nsm.forward_mode(dev, "mean"):
        assert torch.allclose(dev(z.unsqueeze(0))[0], 2 * P - 1, atol=1e-6)
    with nsm.forward_mode(dev, "threshold"):
        assert torch.equal(dev(z.unsqueeze(0))[0], torch.where(mean[0] >= 0, 1.0, -1.0))
    assert dev.mode == "sample" and layer.mode == "sample"  # restored


def test_p_spread_found_by_mc_and_needs_bernoulli():
    model = nsm.build_model("bnsm", (1, 16, 16), 3)
    dev = with_device(model, DeviceModel(p_spread=0.05), generator=gen())
    assert sum(isinstance(m, DeviceNSMLayer) for m in dev.modules()) == 3
    assert len(nsm_layers(dev)) == len(nsm_layers(model))  # the inner layers stay, for forward_mode
    # and the wrappers are stochastic themselves (Monte-Carlo prediction sets their copies)
    assert len(stochastic_layers(dev)) == len(stochastic_layers(model)) + 3
    with nsm.forward_mode(dev, "threshold"):
        assert all(m.mode == "threshold" for m in dev.modules() if isinstance(m, DeviceNSMLayer))
        x = torch.rand(2, 1, 16, 16)
        assert torch.equal(dev(x), dev(x))  # no read noise: the threshold network is deterministic
    for name in ("dcnn", "gnsm"):
        with pytest.raises(ValueError, match="p_spread"):
            with_device(nsm.build_model(name, (1, 16, 16), 3), DeviceModel(p_spread=0.1))


def test_invalid_wrapper_arguments():
    layer, p = _tiny_linear()
    with pytest.raises(ValueError, match="shaped like the weight"):
        DeviceNSMLayer(layer, p.t())
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        DeviceNSMLayer(layer, p * 2)
    with pytest.raises(ValueError, match="NSMLinear or NSMConv2d"):
        DeviceNSMLayer(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="device"):
        with_device(layer, {"levels": 2})
    with pytest.raises(ValueError, match="generator"):
        with_device(layer, DeviceModel(), generator=0)


# ----------------------------------------------------------------------------- read noise


@pytest.mark.parametrize("kind", ["linear", "nsm"])
def test_read_noise(kind):
    torch.manual_seed(11)
    layer = nn.Linear(50, 40) if kind == "linear" else NSMLinear(50, 40)
    dev = with_device(layer, DeviceModel(levels=8, read_noise=0.05), generator=gen(12))
    assert isinstance(dev, ReadNoiseLayer)
    x = pm1((5, 50))
    if kind == "nsm":  # read noise stays on in the deterministic modes
        with nsm.forward_mode(dev, "mean"):
            assert not torch.equal(dev(x), dev(x))
    else:
        assert not torch.equal(dev(x), dev(x))
    w = dev.layer.weight
    w_max = w.abs().max().item()
    assert w.unique().numel() <= 8 and w_max == pytest.approx(layer.weight.abs().max().item())
    diff = torch.cat([(dev.read_weight() - w).flatten() for _ in range(5)])
    # relative standard error of an empirical std of n normals: 1/sqrt(2n) = 0.5% here; allow 5
    n = diff.numel()
    assert diff.std().item() == pytest.approx(0.05 * w_max, rel=5 / math.sqrt(2 * n))
    assert abs(diff.mean().item()) < 5 * 0.05 * w_max / math.sqrt(n)


def test_read_noise_with_p_spread_uses_read_weight():
    layer, p = _tiny_linear()
    dev = DeviceNSMLayer(layer, p, read_noise=0.1, generator=gen(13))
    z = pm1((2, 3))
    m1, _ = dev.moments(z)
    m2, _ = dev.moments(z)
    assert not torch.equal(m1, m2)
    w_read = dev.read_weight()
    exact, _ = DeviceNSMLayer(layer, p).moments(z, w_read)
    again, _ = dev.moments(z, w_read)
    assert torch.equal(exact, again)
    assert (w_read - layer.weight).std().item() > 0


# ----------------------------------------------------------------------------- networks


def test_mc_predict_on_device_networks():
    torch.manual_seed(14)
    x = torch.rand(6, 1, 16, 16)
    bnsm = with_device(
        nsm.build_model("bnsm", (1, 16, 16), 3), DeviceModel(levels=4, p_spread=0.1, read_noise=0.05), generator=gen(15)
    )
    probs = nsm.mc_predict(bnsm, x, 5)
    assert probs.shape == (6, 3) and torch.allclose(probs.sum(-1), torch.ones(6))
    # the generator drives every draw of the copy (p_ij, read noise, the layers' noise)
    model = nsm.build_model("bnsm", (1, 16, 16), 3)
    dm = DeviceModel(levels=4, p_spread=0.1, read_noise=0.05)
    assert torch.equal(
        nsm.mc_predict(with_device(model, dm, generator=gen(19)), x, 3),
        nsm.mc_predict(with_device(model, dm, generator=gen(19)), x, 3),
    )
    with pytest.raises(ValueError, match="already holds device layers"):
        with_device(bnsm, DeviceModel(levels=2))
    dcnn = with_device(
        nsm.build_model("dcnn", (1, 16, 16), 3),
        DeviceModel(levels=4, nonlinearity=2.0, read_noise=0.05),
        generator=gen(16),
    )
    assert all(isinstance(m, ReadNoiseLayer) for m in stochastic_layers(dcnn))  # only the read noise
    assert sum(isinstance(m, ReadNoiseLayer) for m in dcnn.modules()) == 4
    probs = nsm.mc_predict(dcnn, x, 1)
    assert probs.shape == (6, 3) and torch.allclose(probs.sum(-1), torch.ones(6))


def test_accuracy_under():
    torch.manual_seed(17)
    x, y = torch.rand(6, 1, 16, 16), torch.randint(0, 3, (6,))
    settings = {
        "full": DeviceModel(),
        2: DeviceModel(levels=2),
        "all": DeviceModel(levels=4, p_spread=0.1, read_noise=0.1),
    }
    model = nsm.build_model("bnsm", (1, 16, 16), 3)
    acc = accuracy_under(model, x, y, settings, samples=2, batch_size=4, generator=gen(18))
    assert list(acc) == list(settings) and all(0.0 <= v <= 1.0 for v in acc.values())
    # every draw comes from the generator: the same seed gives the same accuracies
    again = accuracy_under(model, x, y, {"all": settings["all"]}, samples=2, batch_size=4, generator=gen(18))
    assert (
        again["all"]
        == accuracy_under(model, x, y, {"all": settings["all"]}, samples=2, batch_size=4, generator=gen(18))["all"]
    )
    dcnn = nsm.build_model("dcnn", (1, 16, 16), 3)
    acc = accuracy_under(dcnn, x, y, {0.0: DeviceModel(), 0.1: DeviceModel(read_noise=0.1)}, samples=50)
    assert set(acc) == {0.0, 0.1} and all(0.0 <= v <= 1.0 for v in acc.values())
    with pytest.raises(ValueError, match="p_spread"):
        accuracy_under(dcnn, x, y, {"s": DeviceModel(p_spread=0.1)}, samples=1)
    with pytest.raises(ValueError, match="samples"):
        accuracy_under(dcnn, x, y, settings, samples=0)
    with pytest.raises(ValueError, match="rows"):
        accuracy_under(dcnn, x, y[:5], settings, samples=1)


def test_plot_robustness():
    curves = {"bNSM": {0.1: 0.9, 0.0: 0.95, 0.2: 0.8}, "dCNN": {0.0: 0.97, 0.2: 0.5}}
    fig, ax = plt.subplots()
    out = plot_robustness(curves, ax=ax, xlabel="read noise")
    assert out is ax and len(ax.get_lines()) == 2
    xs, ys = ax.get_lines()[0].get_data()
    assert list(xs) == [0.0, 0.1, 0.2] and list(ys) == pytest.approx([95.0, 90.0, 80.0])
    assert ax.get_xlabel() == "read noise" and "%" in ax.get_ylabel()
    plt.close(fig)
    ax2 = plot_robustness({"m": {1: 0.5}})
    assert len(ax2.get_lines()) == 1
    plt.close(ax2.figure)
    with pytest.raises(ValueError, match="curves"):
        plot_robustness({})
