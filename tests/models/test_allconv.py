"""SI Table 7, the all-convolutional CIFAR net, per-dataset networks, schedules, preprocessing."""

import pytest
import torch
from torch import nn

import nsm
from nsm.data.transforms import apply_zca, channel_stats, fit_zca, standardize, translate_flip
from nsm.training.config import TrainConfig, model_for_dataset
from nsm.training.loop import make_scheduler


def _convs(model):
    return [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.padding[0])
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]


@pytest.mark.parametrize("kind", ["bnsm", "gnsm", "dcnn"])
def test_table7_layout_and_pass(kind):
    model = nsm.build_model(f"{kind}-table7", in_shape=(6, 64, 64), num_classes=11)
    c = [96] * 3 + [192] * 3 + [256] * 6
    ks = [3] * 10 + [1, 1]
    assert _convs(model) == [(i, o, k, k // 2) for i, o, k in zip([6] + c[:-1], c, ks)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    layers = nsm.nn.layers.nsm_layers(model)
    assert len(layers) == (0 if kind == "dcnn" else 12)
    assert all(layer.noise.param == 0.5 for layer in layers if layer.noise.name == "bernoulli")
    small = nsm.build_model(f"{kind}-table7", in_shape=(6, 64, 64), num_classes=11, width=0.125)
    out = small(torch.rand(2, 6, 64, 64))
    assert out.shape == (2, 11)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in small.parameters())


@pytest.mark.parametrize("kind", ["bnsm", "gnsm", "dcnn"])
def test_allconv_layout_and_real_first_layer(kind):
    model = nsm.build_model(f"{kind}-allconv", in_shape=(3, 32, 32), num_classes=100)
    c = [96] * 3 + [192] * 6
    ks = [3] * 7 + [1, 1]
    assert _convs(model) == [(i, o, k, k // 2) for i, o, k in zip([3] + c[:-1], c, ks)]
    layers = nsm.nn.layers.nsm_layers(model)
    if kind == "dcnn":
        assert not layers and sum(isinstance(m, nn.ReLU) for m in model.modules()) == 9
    else:
        # one real-valued convolution reads the image; the first NSM layer gets real inputs
        first = [m for m in model.modules() if isinstance(m, nn.Conv2d)][0]
        assert type(first) is nn.Conv2d and len(layers) == 8
        assert [layer.variance for layer in layers] == ["exact"] + ["norm"] * 7
        assert not any(isinstance(m, nsm.Binarize) for m in model.modules())
    small = nsm.build_model(f"{kind}-allconv", in_shape=(3, 32, 32), num_classes=100, width=0.1)
    out = small(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100)
    out.sum().backward()


def test_model_for_dataset():
    assert model_for_dataset("bnsm", "cifar10") == "bnsm-allconv"
    assert model_for_dataset("gnsm", "cifar100") == "gnsm-allconv"
    assert model_for_dataset("dcnn", "dvs-gesture") == "dcnn-table7"
    assert model_for_dataset("bnsm", "nmnist") == "bnsm"
    assert model_for_dataset("bnsm-allconv", "cifar10") == "bnsm-allconv"
    with pytest.raises(ValueError, match="'bd' is defined on the Table 6 network only"):
        model_for_dataset("bd", "dvs-gesture")


def test_linear_and_step_schedules():
    def lrs(config):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
        sched = make_scheduler(opt, config)
        out = []
        for _ in range(config.epochs):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    lin = TrainConfig(lr=1.0, epochs=10, lr_schedule="linear", lr_decay_start=4)
    assert lrs(lin) == pytest.approx([1, 1, 1, 1, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    step = TrainConfig(lr=1.0, epochs=5, lr_step=2, lr_gamma=0.5)
    assert lrs(step) == pytest.approx([1, 1, 0.5, 0.5, 0.25])
    cifar = TrainConfig.for_dataset("cifar10")
    assert (cifar.epochs, cifar.lr, cifar.lr_schedule, cifar.lr_decay_start, cifar.samples) == (
        300,
        1e-3,
        "linear",
        100,
        101,
    )
    # the convention, as docs/design.md §5 states it: CIFAR's epochs 1-101 at 1e-3, then down
    cifar_lrs = lrs(TrainConfig(lr=1e-3, epochs=300, lr_schedule="linear", lr_decay_start=100))
    assert cifar_lrs[100] == 1e-3 and cifar_lrs[101] == pytest.approx(0.995e-3) and cifar_lrs[-1] == pytest.approx(5e-6)
    dvs = TrainConfig.for_dataset("dvs-gesture", epochs=7)
    assert (dvs.epochs, dvs.lr_step, dvs.lr) == (7, 100, 3e-4)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="cosine")


def test_zca_whitens_with_training_statistics():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(12, 12, generator=g)
    train = (torch.randn(5000, 12, generator=g) @ mix + 3.0).view(5000, 3, 2, 2)
    mean, w = fit_zca(train, eps=1e-6)
    white = apply_zca(train, mean, w).view(5000, 12).double()
    cov = torch.cov(white.T)
    assert torch.allclose(cov, torch.eye(12, dtype=cov.dtype), atol=2e-3)
    assert torch.allclose(w, w.T, atol=1e-8)  # ZCA: the symmetric whitening matrix
    # the test set is whitened with the training set's statistics, not its own
    test = torch.randn(10, 3, 2, 2, generator=g)
    expect = ((test.reshape(10, 12).double() - mean) @ w).float().view(10, 3, 2, 2)
    assert torch.allclose(apply_zca(test, mean, w), expect, atol=1e-5)
    m, s = channel_stats(train)
    z = standardize(train, m, s)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)


def test_translate_flip_is_a_shift_or_flip_of_each_image():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5) + 1
    g = torch.Generator().manual_seed(1)
    pad = nn.functional.pad(x, (1, 1, 1, 1))
    candidates = []
    for i in range(2):
        cands = [pad[i, :, dy : dy + 5, dx : dx + 5] for dy in range(3) for dx in range(3)]
        candidates.append(cands + [c.flip(-1) for c in cands])
    seen_flip = seen_shift = False
    for _ in range(50):
        out = translate_flip(x, g, max_shift=1)
        for i in range(2):
            k = next(k for k, c in enumerate(candidates[i]) if torch.equal(out[i], c))
            seen_flip |= k >= 9
            seen_shift |= k % 9 != 4
    assert seen_flip and seen_shift
    flips = sum(torch.equal(translate_flip(x[:1], g, max_shift=0)[0], x[0].flip(-1)) for _ in range(400))
    assert 160 <= flips <= 240  # Binomial(400, 1/2): mean 200, std 10
