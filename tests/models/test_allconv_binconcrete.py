"""The Table 7 and all-convolutional NSM nets with the BinConcrete estimator: every NSM layer's
relaxed output 2X - 1 reaches the next layer as its sign, +-1 (SPEC §3, docs/design.md §3)."""

import pytest
import torch
from torch import nn

import nsm
from nsm.nn.layers import nsm_layers, set_generator

SHAPES = {"allconv": (3, 8, 8), "table7": (6, 16, 16)}
NAMES = [f"{kind}-{arch}" for arch in SHAPES for kind in ("bnsm", "gnsm")]


def _small(name, **options):
    torch.manual_seed(0)
    shape = SHAPES[name.split("-")[1]]
    model = nsm.build_model(name, in_shape=shape, num_classes=5, width=0.1, **options)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(2))
    return model, x


def _inputs_after_first(model):
    """Hooks the input of every NSM layer after the first and of the readout's average pool
    (what the last NSM layer passes on); returns the list the tensors are appended to."""
    seen = []
    readers = nsm_layers(model)[1:] + [m for m in model if isinstance(m, nn.AdaptiveAvgPool2d)]
    for m in readers:
        m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    return seen


@pytest.mark.parametrize("name", NAMES)
def test_binconcrete_layers_pass_signs_and_gradients(name):
    model, x = _small(name, estimator="binconcrete")
    set_generator(model, torch.Generator().manual_seed(1))
    seen = _inputs_after_first(model)
    model(x).sum().backward()
    assert len(seen) == len(nsm_layers(model))
    for i, v in enumerate(seen):
        # zero padding is inside NSMConv2d: what a layer reads is +-1 everywhere
        assert set(v.unique().tolist()) == {-1.0, 1.0}, (i, v.unique().numel())
    # the identity gradient of the sign reaches the first layers
    first = nsm_layers(model)[0]
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("mode", ["mean", "threshold"])
@pytest.mark.parametrize("name", ["bnsm-allconv", "gnsm-table7"])
def test_binconcrete_mean_pass_is_the_threshold_pass(name, mode):
    # as in the Table 6 BinConcrete models (docs/layers.md): sgn follows every NSM layer, so
    # the deterministic passes read +-1 too and "mean" equals "threshold"
    model, x = _small(name, estimator="binconcrete")
    seen = _inputs_after_first(model)
    with nsm.forward_mode(model, mode):
        out = model(x)
    assert all(set(v.unique().tolist()) <= {-1.0, 1.0} for v in seen)
    with nsm.forward_mode(model, "threshold" if mode == "mean" else "mean"):
        torch.testing.assert_close(model(x), out)


def _after_nsm(model):
    """The type of the module that follows each NSM layer."""
    children = list(model)
    return [type(children[i + 1]) for i, m in enumerate(children) if isinstance(m, nsm.NSMConv2d)]


@pytest.mark.parametrize("name", NAMES)
def test_default_estimator_network_is_unchanged(name):
    model, x = _small(name)
    assert not any(isinstance(m, nsm.SignSTE) for m in model.modules())
    # an NSM layer is followed by the next NSM layer, a pool, or the readout's average pool
    assert set(_after_nsm(model)) <= {nsm.NSMConv2d, nsm.nn.layers.MaxPool2d, nn.AdaptiveAvgPool2d}
    relaxed, _ = _small(name, estimator="binconcrete")
    assert _after_nsm(relaxed) == [nsm.SignSTE] * len(nsm_layers(relaxed))
    # with the default (prob) estimator the layers already pass +-1
    seen = _inputs_after_first(model)
    set_generator(model, torch.Generator().manual_seed(1))
    model(x)
    assert all(set(v.unique().tolist()) == {-1.0, 1.0} for v in seen)
