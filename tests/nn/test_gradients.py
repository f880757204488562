"""Gradients of the NSM against the paper's formulas, in float64 (docs/design.md §1 and §3)."""

import math

import pytest
import torch
import torch.nn.functional as F

import nsm
import nsm.nn.functional as NF


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _pm1(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=g).double() * 2 - 1


def test_weight_and_magnitude_gradients_match_si_eqs_6_7():
    """dL/dbeta_i = w_i . grad_v L / ||w_i||;  grad_w L = beta/||w|| (I - w w^T/||w||^2) grad_v L."""
    torch.manual_seed(0)
    layer = nsm.NSMLinear(30, 7, bias=False)
    with torch.no_grad():
        layer.magnitude.uniform_(0.5, 2.0)
    z = _pm1(11, 30)
    coef = torch.randn(11, 7)
    loss = (coef * layer.firing_probability(z)).sum()
    loss.backward()

    w, beta = layer.weight.detach(), layer.magnitude.detach()
    norm = w.norm(dim=1, keepdim=True)
    v = beta[:, None] * w / norm
    # grad_v L written from P = 1/2 (1 + erf(v . z)): dP/dv = exp(-(v.z)^2)/sqrt(pi) z
    t = z @ v.T
    grad_v = (coef * torch.exp(-(t**2)) / math.sqrt(math.pi)).T @ z  # (7, 30)
    grad_beta = (w * grad_v).sum(1) / norm[:, 0]
    eye = torch.eye(30)
    grad_w = torch.stack(
        [beta[i] / norm[i] * (eye - torch.outer(w[i], w[i]) / norm[i] ** 2) @ grad_v[i] for i in range(7)]
    )
    torch.testing.assert_close(layer.magnitude.grad, grad_beta, atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.weight.grad, grad_w, atol=1e-6, rtol=0)


@pytest.mark.parametrize("variance", ["norm", "exact"])
def test_gradcheck_probability_path_linear(variance):
    torch.manual_seed(1)
    z = _pm1(4, 6)
    w = torch.randn(3, 6, requires_grad=True)
    beta = torch.rand(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    noise = NF.make_noise("bernoulli", p=0.3)

    def p_of(w, beta, b):
        wn = NF.weight_norm(z, w, F.linear, variance, beta.shape)
        return NF.firing_probability(NF.drive(F.linear(z, w), wn, beta, b, noise.c))

    assert torch.autograd.gradcheck(p_of, (w, beta, b))


@pytest.mark.parametrize("variance", ["norm", "exact"])
def test_gradcheck_probability_path_conv(variance):
    torch.manual_seed(2)
    z = _pm1(2, 2, 5, 5)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    beta = torch.rand(3, 1, 1, requires_grad=True)
    b = torch.randn(3, 1, 1, requires_grad=True)
    noise = NF.make_noise("gaussian", sigma=0.5)

    def op(x, w):
        return F.conv2d(x, w, padding=1)

    def p_of(w, beta, b):
        wn = NF.weight_norm(z, w, op, variance, beta.shape)
        return NF.firing_probability(NF.drive(op(z, w), wn, beta, b, noise.c))

    assert torch.autograd.gradcheck(p_of, (w, beta, b))


@pytest.mark.parametrize(
    "layer_kind, sampler",
    [
        ("linear", "neuron"),
        ("linear", "probability"),
        ("linear", "synapse"),
        ("conv", "neuron"),
        ("conv", "probability"),
    ],
)  # no synapse sampler for convolutions
def test_prob_estimator_backward_is_gradient_of_2p_minus_1(layer_kind, sampler):
    torch.manual_seed(3)
    if layer_kind == "linear":
        layer = nsm.NSMLinear(12, 5, sampler=sampler)
        x = _pm1(8, 12).requires_grad_()
    else:
        layer = nsm.NSMConv2d(3, 4, 3, sampler=sampler)
        x = _pm1(2, 3, 6, 6).requires_grad_()
    with torch.no_grad():
        layer.magnitude.uniform_(0.5, 1.5)
    out = layer(x)
    assert set(out.detach().unique().tolist()) <= {-1.0, 1.0}
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), [x, *layer.parameters()])
    expected = torch.autograd.grad(((2 * layer.firing_probability(x) - 1) * g).sum(), [x, *layer.parameters()])
    for a, e in zip(grads, expected):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("sampler", ["neuron", "probability", "synapse"])
