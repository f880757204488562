"""The layer API: parameters, shapes, registries, evaluation modes, and every invalid argument."""

import math
import re

import pytest
import torch

import nsm
import nsm.nn.functional as NF


def test_parameters_and_shapes():
    lin = nsm.NSMLinear(10, 4)
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias", "magnitude"]
    assert lin.magnitude.shape == (4,) and torch.all(lin.magnitude == 1)
    assert lin(torch.randn(3, 10)).shape == (3, 4)
    assert lin(torch.randn(2, 3, 10)).shape == (2, 3, 4)
    assert lin.firing_probability(torch.randn(3, 10)).shape == (3, 4)

    conv = nsm.NSMConv2d(3, 5, 3, stride=2, padding=1, bias=False)
    assert conv.magnitude.shape == (5,) and conv.bias is None
    x = torch.randn(2, 3, 8, 8)
    out = conv(x)
    assert out.shape == (2, 5, 4, 4) == conv.firing_probability(x).shape
    assert set(out.unique().tolist()) <= {-1.0, 1.0}
    assert conv(torch.randn(3, 8, 8)).shape == (5, 4, 4)  # unbatched, as nn.Conv2d


def test_repr_reads_like_the_paper():
    r = repr(nsm.NSMConv2d(1, 32, 5, p=0.25))
    assert "noise=bernoulli(p=0.25)" in r and "sampler=neuron" in r and "estimator=prob" in r
    r = repr(nsm.NSMLinear(4, 2, noise="gaussian", sigma=0.5, estimator="binconcrete", alpha="odds"))
    assert "gaussian(sigma=0.5)" in r and "binconcrete(temperature=1, alpha=odds)" in r


def test_eval_does_not_switch_noise_off_and_modes_are_explicit():
    torch.manual_seed(0)
    layer = nsm.NSMLinear(200, 50).eval()
    x = torch.randn(4, 200).sign()
    assert not torch.equal(layer(x), layer(x))  # still stochastic after eval()
    model = torch.nn.Sequential(layer)
    with nsm.forward_mode(model, "threshold"):
        a, b = layer(x), layer(x)
        assert torch.equal(a, b)
        torch.testing.assert_close(a, NF.sign(layer.drive(x)).detach())
    with nsm.forward_mode(model, "mean"):
        torch.testing.assert_close(layer(x), 2 * layer.firing_probability(x) - 1)
    assert layer.mode == "sample"


def test_generator_makes_layers_reproducible():
    layer = nsm.NSMLinear(30, 8, generator=torch.Generator().manual_seed(3))
    x = torch.randn(5, 30).sign()
    a = layer(x)
    layer.generator.manual_seed(3)
    assert torch.equal(a, layer(x))


def test_registries_take_callables():
    calls = []

    def my_sampler(x, weight, ps, generator=None):
        calls.append(1)
        return NF.sample_neuron(x, weight, ps, generator)

    class Hard:
        needs_sample = True
        needs_drive = False
        grad_through_sample = False

        def __call__(self, u, ps, generator=None):
            return NF.sign(u)

    layer = nsm.NSMLinear(6, 3, sampler=my_sampler, estimator=Hard())
    assert layer(torch.randn(2, 6)).shape == (2, 3) and calls
    custom = NF.Noise("bernoulli", 0.9, 0.9, 0.09)
    assert nsm.NSMLinear(6, 3, noise=custom).noise is custom
    assert set(nsm.SAMPLERS.names()) == {"neuron", "synapse", "probability"}
    assert set(nsm.ESTIMATORS.names()) == {"prob", "ste", "binconcrete"}
    assert set(nsm.NOISES.names()) == {"bernoulli", "gaussian"}


