"""Each baseline's defining property (SI Table 5, docs/design.md §7)."""

import math

import pytest
import torch
from torch import nn

import nsm
from nsm.models.baselines import (
    BinaryConv2d,
    BinaryLinear,
    NoisyReLU,
    SigmoidBernoulli,
    SignUnit,
    WNConv2d,
    WNLinear,
    after_step,
)
from nsm.models.s2m import SynapticSamplingMachine
from nsm.nn.layers import nsm_layers
from nsm.training.loop import train_step


def _outputs_of(model, kind, x):
    """The outputs of every module of type ``kind`` in a forward pass of x."""
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
        for m in model.modules()
        if isinstance(m, kind)
    ]
    out = model(x)
    for h in hooks:
        h.remove()
    return out, seen


def test_bd_units_are_deterministic_pm1():
    torch.manual_seed(0)
    model = nsm.build_model("bd")
    x = torch.rand(5, 1, 28, 28)
    out1, states1 = _outputs_of(model, SignUnit, x)
    out2, states2 = _outputs_of(model, SignUnit, x)
    assert len(states1) == 3
    for a, b in zip(states1, states2):
        assert set(a.unique().tolist()) <= {-1.0, 1.0}
        assert torch.equal(a, b)
    assert torch.equal(out1, out2)
    # straight-through: the gradient of sgn is the identity
    u = torch.tensor([-3.0, -0.2, 0.0, 0.4, 5.0], requires_grad=True)
    SignUnit()(u).backward(torch.arange(5.0))
    assert torch.equal(u.grad, torch.arange(5.0))


def test_wbd_output_unchanged_when_a_weight_row_is_scaled():
    torch.manual_seed(1)
    model = nsm.build_model("wbd")
    x = torch.rand(6, 1, 28, 28)
    before = model(x)
    with torch.no_grad():
        layers = [m for m in model.modules() if isinstance(m, (WNConv2d, WNLinear))]
        assert len(layers) == 3
        layers[0].weight[3].mul_(7.5)  # one filter of the first convolution
        layers[2].weight[10].mul_(0.01)  # one row of the fully connected layer
    assert torch.allclose(model(x), before, atol=1e-5)


def test_weight_norm_layers_compute_g_v_over_norm():
    torch.manual_seed(2)
    lin = WNLinear(4, 3)
    with torch.no_grad():
        lin.magnitude.copy_(torch.tensor([1.0, 2.0, 0.5]))
    x = torch.randn(2, 4)
    w = lin.weight / lin.weight.norm(dim=1, keepdim=True) * lin.magnitude[:, None]
    assert torch.allclose(lin(x), x @ w.t() + lin.bias, atol=1e-6)


def test_sn_noise_has_the_stated_std():
    g = torch.Generator().manual_seed(3)
    unit = NoisyReLU(0.1, generator=g)
    u = torch.full((400_000,), 5.0)  # far from the kink: the output is u + eps
    z = unit(u)
    # std of the sample std ~ 0.1 / sqrt(2n) = 1.1e-4; tolerance 10x that
    assert abs(z.std().item() - 0.1) < 1.2e-3
    assert abs(z.mean().item() - 5.0) < 1e-3  # std of the mean 1.6e-4
    with nsm.forward_mode(unit, "threshold"):
        assert torch.equal(unit(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))
    model = nsm.build_model("sn")
    noisy = [m for m in model.modules() if isinstance(m, NoisyReLU)]
    assert [m.sigma for m in noisy] == [0.1] * 3
    assert sum(isinstance(m, (WNConv2d, WNLinear)) for m in model.modules()) == 3


