"""Monte-Carlo prediction: the mean softmax over S stochastic passes (docs/design.md §4)."""

import pytest
import torch
from torch import nn

import nsm
import nsm.nn.functional as NF


def _one_unit_model(seed=0):
    """An NSM unit (fan-in 40) feeding a fixed 2-class readout: E[softmax] is known exactly."""
    torch.manual_seed(seed)
    unit = nsm.NSMLinear(40, 1, sampler="probability", dtype=torch.float64)
    readout = nn.Linear(1, 2, dtype=torch.float64)
    with torch.no_grad():
        readout.weight.copy_(torch.tensor([[1.5], [-1.0]]))
        readout.bias.copy_(torch.tensor([0.2, -0.1]))
    return nn.Sequential(unit, readout), unit, readout


def test_mc_predict_converges_to_exact_expectation():
    model, unit, readout = _one_unit_model()
    x = torch.randn(6, 40, dtype=torch.float64).sign()
    p = unit.firing_probability(x).detach()  # (6, 1)
    with torch.no_grad():
        up = torch.softmax(readout(torch.ones(1, 1, dtype=torch.float64)), -1)
        down = torch.softmax(readout(-torch.ones(1, 1, dtype=torch.float64)), -1)
    exact = p * up + (1 - p) * down
    S = 20_000
    for max_pass in (10_000, 777):  # several chunkings give the same law
        torch.manual_seed(1)
        probs = nsm.mc_predict(model, x, S, max_pass=max_pass)
        assert probs.shape == (6, 2)
        torch.testing.assert_close(probs.sum(-1), torch.ones(6, dtype=probs.dtype))
        # the class-0 probability is a mean of S two-valued draws: 4.5 std tolerance
        spread = (up - down).abs()[0, 0]
        tol = 4.5 * spread * torch.sqrt(p * (1 - p) / S)[:, 0]
        assert torch.all((probs[:, 0].double() - exact[:, 0]).abs() <= tol)


def test_sample_probs_and_mean_agree_and_shapes():
    torch.manual_seed(0)
    model = nsm.build_model("bnsm")
    x = torch.rand(3, 1, 28, 28)
    samples = nsm.mc_sample_probs(model, x, 7, max_pass=6)  # chunks of 2 samples x 3 images
    assert samples.shape == (7, 3, 10)
    torch.testing.assert_close(samples.sum(-1), torch.ones(7, 3))
    assert not torch.allclose(samples[0], samples[1])  # independent passes
    torch.manual_seed(5)
    a = nsm.mc_predict(model, x, 7, max_pass=6)
    torch.manual_seed(5)
    b = nsm.mc_sample_probs(model, x, 7, max_pass=6).mean(0)
    torch.testing.assert_close(a, b)


def test_shared_first_product_matches_plain_computation():
    """With stacked identical copies the noise-free product is computed once, same values."""
    torch.manual_seed(0)
    conv = nsm.NSMConv2d(1, 4, 3)
    x = torch.randn(5, 1, 6, 6).sign()
    rep = x.repeat(3, 1, 1, 1)
    with torch.no_grad():
        ps = NF.Pass(
            rep,
            conv.weight,
            conv.magnitude.view(4, 1, 1),
            conv.bias.view(4, 1, 1),
            conv.noise,
            conv._zero_padded_conv,
            "norm",
            copies=3,
        )
        assert ps.s_shared is not None and ps.s_shared.shape == (5, 4, 4, 4)
        torch.testing.assert_close(ps.s, conv._zero_padded_conv(rep, conv.weight))
        u = torch.zeros(15, 4, 4, 4)
        torch.testing.assert_close(ps.add_a_s_(u), ps.a * conv._zero_padded_conv(rep, conv.weight))
        # copies that differ are detected and computed the plain way
        rep[7] = -rep[7]
        ps = NF.Pass(
            rep, conv.weight, conv.magnitude.view(4, 1, 1), None, conv.noise, conv._zero_padded_conv, "norm", copies=3
        )
        assert ps.s_shared is None


def test_deterministic_modes_make_one_pass():
    torch.manual_seed(0)
    model = nsm.build_model("gnsm")
    x = torch.rand(4, 1, 28, 28)
    rows = []
    model.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    nsm.mc_predict(model, x, 50, max_pass=100)
    assert rows == [100, 100] and sum(rows) == 4 * 50  # sampling: 50 copies of 4 images, 2 passes
    for mode in ("mean", "threshold"):
        rows.clear()
        a = nsm.mc_predict(model, x, 50, mode=mode)
        assert rows == [4]  # one pass over the 4 images, not 50
        with nsm.forward_mode(model, mode), torch.no_grad():
            b = torch.softmax(model(x), -1)
        torch.testing.assert_close(a, b)


def test_accuracy_and_error():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1, 1])
    assert nsm.accuracy(probs, labels) == 0.75
    assert nsm.error_rate(probs, labels) == 0.25
    with pytest.raises(ValueError, match="probs has 4 rows but labels has 3"):
        nsm.accuracy(probs, labels[:3])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_samples=0), "n_samples must be a positive int, got 0"),
        (dict(n_samples=2.5), "n_samples must be a positive int, got 2.5"),
        (dict(max_pass=0), "max_pass must be a positive int, got 0"),
        (dict(mode="dropout"), "mode must be one of"),
    ],
)
def test_mc_predict_rejects_bad_arguments(kwargs, message):
    model = nn.Sequential(nsm.NSMLinear(3, 2))
    with pytest.raises(ValueError, match=message):
        nsm.mc_predict(model, torch.randn(2, 3), **kwargs)
    with pytest.raises(ValueError, match="non-empty batch"):
        nsm.mc_predict(model, torch.randn(0, 3))


def test_a_float64_model_is_averaged_in_float64():
    """mc_predict cast a float64 model's logits to float32 (2.6e-8 off its own mean pass)."""
    model, _, _ = _one_unit_model()
    x = torch.randn(5, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = nsm.mc_predict(model, x, 3, mode="mean")
    with nsm.forward_mode(model, "mean"), torch.no_grad():
        want = torch.softmax(model(x), -1)
    assert got.dtype == torch.float64 and nsm.nn.mc.mc_sample_probs(model, x, 2).dtype == torch.float64
    assert (got - want).abs().max().item() < 1e-15
    assert nsm.mc_predict(model.float(), x.float(), 3).dtype == torch.float32


def test_logits_of_another_shape_are_refused():
    """A model that returns (N, 2, 3) had its outputs flattened into 6 'classes' per row."""
    model = nn.Sequential(nn.Linear(4, 6), nn.Unflatten(1, (2, 3)))
    with pytest.raises(
        ValueError, match=r"returned logits of shape \(2, 2, 3\) for 2 examples; expected \(2, classes\)"
    ):
        nsm.mc_predict(model, torch.randn(2, 4), 1)
