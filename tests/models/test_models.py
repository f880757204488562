"""The registered networks: SI Table 6 as bNSM, gNSM and dCNN."""

import re

import pytest
import torch
from torch import nn

import nsm


@pytest.mark.parametrize("name", nsm.MODELS.names())
def test_every_model_trains_one_step(name):
    torch.manual_seed(0)
    model = nsm.build_model(name)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    if hasattr(model, "contrastive_divergence"):  # the S2M computes its own update
        model.contrastive_divergence(x, y)
    else:
        nn.functional.cross_entropy(out, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("sampler", ["neuron", "probability", "synapse"])
def test_nsm_options_reach_every_layer(sampler):
    model = nsm.build_model("bnsm", sampler=sampler, estimator="ste")
    layers = nsm.nn.layers.nsm_layers(model)
    assert [layer.estimator.name for layer in layers] == ["ste"] * 3
    # convolutions share filters: the synapse sampler applies to the fully connected layer
    expect = [sampler if sampler != "synapse" else "neuron"] * 2 + [sampler]
    assert [layer.sampler.name for layer in layers] == expect
    out = model(torch.rand(2, 1, 28, 28))
    out.sum().backward()
    assert not any(isinstance(m, nsm.SignSTE) for m in model)


def test_binconcrete_models_take_no_sampler_and_sign_their_relaxed_outputs():
    model = nsm.build_model("bnsm", estimator="binconcrete")
    assert [layer.sampler for layer in nsm.nn.layers.nsm_layers(model)] == [None] * 3
    assert "sampler" not in repr(model)
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    assert any(isinstance(m, nsm.SignSTE) for m in model)
    with pytest.raises(ValueError, match="draws no synaptic noise.*sampler='probability'"):
        nsm.build_model("bnsm-binconcrete", sampler="probability")


def test_real_input_nsm_reads_grey_levels_in_its_first_layer_only():
    torch.manual_seed(0)
    model = nsm.build_model("bnsm-real")
    layers = nsm.nn.layers.nsm_layers(model)
    assert [layer.variance for layer in layers] == ["exact", "norm", "norm"]
    assert not any(isinstance(m, nsm.Binarize) for m in model)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(model[0](x), 2 * x - 1)  # grey levels, not their signs
    first = layers[0]
    p_real = first.firing_probability(model[0](x))
    p_sign = first.firing_probability((2 * x - 1).sign())
    assert not torch.allclose(p_real, p_sign)
    assert nsm.nn.layers.nsm_layers(nsm.build_model("gnsm-real"))[0].noise.name == "gaussian"


def test_table6_shapes_and_noise_levels():
    model = nsm.build_model("bnsm")
    convs = [m for m in model if isinstance(m, nsm.NSMConv2d)]
    fc = [m for m in model if isinstance(m, nsm.NSMLinear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (5, 5)), (32, 64, (5, 5))]
    assert [c.noise.param for c in convs] == [0.25, 0.25] and fc[0].noise.param == 0.5
    assert (fc[0].in_features, fc[0].out_features) == (1024, 512)
    assert isinstance(model[0], nsm.Binarize) and isinstance(model[-1], nn.Linear)
    g = nsm.build_model("gnsm")
    assert {m.noise.name for m in nsm.nn.layers.nsm_layers(g)} == {"gaussian"}
    # N-MNIST-shaped input: 10 x 34 x 34 -> the fully connected layer takes 64*5*5 = 1600
    n = nsm.build_model("bnsm", in_shape=(10, 34, 34))
    assert [m for m in n if isinstance(m, nsm.NSMLinear)][0].in_features == 1600
    assert n(torch.rand(2, 10, 34, 34)).shape == (2, 10)
    d = nsm.build_model("dcnn", num_classes=26)
    assert d(torch.rand(2, 1, 28, 28)).shape == (2, 26)


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet'; known: bd, bn, bnn, bnsm"):
        nsm.build_model("resnet")
    with pytest.raises(ValueError, match="in_shape must be"):
        nsm.build_model("bnsm", in_shape=(28, 28))
    with pytest.raises(ValueError, match="too small"):
        nsm.build_model("bnsm", in_shape=(1, 12, 12))
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        nsm.build_model("bnsm", num_classes=1)
    with pytest.raises(ValueError, match="model 'dcnn' has no option 'sampler'"):
        nsm.build_model("dcnn", sampler="neuron")  # dCNN has no NSM options


@pytest.mark.parametrize("name", nsm.MODELS.names())
def test_every_model_takes_other_shapes_and_classes(name):
    model = nsm.build_model(name, in_shape=(2, 20, 24), num_classes=26)
    assert model(torch.rand(3, 2, 20, 24)).shape == (3, 26)


def test_the_comparison_is_on_one_architecture():
    table6 = [
        "bnsm",
        "gnsm",
        "bnsm-binconcrete",
        "gnsm-binconcrete",
        "ste",
        "bn",
        "dcnn",
        "sigmoid",
        "bd",
        "wbd",
        "sn",
        "stnn",
        "bnn",
    ]
    for name in table6:
        model = nsm.build_model(name)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (5, 5)), (32, 64, (5, 5))], (
            name
        )
        assert [(f.in_features, f.out_features) for f in fcs] == [(1024, 512), (512, 10)], name
    for name in ("bnsm-fc", "stnn-fc"):
        fcs = [m for m in nsm.build_model(name).modules() if isinstance(m, nn.Linear)]
        assert [(f.in_features, f.out_features) for f in fcs] == [(784, 300), (300, 300), (300, 300), (300, 10)], name