def test_sn_mean_mode_is_the_expectation_of_its_noisy_relu():
    # it returned ReLU(u) (the threshold mode); E[ReLU(u + 0.1 eps)] differs by up to 0.04 near 0
    unit = NoisyReLU(0.1, generator=torch.Generator().manual_seed(5))
    u = torch.tensor([-0.3, -0.2, -0.05, 0.0, 0.05, 0.2, 1.0], dtype=torch.float64)
    n = 400_000
    draws = unit(u.expand(n, -1))  # sample mode: Monte-Carlo of the expectation
    se = draws.std(0) / n**0.5
    with nsm.forward_mode(unit, "mean"):
        mean = unit(u)
    assert ((mean - draws.mean(0)).abs() < 5 * se + 1e-12).all(), (mean, draws.mean(0))
    assert mean[3].item() == pytest.approx(0.1 / (2 * math.pi) ** 0.5, rel=1e-12)  # sigma phi(0)


def test_bn_evaluates_in_one_pass_and_stochastic_models_in_s():
    from nsm.studies.evaluate import _samples_for

    assert _samples_for(nsm.build_model("bn"), 100) == 1  # its NSM layers are fixed noise-free
    assert _samples_for(nsm.build_model("bnsm"), 100) == 100
    assert _samples_for(nsm.build_model("dcnn"), 100) == 1


def test_bn_is_the_noise_free_nsm_probability_path():
    torch.manual_seed(4)
    bn = nsm.build_model("bn")
    torch.manual_seed(4)
    bnsm = nsm.build_model("bnsm")
    x = torch.rand(8, 1, 28, 28)
    out_bn, states = _outputs_of(bn, nsm.NSMConv2d, x)
    # each layer's output is sgn(t) of its drive t (the noise removed)
    first = bn[1]
    assert torch.equal(states[0], torch.where(first.drive(bn[0](x)) >= 0, 1.0, -1.0))
    # same as the bNSM's threshold mode, values and gradients, and deterministic
    out_bn.sum().backward()
    with nsm.forward_mode(bnsm, "threshold"):
        out_nsm = bnsm(x)
    out_nsm.sum().backward()
    assert torch.equal(out_bn, out_nsm)
    for (name, p), q in zip(bn.named_parameters(), bnsm.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    with nsm.forward_mode(bn, "sample"):  # no mode switches the noise back on
        assert torch.equal(bn(x), out_bn.detach())
    assert {layer.fixed_mode for layer in nsm_layers(bn)} == {"threshold"}


def test_stnn_firing_frequency_matches_its_sigmoid():
    g = torch.Generator().manual_seed(5)
    unit = SigmoidBernoulli(generator=g)
    u = torch.linspace(-3, 3, 13)
    n = 40_000
    z = unit(u.expand(n, -1))
    freq = (z == 1).float().mean(0)
    p = torch.sigmoid(u)
    tol = 4.5 * torch.sqrt(p * (1 - p) / n)  # 4.5 binomial standard errors
    assert ((freq - p).abs() <= tol).all(), (freq - p).abs().max()
    # gradient of E[z] = 2 sigmoid(u) - 1
    v = u.clone().requires_grad_(True)
    unit(v).sum().backward()
    assert torch.allclose(v.grad, 2 * p * (1 - p), atol=1e-6)
    model = nsm.build_model("stnn")
    assert sum(isinstance(m, SigmoidBernoulli) for m in model.modules()) == 3
    assert not any(isinstance(m, (WNConv2d, WNLinear)) for m in model.modules())


def test_bnn_forward_uses_only_pm1_weights_and_clips():
    torch.manual_seed(6)
    lin = BinaryLinear(5, 3)
    with torch.no_grad():
        lin.weight.mul_(4)  # some weights beyond [-1, 1]
    x = torch.randn(4, 5)
    expect = x @ torch.where(lin.weight >= 0, 1.0, -1.0).t() + lin.bias
    assert torch.allclose(lin(x), expect, atol=1e-6)
    lin(x).sum().backward()
    outside = lin.weight.abs() > 1
    assert outside.any() and lin.weight.grad[outside].abs().sum() == 0
    assert (lin.weight.grad[~outside] != 0).any()
    conv = BinaryConv2d(2, 3, 3)
    xc = torch.randn(1, 2, 5, 5)
    ref = nn.functional.conv2d(xc, torch.where(conv.weight >= 0, 1.0, -1.0), conv.bias)
    assert torch.allclose(conv(xc), ref, atol=1e-5)
    # a training step leaves every real-valued weight in [-1, 1]
    model = nsm.build_model("bnn")
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    train_step(model, opt, torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]))
    binary = [m for m in model.modules() if isinstance(m, (BinaryLinear, BinaryConv2d))]
    assert len(binary) == 3 and all(m.weight.abs().max() <= 1 for m in binary)
    after_step(model)  # idempotent


