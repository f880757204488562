"""Firing frequencies of sampled NSM units against P = 1/2 (1 + erf(t)) (docs/design.md §1-§2).

Each test draws N = 20,000 states per unit with a fixed generator and compares the
empirical P(+1) with ``firing_probability``. Tolerance: 4.5 binomial standard deviations,
4.5 * sqrt(P(1-P)/N) <= 0.016, plus, for Bernoulli synapses drawn per synapse or per
neuron, 0.01 for the central-limit approximation at fan-in 800-1000 (the P formula is exact
for Gaussian synapses and for the ``probability`` sampler). The per-test maximum deviation
of unit frequency from P is typically 0.002-0.006.
"""

import math

import pytest
import torch

import nsm

N = 20_000
CLT_ALLOWANCE = 0.01


def _tolerance(p: torch.Tensor, noise: str, sampler: str) -> torch.Tensor:
    tol = 4.5 * torch.sqrt(p * (1 - p) / N)
    if noise == "bernoulli" and sampler != "probability":
        tol = tol + CLT_ALLOWANCE
    return tol


def _frequency(layer, x, chunk):
    hits = 0
    with torch.no_grad():
        for start in range(0, N, chunk):
            n = min(chunk, N - start)
            z = layer(x.expand(n, *x.shape[1:]))
            assert set(z.unique().tolist()) <= {-1.0, 1.0}
            hits = hits + (z > 0).double().sum(0)
    return hits / N


