"""``bias_scale``: the bias on the scale of u (the paper: P uses b / (c ||w||)) or on the
unit-norm weights (P uses b / c, as the firing probability of the authors' code)."""

import math

import pytest
import torch

import nsm

N = 20_000


def _linear(bias_scale, **kw):
    g = torch.Generator().manual_seed(0)
    layer = nsm.NSMLinear(400, 5, bias_scale=bias_scale, dtype=torch.float64, **kw)
    with torch.no_grad():
        layer.weight.normal_(generator=g).mul_(0.1)
        layer.magnitude.copy_(torch.tensor([0.2, 0.5, 1.0, 0.7, 0.3]))
        layer.bias.copy_(torch.tensor([-1.0, -0.4, 0.0, 0.3, 0.9]))
    x = torch.randint(0, 2, (1, 400), generator=g).double() * 2 - 1
    return layer, x


@pytest.mark.parametrize("noise", ["bernoulli", "gaussian"])
def test_the_unit_scale_puts_b_over_c_in_the_drive(noise):
    layer, x = _linear("unit", noise=noise, p=0.5, sigma=0.8)
    w = layer.weight
    c = math.sqrt(2 * (0.25 if noise == "bernoulli" else 0.64))  # sqrt(2 Var[xi])
    t = layer.magnitude * (x @ w.T) / w.norm(dim=1) + layer.bias / c
    p = 0.5 * (1 + torch.erf(t))
    assert torch.allclose(layer.firing_probability(x), p, rtol=0, atol=1e-12)
    paper, _ = _linear("weight", noise=noise, p=0.5, sigma=0.8)
    t_paper = paper.magnitude * (x @ w.T) / w.norm(dim=1) + paper.bias / (c * w.norm(dim=1))
    assert torch.allclose(paper.drive(x), t_paper, rtol=0, atol=1e-12)
    assert not torch.allclose(layer.drive(x), paper.drive(x))  # the two differ for the same b


@pytest.mark.parametrize("sampler", ["neuron", "probability", "synapse"])
def test_sampled_states_fire_at_the_unit_scale_probability(sampler):
    """Gaussian synapses (the erf law is exact); tolerance 4.5 binomial standard deviations."""
    layer, x = _linear("unit", noise="gaussian", sigma=1.0, sampler=sampler, generator=torch.Generator().manual_seed(1))
    p = layer.firing_probability(x).detach()[0]
    assert p.min() > 0.02 and p.max() < 0.98
    chunk = 1000 if sampler == "synapse" else N
    with torch.no_grad():
        hits = sum((layer(x.expand(chunk, -1)) > 0).double().sum(0) for _ in range(N // chunk))
    assert torch.all((hits / N - p).abs() <= 4.5 * torch.sqrt(p * (1 - p) / N)), (hits / N, p)


def test_a_padded_convolution_adds_b_over_c_at_every_position():
    """At a zero-padded border ||w|| is that of the weights meeting the image; with the unit
    scale the bias term is b / c there too (the bias is scaled by the same norm)."""
    torch.manual_seed(2)
    kw = dict(padding=2, noise="gaussian", sigma=1.0, dtype=torch.float64)
    unit, paper = nsm.NSMConv2d(3, 4, 5, bias_scale="unit", **kw), nsm.NSMConv2d(3, 4, 5, **kw)
    paper.load_state_dict(unit.state_dict())
    x = torch.randint(0, 2, (2, 3, 7, 7)).double() * 2 - 1
    with torch.no_grad():
        paper.bias.zero_()
    c = math.sqrt(2.0)
    expected = paper.drive(x) + unit.bias.view(4, 1, 1) / c
    assert torch.allclose(unit.drive(x), expected, rtol=0, atol=1e-12)


def test_one_function_under_b_weight_equals_b_unit_norm_w_trained_differently():
    unit, x = _linear("unit", noise="bernoulli", generator=torch.Generator().manual_seed(3))
    paper, _ = _linear("weight", noise="bernoulli", generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        paper.bias.copy_(unit.bias * unit.weight.norm(dim=1))
    xs = x.expand(64, -1)
    assert torch.equal(unit(xs), paper(xs))  # the same noise gives the same states
    assert torch.allclose(unit.firing_probability(x), paper.firing_probability(x), rtol=0, atol=1e-12)
    for layer in (unit, paper):
        (2 * layer.firing_probability(x) - 1).sum().backward()
    norms = unit.weight.norm(dim=1)
    assert torch.allclose(unit.bias.grad, paper.bias.grad * norms, rtol=1e-10, atol=0)  # chain rule
    assert not torch.allclose(unit.weight.grad, paper.weight.grad)  # b ||w|| also pulls on w


def test_bad_bias_scale_is_refused_and_the_choice_is_shown():
    with pytest.raises(ValueError, match="bias_scale must be one of"):
        nsm.NSMLinear(3, 2, bias_scale="authors")
    assert "bias_scale=unit" in repr(nsm.NSMConv2d(1, 2, 3, bias_scale="unit"))
    assert "bias_scale" not in repr(nsm.NSMConv2d(1, 2, 3))