def _tiny_s2m():
    s2m = SynapticSamplingMachine(2, 2, hidden=2, label_copies=1, p=0.5)
    with torch.no_grad():
        s2m.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0], [2.0, 0.0], [0.0, 2.0]]))
        s2m.visible_bias.copy_(torch.tensor([0.1, -0.1, 0.0, -2.0]))
        s2m.hidden_bias.copy_(torch.tensor([0.0, -0.25]))
    return s2m


def test_s2m_cd_update_matches_a_hand_computation():
    # noise off ("threshold"): a unit fires iff p * (input . w) + b > 0, computed by hand:
    #   v0 = [1, 0 | 0, 1]           (pixels 0.9, 0.2; label 1)
    #   h0: 0.5 * (1 + 0) + 0 = 0.5 > 0;  0.5 * (-1 + 2) - 0.25 = 0.25 > 0   -> [1, 1]
    #   v1: 0.5 * [0, 0, 2, 2] + [0.1, -0.1, 0, -2] = [0.1, -0.1, 1, -1]     -> [1, 0, 1, 0]
    #   h1: 0.5 * (1 + 2) = 1.5 > 0;  0.5 * (-1 + 0) - 0.25 < 0              -> [1, 0]
    s2m = _tiny_s2m()
    stats = None
    with nsm.forward_mode(s2m, "threshold"):
        stats = s2m.contrastive_divergence(torch.tensor([[0.9, 0.2]]), torch.tensor([1]))
    # grad = -(<v0 h0> - <v1 h1>) = v1 h1^T - v0 h0^T
    assert torch.equal(s2m.weight.grad, torch.tensor([[0.0, -1.0], [0.0, 0.0], [1.0, 0.0], [-1.0, -1.0]]))
    assert torch.equal(s2m.visible_bias.grad, torch.tensor([0.0, 0.0, 1.0, -1.0]))
    assert torch.equal(s2m.hidden_bias.grad, torch.tensor([0.0, -1.0]))
    assert stats == {"loss": 0.0, "wrong": 1}  # pixels reconstructed; the label votes for 0


def test_s2m_samplers_follow_the_blank_out_law():
    s2m = _tiny_s2m()
    s2m.generator = torch.Generator().manual_seed(7)
    v = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    n = 40_000
    # exact law: h_0 fires iff 1*xi_0 - 1*xi_1 + 2*xi_2 > 0 (bias 0), xi ~ Bern(1/2):
    # masks (x0, x1, x2) with a positive sum: all but (0,0,0), (0,1,0), (1,1,0)... enumerate
    exact = sum(1 for m in range(8) if (m & 1) - ((m >> 1) & 1) + 2 * ((m >> 2) & 1) > 0) / 8
    s2m.sampler = "synapse"
    freq = s2m.sample_hidden(v.expand(n, -1))[:, 0].mean().item()
    assert abs(freq - exact) < 4.5 * math.sqrt(exact * (1 - exact) / n)
    # the probability sampler draws u ~ N(E, Var): its frequency is Phi(E / std) ("mean" mode)
    s2m.sampler = "probability"
    freq = s2m.sample_hidden(v.expand(n, -1)).mean(0)
    with nsm.forward_mode(s2m, "mean"):
        phi = s2m.sample_hidden(v)[0]
    # E = 0.5 * 2 = 1, Var = 0.25 * (1 + 1 + 4) = 1.5 for unit 0
    assert math.isclose(phi[0].item(), 0.5 * (1 + math.erf(1 / math.sqrt(3.0))), rel_tol=1e-6)
    assert ((freq - phi).abs() <= 4.5 * torch.sqrt(phi * (1 - phi) / n) + 1e-9).all()


