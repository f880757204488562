"""The NSM layers with the PyTorch tools researchers use: torch.compile with changing batch
sizes, torch.func (grad, vmap, functional_call), torch.export with a dynamic batch, half
precision, one generator for a whole model; and the messages for what they cannot take."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim, export
from torch.func import functional_call, grad, vmap

import nsm
from nsm.nn.estimators import BinConcreteEstimator, ProbEstimator

pytestmark = pytest.mark.usefixtures("one_thread")


def _pm1(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, shape, generator=g) * 2 - 1).to(dtype)


# ---------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("name", ["bnsm", "gnsm"])
def test_compile_trains_and_predicts_at_several_batch_sizes(name):
    """fullgraph compile (aot_eager: the same tracing as inductor, fast to build): no graph break,
    no failure when the batch size changes, in training and without autograd; and the compiled
    network's mean field is the eager one's."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nsm.build_model(name)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    for n in (3, 5, 8):
        x = torch.rand(n, 1, 28, 28)
        out = compiled(x)
        assert out.shape == (n, 10) and torch.isfinite(out).all()
        out.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad()
        with torch.no_grad():
            assert compiled(x).shape == (n, 10)
            with nsm.forward_mode(model, "mean"):
                torch.testing.assert_close(compiled(x), model(x))
    probs = nsm.mc_predict(compiled, torch.rand(4, 1, 28, 28), 6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))


def test_compiled_layer_fires_at_its_probability():
    """A compiled NSMLinear draws its own random numbers: P(+1) over 20,000 draws against
    firing_probability, within 4.5 binomial sd + 0.01 (the central-limit law, fan-in 400)."""
    torch._dynamo.reset()
    torch.manual_seed(1)
    layer = nsm.NSMLinear(400, 5)
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-1, 1, 5))
    x = _pm1(1, 400, seed=2)
    p = layer.firing_probability(x).detach()[0]
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        z = torch.cat([compiled(x.expand(5000, -1)) for _ in range(4)])
    freq = (z > 0).double().mean(0)
    assert torch.all((freq - p).abs() <= 4.5 * torch.sqrt(p * (1 - p) / 20_000) + 0.01), (freq, p)


# ---------------------------------------------------------------- torch.func


def test_func_grad_and_per_example_vmap_equal_autograd():
    torch.manual_seed(0)
    layer = nsm.NSMLinear(6, 3, dtype=torch.float64)
    x = _pm1(5, 6, dtype=torch.float64)
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss(params, x):
        with nsm.forward_mode(layer, "threshold"):  # deterministic: the same value every call
            return (functional_call(layer, params, (x,)) * torch.arange(1.0, 4.0, dtype=torch.float64)).sum()

    got = grad(loss)(params, x)
    loss(dict(layer.named_parameters()), x).backward()
    for k, p in layer.named_parameters():
        torch.testing.assert_close(got[k], p.grad)
    per_example = vmap(grad(loss), in_dims=(None, 0))(params, x)
    for i in range(5):
        one = grad(loss)(params, x[i : i + 1])
        for k in params:
            torch.testing.assert_close(per_example[k][i], one[k])


def test_func_grad_through_a_sampled_pass_equals_autograd_with_the_same_noise():
    torch.manual_seed(0)
    layer = nsm.NSMConv2d(2, 3, 3, padding=1, dtype=torch.float64)
    x = _pm1(2, 2, 5, 5, dtype=torch.float64)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    layer.generator = torch.Generator().manual_seed(4)
    got = grad(lambda p: functional_call(layer, p, (x,)).sum())(params)
    layer.generator = torch.Generator().manual_seed(4)
    layer(x).sum().backward()
    for k, p in layer.named_parameters():
        torch.testing.assert_close(got[k], p.grad)


# ---------------------------------------------------------------- torch.export


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nsm.NSMLinear(6, 3), (4, 6)),
        (lambda: nsm.NSMConv2d(2, 3, 3, padding=1), (4, 2, 8, 8)),
        (lambda: nsm.build_model("bnsm"), (4, 1, 28, 28)),
    ],
    ids=["linear", "conv", "bnsm"],
)
def test_export_with_a_dynamic_batch(make, shape):
    torch.manual_seed(0)
    module = make()
    x = torch.rand(shape) * 2 - 1
    program = export(module, (x,), dynamic_shapes=({0: Dim("batch")},))
    for n in (2, 7):
        xn = torch.rand((n, *shape[1:])) * 2 - 1
        out = program.module()(xn)
        assert out.shape[0] == n
        if not isinstance(module, nn.Sequential):
            assert set(out.unique().tolist()) <= {-1.0, 1.0}
            with nsm.forward_mode(module, "threshold"), torch.no_grad():
                assert module(xn).shape == out.shape