def test_fixed_options_are_refused_clearly():
    with pytest.raises(ValueError, match="model 'ste' fixes estimator='ste'"):
        nsm.build_model("ste", estimator="prob")
    with pytest.raises(ValueError, match="model 'gnsm' fixes noise='gaussian'"):
        nsm.build_model("gnsm", noise="bernoulli")


def test_options_that_would_change_nothing_are_refused():
    """bnsm took sigma, gnsm p_conv / p_fc, bn an estimator and a sampler, and ignored them;
    bnsm-allconv with noise= ended in a TypeError."""
    cases = [
        ("bnsm", dict(sigma=2.0), "bernoulli synapses have no sigma"),
        ("bnsm-wide", dict(sigma=2.0), "bernoulli synapses have no sigma"),
        ("gnsm", dict(p_conv=0.5), "gaussian synapses have no p_conv"),
        ("gnsm", dict(p_fc=0.3, p_conv=0.5), "gaussian synapses have no p_conv, p_fc"),
        ("bnsm-allconv", dict(sigma=2.0, width=0.1), "bernoulli synapses have no sigma"),
        (
            "bnsm-fc",
            dict(sigma=2.0),
            "bernoulli synapses have no sigma (it would change nothing): their noise is set by p;",
        ),
        ("bnsm", dict(sigma=2.0), "their noise is set by p_conv, p_fc; for the other noise use the gnsm model"),
        ("gnsm-table7", dict(p=0.3, width=0.1), "gaussian synapses have no p "),
        ("bnsm-allconv", dict(noise="gaussian", width=0.1), "model 'bnsm-allconv' fixes noise='bernoulli'"),
        ("bn", dict(estimator="ste"), "model 'bn' takes no estimator: its units are noise-free"),
        ("bn", dict(sampler="probability", alpha="odds"), "model 'bn' takes no alpha, sampler"),
    ]
    for name, options, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            nsm.build_model(name, **options)
    # the options of the model's own noise still reach its layers
    assert {layer.noise.param for layer in nsm.nn.layers.nsm_layers(nsm.build_model("gnsm", sigma=0.5))} == {0.5}
    assert [layer.noise.param for layer in nsm.nn.layers.nsm_layers(nsm.build_model("bnsm", p_conv=0.3))] == [
        0.3,
        0.3,
        0.5,
    ]
    assert {
        layer.noise.param for layer in nsm.nn.layers.nsm_layers(nsm.build_model("gnsm-table7", sigma=2.0, width=0.1))
    } == {2.0}


def test_the_candidate_variants_change_one_thing_each():
    unitbias = nsm.build_model("bnsm-unitbias")
    assert [layer.bias_scale for layer in nsm.nn.layers.nsm_layers(unitbias)] == ["unit"] * 3
    assert [layer.bias_scale for layer in nsm.nn.layers.nsm_layers(nsm.build_model("bnsm"))] == ["weight"] * 3
    with pytest.raises(ValueError, match="fixes bias_scale"):
        nsm.build_model("bnsm-unitbias", bias_scale="weight")
    for wide, base, width in (("bnsm-wide", "bnsm", 1024), ("dcnn-wide", "dcnn", 1024), ("dcnn-150", "dcnn", 150)):
        shapes = [tuple(p.shape) for p in nsm.build_model(wide).parameters()]
        base_shapes = [tuple(p.shape) for p in nsm.build_model(base).parameters()]
        changed = [(a, b) for a, b in zip(shapes, base_shapes) if a != b]
        assert len(shapes) == len(base_shapes) and changed
        assert all(width in a and 512 in b for a, b in changed), changed  # only the fc layer's width