def test_s2m_classifies_by_label_counts_and_checks_input():
    s2m = SynapticSamplingMachine(784, 10, hidden=20, gibbs_steps=5)
    counts = s2m.label_counts(torch.rand(3, 1, 28, 28))
    assert counts.shape == (3, 10) and counts.min() >= 0 and counts.max() <= 5 * s2m.label_copies
    x = torch.rand(3, 1, 28, 28)
    with nsm.forward_mode(s2m, "threshold"):  # deterministic: forward is log(1 + counts)
        assert torch.equal(s2m(x), torch.log1p(s2m.label_counts(x)))
    with pytest.raises(ValueError, match="784 pixels"):
        s2m(torch.rand(2, 1, 20, 20))
    with pytest.raises(ValueError, match="labels must be in"):
        s2m.contrastive_divergence(torch.rand(2, 1, 28, 28), torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="S2M sampler"):
        SynapticSamplingMachine(sampler="neuron")


def test_mc_dropout_drops_at_rate_p_in_eval_and_is_identity_in_mean_mode():
    from nsm.models.baselines import MCDropout

    torch.manual_seed(0)
    layer = MCDropout(0.3).eval()  # eval() does not switch it off: the noise is the model
    x = torch.ones(200_000)
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.3) < 5 * (0.3 * 0.7 / x.numel()) ** 0.5  # 5 binomial SE
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))
    with nsm.forward_mode(layer, "mean"):
        assert torch.equal(layer(x), x)
    with pytest.raises(ValueError, match="dropout p"):
        MCDropout(1.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_stochastic_units_fire_at_their_law(dtype):
    """StNN's sigmoid units and the S2M's blank-out synapses in half precision fire with the
    probability they compute, not with that of a rounded half-precision uniform (bfloat16 StNN
    at sigmoid(u) = 0.3008 fired 0.3036: 10 standard errors). 2M draws, 4 standard errors."""
    n = 2_000_000
    unit = SigmoidBernoulli(generator=torch.Generator().manual_seed(3))
    u = torch.full((n,), -0.8425, dtype=dtype)
    p = torch.sigmoid(u[:1].double()).item()  # the probability of the rounded drive
    freq = (unit(u) == 1).double().mean().item()
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n), (freq, p)
    s2m = SynapticSamplingMachine(
        1, 2, hidden=1, label_copies=1, p=0.3, sampler="synapse", generator=torch.Generator().manual_seed(4)
    )
    x, w, bias = torch.ones(n, 1, dtype=dtype), torch.ones(1, 1, dtype=dtype), torch.full((1,), -0.5, dtype=dtype)
    freq = s2m._fire(x, w, bias).double().mean().item()  # fires iff its one synapse transmits
    assert abs(freq - 0.3) < 4 * math.sqrt(0.21 / n), freq


def test_noisy_rectifier_mean_is_exact_in_the_lower_tail():
    """E[ReLU(u + sigma eps)] = sigma (phi(z) + z Phi(z)), z = u / sigma: Phi from erfc, which
    keeps its digits where 1 + erf(z / sqrt 2) cancels (at z = -7 that cost 0.1%)."""
    sigma = 0.1
    unit = NoisyReLU(sigma)
    unit.mode = "mean"
    zs = [-7.0, -5.0, -2.0, 0.0, 3.0]
    got = unit(torch.tensor(zs, dtype=torch.float64) * sigma).tolist()
    for z, g in zip(zs, got):
        want = sigma * (math.exp(-z * z / 2) / math.sqrt(2 * math.pi) + z * 0.5 * math.erfc(-z / math.sqrt(2)))
        assert g == pytest.approx(want, rel=1e-7, abs=0), z