# ---------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_binconcrete_in_half_precision(dtype):
    torch.manual_seed(0)
    layer = nsm.NSMLinear(20, 4, estimator="binconcrete", dtype=dtype)
    x = _pm1(3, 20, dtype=dtype)
    out = layer(x)
    assert out.dtype == dtype and torch.isfinite(out).all() and out.abs().max() <= 1
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    layer.generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        got = layer(x).double()
        # eq. 14 in float64 from the same uniforms (drawn in float32) and the layer's own P
        fi = torch.finfo(torch.float32)
        uni = torch.rand(got.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
        uni = uni.clamp(fi.tiny, 1 - fi.eps).double()
        p = layer.firing_probability(x).double()
        want = 2 * torch.sigmoid(uni.log() - (1 - uni).log() + p.log()) - 1
    torch.testing.assert_close(got, want, atol=0.03, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_binconcrete_in_half_precision_fires_at_its_law_in_the_tails(dtype):
    # alpha = P / (1 - P): the unit fires with probability P (eq. 14 at temperature 0.5 too);
    # half-precision uniforms cut the tails: P = 0.0073 fired never, P = 0.9998 at 0.9978
    n = 200_000
    layer = nsm.NSMLinear(20, 8, estimator="binconcrete", alpha="odds", temperature=0.5, dtype=dtype)
    layer.generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(8, 20, generator=torch.Generator().manual_seed(0)))
        layer.bias.copy_(torch.tensor([-4.0, -3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 4.0]))
        layer.magnitude.fill_(0.5)
        x = _pm1(1, 20, seed=3, dtype=dtype)  # P from 0.0073 to 0.9998
        ref = nsm.NSMLinear(20, 8, dtype=torch.float64)
        ref.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
        p = ref.firing_probability(x.double())[0]
        freq = (layer(x.expand(n, -1)) > 0).double().mean(0)
    assert p.min() < 0.01 and p.max() > 0.999  # the tails are in the test
    tol = 4.5 * torch.sqrt(p * (1 - p) / n) + 3 / n  # binomial, 4.5 standard errors
    assert ((freq - p).abs() < tol).all(), (freq, p)


# ---------------------------------------------------------------- one generator per model


@pytest.mark.parametrize("name", ["bnsm", "gnsm", "sn", "stnn", "dcnn-mcdropout"])
def test_build_model_with_a_generator_draws_all_noise_from_it(name):
    torch.manual_seed(0)
    a = nsm.build_model(name, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(0)
    b = nsm.build_model(name, generator=torch.Generator().manual_seed(7))
    x = torch.rand(3, 1, 28, 28)
    torch.manual_seed(1)
    ya = a(x)
    torch.manual_seed(2)  # the global generator plays no part
    torch.testing.assert_close(b(x), ya)
    assert not torch.equal(a(x), ya)  # the generator moved on: a fresh draw


def test_a_generator_for_a_model_without_noise_or_on_another_device_is_refused():
    with pytest.raises(ValueError, match="has no module that draws noise"):
        nsm.build_model("dcnn", generator=torch.Generator())
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        nsm.build_model("bnsm", generator=3)
    layer = nsm.NSMLinear(3, 2, generator=torch.Generator())
    with pytest.raises(ValueError, match="generator is on cpu but the input is on meta"):
        layer(torch.empty(2, 3, device="meta"))


# ---------------------------------------------------------------- same models, options that do nothing


def test_bnsm_and_gnsm_binconcrete_are_one_network_under_a_bias_rescale():
    torch.manual_seed(0)
    b = nsm.build_model("bnsm-binconcrete")
    g = nsm.build_model("gnsm-binconcrete")
    g.load_state_dict(b.state_dict())
    with torch.no_grad():
        for lb, lg in zip(nsm.nn.layers.nsm_layers(b), nsm.nn.layers.nsm_layers(g)):
            lg.bias.mul_(lg.noise.c / lb.noise.c)
    x = torch.rand(4, 1, 28, 28)
    for model in (b, g):
        nsm.set_generator(model, torch.Generator().manual_seed(5))
    torch.testing.assert_close(g(x), b(x))
    assert "the same network as gnsm-binconcrete" in nsm.MODELS.get("bnsm-binconcrete").description
    assert "the same network as bnsm-binconcrete" in nsm.MODELS.get("gnsm-binconcrete").description


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(estimator="binconcrete", sampler="probability"),
            ValueError,
            "estimator 'binconcrete' draws no synaptic noise.*sampler='probability'",
        ),
        (
            dict(estimator="prob", temperature=0.5),
            ValueError,
            "temperature=0.5: options of estimator 'binconcrete' only, which estimator 'prob' does not use",
        ),
        (dict(estimator="ste", alpha="odds"), ValueError, "alpha='odds': options of estimator 'binconcrete' only"),
        (
            dict(estimator=ProbEstimator),
            TypeError,
            r"estimator ProbEstimator is a class; pass an instance \(ProbEstimator\(\)\)",
        ),
        (dict(estimator=BinConcreteEstimator), TypeError, "BinConcreteEstimator is a class"),
    ],
)
def test_options_that_would_do_nothing_or_fail_later_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        nsm.NSMLinear(4, 2, **kwargs)
    with pytest.raises(error, match=message):
        nsm.NSMConv2d(1, 2, 3, **kwargs)