def test_ste_passes_gradient_of_noisy_preactivation(sampler):
    torch.manual_seed(4)
    layer = nsm.NSMLinear(10, 4, estimator="ste", sampler=sampler, generator=torch.Generator().manual_seed(9))
    x = _pm1(6, 10).requires_grad_()
    out = layer(x)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), [x, *layer.parameters()])
    # the same noise again: rebuild u with the sampler and a generator in the same state
    gen = torch.Generator().manual_seed(9)
    ps = NF.Pass(x, layer.weight, layer.magnitude, layer.bias, layer.noise, F.linear, "norm")
    u = layer.sampler(x, layer.weight, ps, gen)
    torch.testing.assert_close(out.detach(), NF.sign(u.detach()))
    expected = torch.autograd.grad((u * g).sum(), [x, *layer.parameters()])
    for a, e in zip(grads, expected):
        torch.testing.assert_close(a, e)


def test_binconcrete_gradient_flows_through_relaxation():
    torch.manual_seed(5)
    layer = nsm.NSMLinear(10, 4, estimator="binconcrete", generator=torch.Generator().manual_seed(1))
    x = _pm1(3, 10)
    out = layer(x)
    out.sum().backward()
    for p in layer.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # X = sigmoid((L + log P)/lambda): reproduce the forward value with the same uniforms
    gen = torch.Generator().manual_seed(1)
    uni = torch.rand(out.shape, generator=gen)
    p = layer.firing_probability(x).detach()
    x_relaxed = torch.sigmoid(torch.log(uni) - torch.log1p(-uni) + torch.log(p))
    torch.testing.assert_close(out.detach(), 2 * x_relaxed - 1)


def test_probability_invariant_to_weight_row_scaling():
    torch.manual_seed(6)
    layer = nsm.NSMLinear(20, 5, bias=False)
    z = _pm1(7, 20)
    p0 = layer.firing_probability(z).detach()
    with torch.no_grad():
        layer.weight.mul_(torch.tensor([0.1, 1.0, 3.0, 17.0, 250.0])[:, None])
    torch.testing.assert_close(layer.firing_probability(z).detach(), p0)
    conv = nsm.NSMConv2d(2, 3, 3, bias=False)
    zc = _pm1(2, 2, 5, 5)
    q0 = conv.firing_probability(zc).detach()
    with torch.no_grad():
        conv.weight.mul_(torch.tensor([0.01, 5.0, 40.0])[:, None, None, None])
    torch.testing.assert_close(conv.firing_probability(zc).detach(), q0)


def test_input_binarizer_and_sign():
    x = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0], requires_grad=True)
    y = NF.binarize_input(x)
    torch.testing.assert_close(y.detach(), torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0]))
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    torch.testing.assert_close(NF.sign(torch.tensor([-2.0, -0.0, 0.0, 3.0])), torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    s = torch.tensor([-0.5, 0.0, 0.5], requires_grad=True)
    NF.sign_ste(s).sum().backward()
    torch.testing.assert_close(s.grad, torch.ones(3))


@pytest.mark.parametrize("bias", [True, False])
def test_second_order_gradients_through_the_prob_estimator(bias):
    """create_graph=True (Hessians, gradient penalties) failed on the fused backward's in-place
    ops. For a loss linear in the states, the sampled pass's gradient is the mean pass's
    (d erf(t)), so its gradient of a gradient must be too: float64, 1e-12."""
    torch.manual_seed(0)
    layer = nsm.NSMConv2d(3, 4, 3, padding=1, bias=bias, dtype=torch.float64)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64).sign()
    v = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    params = [p for p in layer.parameters()]
    second = {}
    for mode in ("sample", "mean"):
        with nsm.forward_mode(layer, mode):
            out = layer(x)
        first = torch.autograd.grad((out * v).sum(), params, create_graph=True)
        second[mode] = torch.autograd.grad(sum(g.square().sum() for g in first), params)
    for a, b in zip(second["sample"], second["mean"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
