"""Every gradient path of the NSM layers against formulas written here, independently of
nsm.nn.functional (float64): layer kind x variance x bias x batched/unbatched x mode, for the
input and every parameter; BinConcrete and STE against their own formulas with the same
random numbers drawn here; firing frequencies at zero-padded borders for every sampler."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import nsm

torch_dtype = torch.float64


def _pm1(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, shape, generator=g) * 2 - 1).to(torch_dtype)


def _layer(kind, variance, bias, **options):
    torch.manual_seed(11)
    if kind == "linear":
        layer = nsm.NSMLinear(9, 4, bias=bias, variance=variance, dtype=torch_dtype, **options)
    else:  # padded: the border is where the norm paths differ
        layer = nsm.NSMConv2d(3, 4, 3, padding=1, bias=bias, variance=variance, dtype=torch_dtype, **options)
    with torch.no_grad():
        layer.magnitude.uniform_(0.5, 1.5)
        if bias:
            layer.bias.uniform_(-0.8, 0.8)
    return layer


def _input(kind, batched):
    x = _pm1(5, 9, seed=1) if kind == "linear" else _pm1(2, 3, 5, 5, seed=1)
    return (x if batched else x[0]).requires_grad_()


def drive_formula(layer, x):
    """t = beta s / sigma + b / (c sigma), written from the paper (main text eqs. 1-4):
    sigma^2 = sum_j w_ij^2 z_j^2 over the synapses that meet the input (zero padding has none)."""
    w, beta, b = layer.weight, layer.magnitude, layer.bias
    c = math.sqrt(2 * layer.noise.var)
    if isinstance(layer, nsm.NSMLinear):
        s = x @ w.T
        if layer.variance == "exact":
            sigma = ((x * x) @ (w * w).T).sqrt()
        else:
            sigma = w.norm(dim=1)
        view = (-1,)
    else:
        conv = lambda inp, k: F.conv2d(inp, k, padding=layer.padding)  # noqa: E731
        s = conv(x, w)
        z2 = x * x if layer.variance == "exact" else torch.ones_like(x)
        sigma = conv(z2, w * w).sqrt()
        view = (-1, 1, 1)
    t = beta.view(view) * s / sigma
    return t if b is None else t + b.view(view) / (c * sigma)


def _grads(out_fn, layer, x, g):
    params = [x, *layer.parameters()]
    return torch.autograd.grad((out_fn() * g).sum(), params)


@pytest.mark.parametrize("mode", ["sample", "threshold", "mean"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("variance", ["norm", "exact"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_every_gradient_path_is_the_gradient_of_erf_t(kind, variance, bias, batched, mode):
    layer = _layer(kind, variance, bias)
    x = _input(kind, batched)
    with nsm.forward_mode(layer, mode):
        out = layer(x)
    t = drive_formula(layer, x)
    if mode == "mean":
        torch.testing.assert_close(out, torch.erf(t))
    elif mode == "threshold":
        torch.testing.assert_close(out.detach(), torch.where(t >= 0, 1.0, -1.0).to(torch_dtype))
    else:
        assert set(out.detach().unique().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(layer.firing_probability(x), 0.5 * (1 + torch.erf(t)))
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch_dtype)
    got = _grads(lambda: out, layer, x, g)
    want = _grads(lambda: torch.erf(drive_formula(layer, x)), layer, x, g)
    names = ["input", *(n for n, _ in layer.named_parameters())]
    for name, a, e in zip(names, got, want):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-8, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("alpha", ["probability", "odds"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_binconcrete_value_and_gradient_follow_eq_14(kind, alpha):
    """X = sigmoid((log U - log(1 - U) + log alpha) / lambda), output 2X - 1, alpha = P or P/(1-P)."""
    layer = _layer(
        kind,
        "norm",
        True,
        estimator="binconcrete",
        temperature=0.7,
        alpha=alpha,
        generator=torch.Generator().manual_seed(5),
    )
    x = _input(kind, True)
    out = layer(x)
    uni = torch.rand(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch_dtype)

    def formula():
        p = 0.5 * (1 + torch.erf(drive_formula(layer, x)))
        log_alpha = p.log() if alpha == "probability" else p.log() - (1 - p).log()
        return 2 * torch.sigmoid((uni.log() - (1 - uni).log() + log_alpha) / 0.7) - 1

    torch.testing.assert_close(out, formula())
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=torch_dtype)
    for a, e in zip(_grads(lambda: out, layer, x, g), _grads(formula, layer, x, g)):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("sampler", ["neuron", "probability", "synapse"])
def test_ste_gradient_is_that_of_the_noisy_preactivation_rebuilt_here(sampler):
    """Gaussian synapses xi = 1 + sigma eps, with eps drawn here from an identically seeded generator."""
    torch.manual_seed(4)
    sigma = 0.7
    layer = nsm.NSMLinear(
        10,
        4,
        noise="gaussian",
        sigma=sigma,
        estimator="ste",
        sampler=sampler,
        generator=torch.Generator().manual_seed(9),
        dtype=torch_dtype,
    )
    with torch.no_grad():
        layer.magnitude.uniform_(0.5, 1.5)
    x = _pm1(6, 10).requires_grad_()
    out = layer(x)
    gen = torch.Generator().manual_seed(9)
    w, beta, b = layer.weight, layer.magnitude, layer.bias
    c = math.sqrt(2) * sigma
    a = beta * c - 1.0  # a = beta c - E[xi]

    def u():
        if sampler == "neuron":
            xi = 1 + sigma * torch.randn(x.shape, generator=gen, dtype=torch_dtype)
            return (x * xi) @ w.T + a * (x @ w.T) + b
        if sampler == "synapse":
            xi = 1 + sigma * torch.randn((6, 4, 10), generator=gen, dtype=torch_dtype)
            return torch.einsum("noi,oi,ni->no", xi, w, x) + a * (x @ w.T) + b
        eps = torch.randn((6, 4), generator=gen, dtype=torch_dtype)
        std = sigma * w.norm(dim=1)  # sqrt(Var[u]); E[u] = sqrt(2) t std
        return (eps + math.sqrt(2) * drive_formula(layer, x)) * std

    u_here = u()
    torch.testing.assert_close(out.detach(), torch.where(u_here >= 0, 1.0, -1.0).to(torch_dtype).detach())
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch_dtype)
    for got, want in zip(_grads(lambda: out, layer, x, g), _grads(lambda: u_here, layer, x, g)):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------- padded borders

N = 20_000


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("noise", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("sampler", ["neuron", "probability"])
def test_padded_border_units_fire_at_the_reported_probability(sampler, noise, padding_mode):
    """Corner, edge and centre units of a padded convolution, every channel: the frequency of
    +1 over N = 20,000 draws against firing_probability, within 4.5 binomial standard deviations
    (<= 0.016), plus 0.02 for Bernoulli synapses drawn per neuron (the central-limit law at a
    fan-in of 256 to 576; it is exact for Gaussian synapses and the probability sampler).
    With the full-filter norm at the border (the old default) the corner misses by 0.03-0.1."""
    g = torch.Generator().manual_seed(7)
    layer = nsm.NSMConv2d(
        64,
        3,
        3,
        padding=1,
        padding_mode=padding_mode,
        noise=noise,
        p=0.5,
        sigma=0.8,
        sampler=sampler,
        generator=torch.Generator().manual_seed(8),
        dtype=torch_dtype,
    )
    with torch.no_grad():
        layer.weight.normal_(generator=g)
        layer.weight[:, :, 0, :] += 1.5  # the top row of each filter weighs more: corners lose much of ||w||
        layer.magnitude.copy_(torch.tensor([0.4, 0.8, 0.25]))
        layer.bias.copy_(torch.tensor([2.0, -3.0, 1.0]))
    x = (torch.randint(0, 2, (1, 64, 5, 5), generator=g) * 2 - 1).to(torch_dtype)
    p = layer.firing_probability(x).detach()[0]  # (3, 5, 5)
    where = [(0, 0), (0, 2), (2, 2), (4, 4)]  # corner, edge, centre, corner
    hits = torch.zeros(3, len(where), dtype=torch_dtype)
    with torch.no_grad():
        for _ in range(N // 2000):
            z = layer(x.expand(2000, -1, -1, -1))
            assert set(z.unique().tolist()) <= {-1.0, 1.0}
            hits += torch.stack([(z[:, :, i, j] > 0).sum(0) for i, j in where], 1)
    freq = hits / N
    pw = torch.stack([p[:, i, j] for i, j in where], 1)
    assert pw.min() > 0.02 and pw.max() < 0.99  # a spread of probabilities is tested
    tol = 4.5 * torch.sqrt(pw * (1 - pw) / N) + (0.02 if noise == "bernoulli" and sampler == "neuron" else 0)
    assert torch.all((freq - pw).abs() <= tol), (freq, pw)


def test_the_border_law_differs_from_the_full_filter_norm():
    """The padded corner's variance is that of the weights on the image: not ||w||."""
    layer = nsm.NSMConv2d(2, 1, 3, padding=1, bias=False, dtype=torch_dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1.0, 19.0, dtype=torch_dtype).view(1, 2, 3, 3))
    x = torch.ones(1, 2, 4, 4, dtype=torch_dtype)
    t = layer.drive(x)[0, 0]
    w = layer.weight[0]
    corner = w[:, 1:, 1:]  # the synapses of the top-left unit that meet the image
    torch.testing.assert_close(t[0, 0], corner.sum() / corner.norm())
    torch.testing.assert_close(t[1, 1], w.sum() / w.norm())