def test_binconcrete_repr_shows_no_sampler_and_instances_are_accepted():
    layer = nsm.NSMLinear(4, 2, estimator=BinConcreteEstimator(temperature=0.5))
    assert "sampler" not in repr(layer) and "binconcrete(temperature=0.5" in repr(layer)
    assert "sampler=neuron" in repr(nsm.NSMLinear(4, 2))


# ---------------------------------------------------------------- non-finite and foreign inputs


@pytest.mark.parametrize("estimator", ["prob", "ste"])
@pytest.mark.parametrize("mode", ["sample", "threshold"])
def test_a_nan_never_becomes_a_state(estimator, mode):
    torch.manual_seed(0)
    layer = nsm.NSMLinear(5, 3, estimator=estimator)
    conv = nsm.NSMConv2d(1, 2, 3, estimator=estimator)
    with nsm.forward_mode(layer, mode), nsm.forward_mode(conv, mode):
        for grad_on in (True, False):
            with torch.set_grad_enabled(grad_on):
                assert torch.isnan(layer(torch.full((2, 5), float("nan")))).all()
                x = torch.ones(1, 1, 5, 5)
                x[0, 0, 2, 2] = float("inf")
                out = conv(x)
                assert torch.isnan(out).all() and out.shape == (1, 2, 3, 3)  # every unit sees the inf
                part = torch.ones(2, 5)
                part[1, 0] = float("nan")
                out = layer(part)
                assert torch.isnan(out[1]).all() and set(out[0].tolist()) <= {-1.0, 1.0}
    assert torch.isnan(nsm.Binarize()(torch.tensor([0.2, float("nan")])))[1]


def test_mc_predict_refuses_non_finite_input_and_names_the_example():
    model = nn.Sequential(nn.Flatten(), nsm.NSMLinear(4, 2))
    x = torch.rand(6, 4)
    x[3, 1] = float("nan")
    x[5, 0] = float("inf")
    with pytest.raises(
        ValueError, match=r"2 non-finite value\(s\) \(NaN or inf\) in 2 example\(s\), the first at index 3"
    ):
        nsm.mc_predict(model, x, 4)


def test_foreign_inputs_and_models_get_messages_naming_what_was_passed():
    layer = nsm.NSMLinear(4, 2)
    with pytest.raises(TypeError, match="NSMLinear expects a torch.Tensor, got ndarray"):
        layer(np.ones((2, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="NSMConv2d expects a torch.Tensor, got list"):
        nsm.NSMConv2d(1, 2, 3)([[1.0]])
    with pytest.raises(TypeError, match="x must be a torch.Tensor batch"):
        nsm.mc_predict(layer, [[1.0] * 4], 2)
    model = nn.Sequential(nsm.NSMLinear(100, 2))
    with pytest.raises(
        ValueError, match=r"input of shape \(4, 784\).*NSMLinear expects inputs of shape \(\.\.\., 100\)"
    ):
        nsm.mc_predict(model, torch.rand(4, 784), 2)

    class TwoOutputs(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(TypeError, match="the model returned a tuple; mc_predict needs a model that returns one tensor"):
        nsm.mc_predict(TwoOutputs(), torch.rand(3, 4), 2)