def test_noise_moments():
    b = NF.make_noise("bernoulli", p=0.25)
    assert (b.mean, b.var) == (0.25, 0.25 * 0.75)
    g = NF.make_noise("gaussian", sigma=0.5)
    assert (g.mean, g.var) == (1.0, 0.25)
    gen = torch.Generator().manual_seed(0)
    like = torch.zeros(())
    for p in (0.25, 0.3):  # 16-bit path and float path
        xi = NF.make_noise("bernoulli", p=p).sample((200_000,), like=like, generator=gen)
        assert set(xi.unique().tolist()) == {0.0, 1.0}
        assert abs(xi.mean().item() - p) < 4.5 * (p * (1 - p) / 200_000) ** 0.5
    xi = g.sample((200_000,), like=like, generator=gen)
    assert abs(xi.mean().item() - 1) < 0.01 and abs(xi.std().item() - 0.5) < 0.01


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("p", [0.3, 0.7, 0.25])
def test_bernoulli_mask_is_unbiased_in_every_precision(dtype, p):
    """A half-precision model's blank-out mask transmits with probability p, not with the
    probability that a rounded half-precision uniform lies below p (bfloat16 at p = 0.3 gave
    0.3018: 8 standard errors at 4M draws). Tolerance: 4 standard errors, fixed generator."""
    n = 4_000_000
    gen = torch.Generator().manual_seed(1)
    noise = NF.make_noise("bernoulli", p=p)
    like = torch.zeros((), dtype=dtype)
    xi = noise.sample((n,), like=like, generator=gen)
    assert xi.dtype == dtype
    masked = noise.apply(torch.ones(n, dtype=dtype), generator=gen)
    se = (p * (1 - p) / n) ** 0.5
    for name, draw in (("sample", xi), ("apply", masked)):
        assert abs(draw.double().mean().item() - p) < 4 * se, (name, draw.double().mean().item())


BAD_ARGS = [
    (dict(noise="poisson"), "unknown noise 'poisson'; known: bernoulli, gaussian"),
    (dict(p=0.0), "0 < p < 1"),
    (dict(p=1.0), "0 < p < 1"),
    (dict(p=-0.2), "got p=-0.2"),
    (dict(p=True), "got p=True"),
    (dict(p="0.5"), "got p='0.5'"),
    (dict(noise="gaussian", sigma=0.0), "sigma > 0"),
    (dict(noise="gaussian", sigma=float("inf")), "sigma > 0"),
    (dict(sampler="pixel"), "unknown sampler 'pixel'; known: neuron, probability, synapse"),
    (dict(sampler=3), "sampler must be a name"),
    (dict(estimator="reinforce"), "unknown estimator 'reinforce'; known: binconcrete, prob, ste"),
    (dict(estimator="binconcrete", temperature=0), "temperature must be a finite number > 0, got 0"),
    (dict(estimator="binconcrete", alpha="logit"), "alpha must be one of ('probability', 'odds'), got 'logit'"),
    (dict(variance="sample"), "variance must be one of ('norm', 'exact'), got 'sample'"),
]


@pytest.mark.parametrize("kwargs, message", BAD_ARGS)
def test_invalid_arguments_raise_value_error(kwargs, message):
    for make in (lambda: nsm.NSMLinear(4, 2, **kwargs), lambda: nsm.NSMConv2d(1, 2, 3, **kwargs)):
        with pytest.raises(ValueError, match=re.escape(message)):
            make()


def test_invalid_sizes_shapes_and_modes():
    with pytest.raises(ValueError, match="in_features must be a positive int, got 0"):
        nsm.NSMLinear(0, 3)
    with pytest.raises(ValueError, match="out_channels must be a positive int, got -1"):
        nsm.NSMConv2d(1, -1, 3)
    with pytest.raises(ValueError, match="synapse.*not available for convolutions"):
        nsm.NSMConv2d(1, 2, 3, sampler="synapse")
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        nsm.NSMLinear(2, 2, generator=0)
    with pytest.raises(ValueError, match=re.escape("NSMLinear expects inputs of shape (..., 4), got (3, 5)")):
        nsm.NSMLinear(4, 2)(torch.randn(3, 5))
    with pytest.raises(
        ValueError, match=re.escape("NSMConv2d expects inputs of shape (N, 3, H, W) or (3, H, W), got (2, 1, 8, 8)")
    ):
        nsm.NSMConv2d(3, 2, 3)(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="mode must be one of"):
        with nsm.forward_mode(nsm.NSMLinear(2, 2), "deterministic"):
            pass


def test_firing_probability_keeps_the_lower_tail():
    """P = erfc(-t)/2 = (1 + erf t)/2, computed without cancelling: against math.erfc, 1e-12
    relative in float64 and 1e-5 in float32 (1 + erf(t) gave 0 below t = -6 and t = -4)."""
    ts = [-9.0, -6.0, -4.0, -3.0, -0.5, 0.0, 0.5, 3.0]
    for dtype, rel in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        got = NF.firing_probability(torch.tensor(ts, dtype=dtype)).tolist()
        for t, g in zip(ts, got):
            assert g == pytest.approx(0.5 * math.erfc(-t), rel=rel, abs=0), (dtype, t)