@pytest.mark.parametrize("noise", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("sampler", ["synapse", "neuron", "probability"])
def test_linear_frequency_matches_firing_probability(noise, sampler):
    g = torch.Generator().manual_seed(1)
    layer = nsm.NSMLinear(
        1000,
        6,
        noise=noise,
        p=0.5,
        sigma=0.8,
        sampler=sampler,
        generator=torch.Generator().manual_seed(2),
        dtype=torch.float64,
    )
    with torch.no_grad():
        layer.weight.normal_(generator=g)
        layer.magnitude.copy_(torch.tensor([0.3, 0.6, 1.0, 0.5, 0.8, 0.4]))
        layer.bias.copy_(torch.linspace(-5, 5, 6))
    x = torch.randint(0, 2, (1, 1000), generator=g).double() * 2 - 1
    p = layer.firing_probability(x).detach()[0]
    assert p.min() > 0.02 and p.max() < 0.98  # a spread of probabilities is tested
    freq = _frequency(layer, x, chunk=500 if sampler == "synapse" else N)
    assert torch.all((freq - p).abs() <= _tolerance(p, noise, sampler)), (freq, p)


@pytest.mark.parametrize("noise", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("sampler", ["neuron", "probability"])
def test_conv_frequency_matches_firing_probability(noise, sampler):
    g = torch.Generator().manual_seed(3)
    layer = nsm.NSMConv2d(
        32,
        3,
        5,
        noise=noise,
        p=0.25,
        sigma=1.0,
        sampler=sampler,
        generator=torch.Generator().manual_seed(4),
        dtype=torch.float64,
    )
    with torch.no_grad():
        layer.weight.normal_(generator=g)
        layer.magnitude.fill_(0.5)
        layer.bias.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    x = torch.randint(0, 2, (1, 32, 6, 6), generator=g).double() * 2 - 1  # fan-in 800
    p = layer.firing_probability(x).detach()[0]  # (3, 2, 2)
    assert p.shape == (3, 2, 2)
    freq = _frequency(layer, x, chunk=5000)
    assert torch.all((freq - p).abs() <= _tolerance(p, noise, sampler)), (freq, p)


def test_probability_formula_matches_definition():
    """P = 1/2 (1 + erf(E[u] / sqrt(2 Var[u]))) written out from docs/design.md §1."""
    torch.manual_seed(0)
    for noise, mean, var in (("bernoulli", 0.3, 0.3 * 0.7), ("gaussian", 1.0, 0.7**2)):
        layer = nsm.NSMLinear(20, 4, noise=noise, p=0.3, sigma=0.7, dtype=torch.float64)
        with torch.no_grad():
            layer.magnitude.uniform_(0.5, 2.0)
        x = torch.randint(0, 2, (5, 20)).double() * 2 - 1
        c = math.sqrt(2 * var)
        a = layer.magnitude * c - mean  # a_i = beta_i c - E[xi]
        w, b = layer.weight, layer.bias
        e_u = (mean + a) * (x @ w.T) + b
        var_u = var * (w**2 * (x**2)[:, None, :]).sum(-1)
        expected = 0.5 * (1 + torch.erf(e_u / torch.sqrt(2 * var_u)))
        torch.testing.assert_close(layer.firing_probability(x), expected)


def test_exact_variance_handles_padding_and_real_inputs():
    torch.manual_seed(0)
    conv = nsm.NSMConv2d(2, 3, 3, padding=1, variance="exact", dtype=torch.float64)
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64)  # real-valued input, zero padding
    t = conv.drive(x)
    w = conv.weight
    s = torch.nn.functional.conv2d(x, w, padding=1)
    sd = torch.nn.functional.conv2d(x**2, w**2, padding=1).sqrt()
    expected = conv.magnitude.view(1, -1, 1, 1) * s / sd + conv.bias.view(1, -1, 1, 1) / (conv.noise.c * sd)
    torch.testing.assert_close(t, expected)
    # with +-1 inputs and no padding the two variance forms agree
    a = nsm.NSMConv2d(2, 3, 3, dtype=torch.float64)
    b = nsm.NSMConv2d(2, 3, 3, variance="exact", dtype=torch.float64)
    b.load_state_dict(a.state_dict())
    z = torch.randint(0, 2, (2, 2, 5, 5)).double() * 2 - 1
    torch.testing.assert_close(a.firing_probability(z), b.firing_probability(z))


def test_binconcrete_threshold_probability():
    """With alpha = P (SI eq. 14) P(X > 1/2) = P/(1+P); with alpha = odds it is P."""
    g = torch.Generator().manual_seed(5)
    for alpha in ("probability", "odds"):
        layer = nsm.NSMLinear(
            50, 5, estimator="binconcrete", alpha=alpha, generator=torch.Generator().manual_seed(6), dtype=torch.float64
        )
        with torch.no_grad():
            layer.weight.normal_(generator=g)
            layer.bias.copy_(torch.linspace(-2, 2, 5))
        x = torch.randint(0, 2, (1, 50), generator=g).double() * 2 - 1
        p = layer.firing_probability(x).detach()[0]
        with torch.no_grad():
            out = layer(x.expand(N, 50))
        assert out.min() > -1 and out.max() < 1  # the relaxation 2X - 1, not +-1
        freq = (out > 0).double().mean(0)
        target = p / (1 + p) if alpha == "probability" else p
        tol = 4.5 * torch.sqrt(target * (1 - target) / N)
        assert torch.all((freq - target).abs() <= tol), (alpha, freq, target)


def _zero_variance_cases(sampler):
    """Layers with one unit that has no variance, and the input that makes it so: a receptive
    field of zeros (variance="exact", real-valued input) or an all-zero filter / weight row."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 0, 0] = 0.8  # unit (4, 4) of a 3x3 padded convolution sees only zeros
    for bias, scale in ((False, "weight"), (True, "weight"), (True, "unit")):
        for b in (0.3, -0.3) if bias else (None,):
            conv = nsm.NSMConv2d(
                1, 1, 3, padding=1, variance="exact", bias=bias, bias_scale=scale, sampler=sampler, dtype=torch.float64
            )
            if bias:
                with torch.no_grad():
                    conv.bias.fill_(b)
            yield f"exact conv bias={b} {scale}", conv, x, (0, 0, 4, 4), b is None or b >= 0
    lin = nsm.NSMLinear(6, 3, sampler=sampler, dtype=torch.float64)
    with torch.no_grad():
        lin.weight[1] = 0.0  # a unit whose weights are all zero: u = b
        lin.bias[1] = -0.2
    z = torch.randint(0, 2, (1, 6), generator=g).double() * 2 - 1
    yield "zero weight row", lin, z, (0, 1), False


@pytest.mark.parametrize("sampler", ["neuron", "probability"])
def test_a_unit_without_variance_fires_as_its_samplers_do(sampler):
    """Var[u] = 0 means u = E[u] = b: P = 1 if b >= 0 (sgn(0) = +1, none without bias) else 0.
    P said 1/2 (no bias) or Phi(b / c) (unit-scaled bias) while the `neuron` sampler fired
    always and the `probability` sampler half the time; the gradient to the inputs was 1e11.
    Now P, both samplers (4000 draws: exactly P) and a zero, finite gradient agree."""
    for name, layer, x, unit, fires in _zero_variance_cases(sampler):
        want = 1.0 if fires else 0.0
        assert layer.firing_probability(x)[unit].item() == want, name
        states = layer(x.expand(4000, *x.shape[1:]))[(slice(None),) + unit[1:]]
        assert (states == (1.0 if fires else -1.0)).all(), (name, states.mean())
        for mode in ("mean", "threshold"):
            with nsm.forward_mode(layer, mode):
                assert layer(x)[unit].item() == (1.0 if fires else -1.0), (name, mode)
        xg = x.clone().requires_grad_(True)
        layer(xg).sum().backward()
        assert torch.isfinite(xg.grad).all() and xg.grad.abs().max() < 100, (name, xg.grad.abs().max())
        assert all(torch.isfinite(p.grad).all() for p in layer.parameters()), name
        layer.zero_grad()


@pytest.mark.parametrize("variance, padding", [("norm", 1), ("exact", 0), ("exact", 1)])
def test_float16_layers_with_large_weights_keep_their_law(variance, padding):
    """A float16 sum of w^2 overflowed above 65504 (||w|| > 256): P became 1/2 everywhere
    (0.47 off the float64 P). The sums are float32 now: P within 0.01 of float64's."""
    torch.manual_seed(0)
    conv = nsm.NSMConv2d(2, 3, 3, padding=padding, variance=variance, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.mul_(300 / conv.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
    x = 0.9 * (torch.rand(4, 2, 6, 6, dtype=torch.float64) - 0.5).sign()  # sum x^2 w^2 = 0.81 * 90000
    p64 = conv.firing_probability(x)
    p16 = conv.to(torch.float16).firing_probability(x.half())
    assert p16.dtype == torch.float16 and torch.isfinite(p16).all()
    assert (p16.double() - p64).abs().max() < 0.01


def test_float16_unit_with_zero_weights_is_not_nan():
    """The 1e-12 floor of ||w|| was 0 in float16: P and the `probability` sampler's states were NaN."""
    lin = nsm.NSMLinear(4, 2, sampler="probability").half()
    with torch.no_grad():
        lin.weight[0] = 0.0
        lin.bias.zero_()
    z = torch.ones(50, 4, dtype=torch.float16)
    assert lin.firing_probability(z)[:, 0].tolist() == [1.0] * 50
    assert (lin(z)[:, 0] == 1).all()


def test_the_neuron_sampler_correlates_units_that_share_inputs():
    """docs/layers.md: each sampler fires every unit at its P, but the `neuron` sampler's
    shared xi_j correlate the units of a layer; the `synapse` sampler's units are independent
    given the input. Two units on the same 4 inputs (Gaussian noise, sigma 0.8), 200,000
    draws: joint firing against the product of the marginals, 5 standard errors."""
    n = 200_000
    joint = {}
    for sampler in ("neuron", "synapse"):
        layer = nsm.NSMLinear(
            4,
            2,
            noise="gaussian",
            sigma=0.8,
            sampler=sampler,
            bias=False,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(3),
        )
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, -0.5]]))
            layer.magnitude.fill_(0.3)
        x = torch.ones(1, 4, dtype=torch.float64)
        p = layer.firing_probability(x)[0]
        with torch.no_grad():
            z = layer(x.expand(n, 4)) > 0
        se = lambda q: 5 * math.sqrt(q * (1 - q) / n)  # noqa: E731
        for i in range(2):
            assert abs(z[:, i].double().mean().item() - p[i].item()) < se(p[i].item()), (sampler, i)
        joint[sampler] = (z[:, 0] & z[:, 1]).double().mean().item(), (p[0] * p[1]).item()
    j, product = joint["synapse"]
    assert abs(j - product) < 5 * math.sqrt(j * (1 - j) / n), joint
    j, product = joint["neuron"]
    assert j - product > 0.05, joint  # measured: 0.661 against 0.579


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_units_with_small_weights_keep_their_drive(dtype):
    """A unit whose weights are small, not zero, has variance: in float16 its norm (3e-5) was
    below the type's smallest normal number and it was taken for a unit without variance (t =
    -1e4 by its negative bias, against t = 9.5 in float32). Norms and drive terms of
    half-precision layers are float32, rounded once at the end."""
    layer = nsm.NSMLinear(100, 1)
    with torch.no_grad():
        layer.weight.fill_(3e-6)
        layer.bias.fill_(-1e-5)
    x = torch.ones(3, 100)
    want = layer.drive(x)[0].item()
    half = layer.to(dtype)
    got = half.drive(x.to(dtype))
    assert got.dtype == dtype and abs(got[0].item() - want) < 0.01 * abs(want), (got[0].item(), want)
    assert (half(x.to(dtype)) == 1).all() and half(x.to(dtype)).dtype == dtype
