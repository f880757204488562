"""Tests of nsm.studies.uncertainty: hand-computed values, conventions and plots."""

from __future__ import annotations

import itertools
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from nsm.studies.figures.uncertainty import (  # noqa: E402
    plot_accuracy_vs_samples,
    plot_ood_histograms,
    plot_reliability,
    plot_rotation,
)
from nsm.studies.uncertainty import (  # noqa: E402
    accuracy_vs_samples,
    auroc,
    brier_score,
    expected_calibration_error,
    expected_entropy,
    mutual_information,
    nll,
    predictive_entropy,
    reliability,
    rotate_images,
    summarize,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------------------- entropies


def test_entropy_uniform_is_log_c_and_one_hot_is_zero():
    for c in (2, 3, 10):
        uniform = torch.full((4, 3, c), 1.0 / c)
        log_c = torch.full((3,), math.log(c), dtype=torch.float64)
        assert torch.allclose(predictive_entropy(uniform), log_c, atol=1e-6)
        assert torch.allclose(expected_entropy(uniform), log_c, atol=1e-6)
        assert torch.allclose(mutual_information(uniform), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    one_hot = torch.eye(5)[None].repeat(3, 1, 1)  # (S=3, N=5, C=5), all samples agree
    h = predictive_entropy(one_hot)
    assert h.shape == (5,) and torch.isfinite(h).all()
    assert h.tolist() == [0.0] * 5 and expected_entropy(one_hot).tolist() == [0.0] * 5


def test_mutual_information_zero_when_samples_identical():
    p = torch.softmax(torch.randn(1, 6, 4, generator=torch.Generator().manual_seed(0)), -1)
    probs = p.repeat(7, 1, 1)
    mi = mutual_information(probs)
    assert mi.shape == (6,)
    assert (mi >= 0).all() and mi.max() < 1e-6
    assert torch.allclose(predictive_entropy(probs), expected_entropy(probs), atol=1e-6)


def test_mutual_information_of_opposite_one_hots_is_log_2():
    # two samples [1, 0] and [0, 1]: mean [1/2, 1/2] (entropy log 2), each sample entropy 0
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert predictive_entropy(probs).item() == pytest.approx(math.log(2), abs=1e-6)
    assert expected_entropy(probs).item() == pytest.approx(0.0, abs=1e-9)
    assert mutual_information(probs).item() == pytest.approx(math.log(2), abs=1e-6)


def test_entropies_of_a_confident_network_are_exact_in_float64():
    """Mutual information is a difference of two nearly equal entropies: computed at float32
    it lost about 1% of a confident network's values (14% came out 0). Checked against a
    direct float64 sum over the same float32 probabilities; tolerance 1e-9 relative."""
    gen = torch.Generator().manual_seed(0)
    s, n, c = 50, 400, 10
    logits = 0.5 * torch.randn(s, n, c, generator=gen)
    logits[:, torch.arange(n), torch.randint(c, (n,), generator=gen)] += 10 + 10 * torch.rand(n, generator=gen)
    probs = torch.softmax(logits, -1)  # float32, as mc_sample_probs returns them
    q = probs.double()

    def h(x):
        return -(x * x.clamp_min(1e-12).log()).sum(-1)

    want_total, want_expected = h(q.mean(0)), h(q).mean(0)
    want_mi = want_total - want_expected
    assert (want_mi > 0).all()
    for got, want in (
        (predictive_entropy(probs), want_total),
        (expected_entropy(probs), want_expected),
        (mutual_information(probs), want_mi),
    ):
        assert got.dtype == torch.float64
        assert ((got - want).abs() <= 1e-9 * want.abs()).all(), (got - want).abs().max()
    # float16 probabilities: a one-hot row has entropy 0 (the 1e-12 floor is 0 in float16: it was NaN)
    half = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]], dtype=torch.float16)
    assert predictive_entropy(half).tolist() == [0.0, math.log(2)]
    assert expected_entropy(half).tolist() == [0.0, math.log(2)]
    assert mutual_information(half).tolist() == [0.0, 0.0]
    assert str(predictive_entropy(torch.eye(2)[None])[0].item()) == "0.0"  # not -0.0


def test_expected_entropy_hand_value():
    # sample 1: [1/2, 1/2] -> log 2; sample 2: [1, 0] -> 0; mean (log 2) / 2
    # mean prob [3/4, 1/4] -> H = -(3/4 log 3/4 + 1/4 log 1/4)
    probs = torch.tensor([[[0.5, 0.5]], [[1.0, 0.0]]])
    h_bar = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert expected_entropy(probs).item() == pytest.approx(math.log(2) / 2, abs=1e-6)
    assert predictive_entropy(probs).item() == pytest.approx(h_bar, abs=1e-6)
    assert mutual_information(probs).item() == pytest.approx(h_bar - math.log(2) / 2, abs=1e-6)


# ----------------------------------------------------------------------------- NLL, Brier


def test_nll_and_brier_by_hand():
    # example 1: p = [0.7, 0.2, 0.1], y = 0 -> -log 0.7;  Brier 0.3^2 + 0.2^2 + 0.1^2 = 0.14
    # example 2: p = [0.4, 0.4, 0.2], y = 1 -> -log 0.4;  Brier 0.4^2 + 0.6^2 + 0.2^2 = 0.56
    # NLL = (-log 0.7 - log 0.4) / 2 = 0.63648...;        Brier = (0.14 + 0.56) / 2 = 0.35
    p = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])
    y = torch.tensor([0, 1])
    assert nll(p, y) == pytest.approx((-math.log(0.7) - math.log(0.4)) / 2, abs=1e-6)
    assert brier_score(p, y) == pytest.approx(0.35, abs=1e-6)


def test_nll_brier_extremes():
    y = torch.tensor([0, 1])
    right = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    wrong = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert nll(right, y) == pytest.approx(0.0, abs=1e-9)
    assert nll(wrong, y) == pytest.approx(-math.log(1e-12))  # finite thanks to the clamp
    assert brier_score(right, y) == pytest.approx(0.0)
    assert brier_score(wrong, y) == pytest.approx(2.0)  # the top of the [0, 2] range


# ----------------------------------------------------------------------------- calibration

# 3 classes, 2 bins (0, 0.5] and (0.5, 1]:
#   row  probs               conf  pred  label  correct  bin
#   a    [0.40, 0.30, 0.30]  0.40  0     0      yes      0
#   b    [0.30, 0.45, 0.25]  0.45  1     0      no       0
#   c    [0.90, 0.05, 0.05]  0.90  0     0      yes      1
#   d    [0.10, 0.20, 0.70]  0.70  2     1      no       1
# bin 0: n=2, acc 1/2, conf 0.425 -> gap 0.075;  bin 1: n=2, acc 1/2, conf 0.8 -> gap 0.3
# ECE = 2/4 * 0.075 + 2/4 * 0.3 = 0.1875
ECE_PROBS = torch.tensor([[0.40, 0.30, 0.30], [0.30, 0.45, 0.25], [0.90, 0.05, 0.05], [0.10, 0.20, 0.70]])
ECE_LABELS = torch.tensor([0, 0, 0, 1])


def test_ece_hand_computed():
    assert expected_calibration_error(ECE_PROBS, ECE_LABELS, bins=2) == pytest.approx(0.1875, abs=1e-6)
    # one bin: acc 1/2, conf (0.4 + 0.45 + 0.9 + 0.7) / 4 = 0.6125 -> ECE 0.1125
    assert expected_calibration_error(ECE_PROBS, ECE_LABELS, bins=1) == pytest.approx(0.1125, abs=1e-6)


def test_ece_zero_for_perfectly_calibrated():
    # 10 examples at confidence 0.8 with 8 right, 5 at confidence 0.6 with 3 right
    p = torch.tensor([[0.8, 0.2]] * 10 + [[0.4, 0.6]] * 5)
    y = torch.tensor([0] * 8 + [1] * 2 + [1] * 3 + [0] * 2)
    # (with one bin both groups mix: acc 11/15, conf (10 * 0.8 + 5 * 0.6) / 15 = 11/15 -> 0)
    for bins in (1, 2, 10, 15):
        assert expected_calibration_error(p, y, bins=bins) == pytest.approx(0.0, abs=1e-6)


def test_reliability_bins():
    rel = reliability(ECE_PROBS, ECE_LABELS, bins=2)
    assert rel["edges"] == pytest.approx([0.0, 0.5, 1.0])
    assert rel["counts"] == [2, 2]
    assert rel["accuracy"] == pytest.approx([0.5, 0.5])
    assert rel["confidence"] == pytest.approx([0.425, 0.8], abs=1e-6)
    assert rel["ece"] == pytest.approx(0.1875, abs=1e-6)
    assert rel["n"] == 4 and rel["bins"] == 2

    # edges: 0.5 falls in the first bin (0, 0.5], 1.0 in the last (0.75, 1]; empty bins NaN
    p = torch.tensor([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]])
    rel = reliability(p, torch.tensor([0, 1]), bins=4)
    assert rel["edges"] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert rel["counts"] == [0, 1, 0, 1]
    assert math.isnan(rel["accuracy"][0]) and math.isnan(rel["confidence"][2])
    assert rel["accuracy"][1] == 1.0 and rel["confidence"][3] == pytest.approx(1.0)
    assert sum(rel["counts"]) == 2


# ----------------------------------------------------------------------------- AUROC


def _brute_auroc(s_in, s_out) -> float:
    total = sum(1.0 if o > i else 0.5 if o == i else 0.0 for i, o in itertools.product(s_in, s_out))
    return total / (len(s_in) * len(s_out))


def test_auroc_separable_reversed_identical():
    assert auroc([0.1, 0.2, 0.3], [0.5, 0.9]) == 1.0
    assert auroc([0.5, 0.9], [0.1, 0.2, 0.3]) == 0.0
    same = torch.tensor([0.3, 0.1, 0.7, 0.7])
    assert auroc(same, same.clone()) == pytest.approx(0.5)
    assert auroc([2.0, 2.0], [2.0]) == pytest.approx(0.5)  # all tied


def test_auroc_ties_match_pairwise_count():
    s_in = [0.1, 0.4, 0.4, 0.7, 0.2]
    s_out = [0.4, 0.5, 0.1, 0.9]
    # pairs (out > in) + 1/2 (out == in): 0.4 -> 2 + 2*0.5; 0.5 -> 4; 0.1 -> 0.5; 0.9 -> 5
    assert _brute_auroc(s_in, s_out) == pytest.approx((3 + 4 + 0.5 + 5) / 20)
    assert auroc(s_in, s_out) == pytest.approx(_brute_auroc(s_in, s_out))
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 6, (37,), generator=g).float()
    b = torch.randint(1, 8, (23,), generator=g).float()
    assert auroc(a, b) == pytest.approx(_brute_auroc(a.tolist(), b.tolist()), abs=1e-12)


# ----------------------------------------------------------------------------- samples


def test_accuracy_vs_samples_changes_with_k():
    # labels both 0.
    # ex 0: samples [.9,.1], [.2,.8], [.2,.8] -> means of first k: .9 (right), .55 (right), .433 (wrong)
    # ex 1: samples [.4,.6], [.9,.1], [.9,.1] -> .4 (wrong), .65 (right), .733 (right)
    probs = torch.tensor(
        [
            [[0.9, 0.1], [0.4, 0.6]],
            [[0.2, 0.8], [0.9, 0.1]],
            [[0.2, 0.8], [0.9, 0.1]],
        ]
    )
    y = torch.tensor([0, 0])
    out = accuracy_vs_samples(probs, y, counts=(1, 2, 3, 5))
    assert out == {1: 0.5, 2: 1.0, 3: 0.5}  # k=5 > S=3 skipped
    assert list(accuracy_vs_samples(probs, y)) == [1, 2]  # default counts: 1, 2 fit
    with pytest.raises(ValueError, match="S=3"):
        accuracy_vs_samples(probs, y, counts=(5, 10))
    with pytest.raises(ValueError, match="counts"):
        accuracy_vs_samples(probs, y, counts=(0,))


def test_summarize_keys_and_consistency():
    g = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(8, 30, 4, generator=g), -1)
    y = torch.randint(0, 4, (30,), generator=g)
    s = summarize(probs, y, bins=10)
    assert set(s) == {
        "accuracy",
        "error",
        "nll",
        "brier",
        "ece",
        "predictive_entropy",
        "mutual_information",
        "expected_entropy",
        "samples",
        "n",
        "bins",
    }
    mean = probs.mean(0)
    assert s["accuracy"] == pytest.approx((mean.argmax(1) == y).float().mean().item())
    assert s["accuracy"] + s["error"] == pytest.approx(1.0)
    assert s["nll"] == pytest.approx(nll(mean, y))
    assert s["ece"] == pytest.approx(expected_calibration_error(mean, y, bins=10))
    assert s["predictive_entropy"] == pytest.approx(s["expected_entropy"] + s["mutual_information"], abs=1e-6)
    assert (s["samples"], s["n"], s["bins"]) == (8, 30, 10)


def test_validation_messages():
    p3 = torch.full((2, 3, 4), 0.25)
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"probs.*\(S, N, C\).*\(3, 4\)"):
        predictive_entropy(p3[0])
    with pytest.raises(ValueError, match=r"mean_probs.*\(N, C\)"):
        nll(p3, y)
    with pytest.raises(ValueError, match=r"labels.*\(3,\).*\(2,\)"):
        brier_score(p3[0], y[:2])
    with pytest.raises(ValueError, match="labels must lie"):
        nll(p3[0], torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(p3[0], y, bins=0)
    with pytest.raises(ValueError, match="sum to 1"):
        mutual_information(torch.randn(2, 3, 4).exp())  # unnormalized
    with pytest.raises(ValueError, match="non-negative"):
        mutual_information(torch.randn(2, 3, 4))  # logits
    with pytest.raises(ValueError, match="scores_out"):
        auroc([0.1], [])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        rotate_images(torch.zeros(3, 4, 4), 10)


# ----------------------------------------------------------------------------- rotation


def _images(n=2, c=3, h=8, w=8):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(3))


def test_rotate_zero_is_exact_identity():
    x = _images()
    out = rotate_images(x, 0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_rotate_90_equals_rot90():
    x = _images()
    assert torch.allclose(rotate_images(x, 90), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(rotate_images(x, -90), torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5)
    # direction: the top-right pixel moves to the top-left (counter-clockwise as displayed)
    e = torch.zeros(1, 1, 5, 5)
    e[0, 0, 0, 4] = 1.0
    assert rotate_images(e, 90)[0, 0, 0, 0].item() == pytest.approx(1.0, abs=1e-5)


def test_rotate_360_and_180_twice_are_identity_inside():
    x = _images(h=12, w=12)
    inner = (..., slice(2, -2), slice(2, -2))
    assert torch.allclose(rotate_images(x, 360)[inner], x[inner], atol=1e-5)
    assert torch.allclose(rotate_images(rotate_images(x, 180), 180)[inner], x[inner], atol=1e-5)


def test_rotate_non_square_is_not_sheared():
    x = _images(h=6, w=10)
    assert torch.allclose(rotate_images(x, 180), x.flip(-1, -2), atol=1e-5)
    # a point 8 px right of the centre, turned 30 degrees counter-clockwise, ends up at
    # (8 cos 30, 8 sin 30) px right of and above the centre (centroid of the bilinear blob)
    h, w = 21, 41
    e = torch.zeros(1, 1, h, w)
    e[0, 0, h // 2, w // 2 + 8] = 1.0
    out = rotate_images(e, 30)[0, 0]
    rows, cols = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    u = ((out * cols).sum() / out.sum()).item() - w // 2
    v = ((out * rows).sum() / out.sum()).item() - h // 2
    assert u == pytest.approx(8 * math.cos(math.pi / 6), abs=0.3)
    assert v == pytest.approx(-8 * math.sin(math.pi / 6), abs=0.3)


# ----------------------------------------------------------------------------- plots


def test_plots_return_axes_with_lines():
    rel = reliability(ECE_PROBS, ECE_LABELS, bins=4)
    ax = plot_reliability(rel)
    assert len(ax.lines) == 1  # the diagonal; the bins are bars
    assert len(ax.patches) > 0

    curves = {"nsm": {1: 0.9, 10: 0.95, 100: 0.97}, "det": {1: 0.96, 10: 0.96}}
    ax = plot_accuracy_vs_samples(curves)
    assert len(ax.lines) == 2

    angles = [0, 30, 60]
    series = {
        "nsm": {"accuracy": [0.99, 0.8, 0.3], "entropy": [0.1, 0.5, 1.2]},
        "det": {"accuracy": [0.99, 0.7, 0.2], "predictive_entropy": [0.0, 0.2, 0.4]},
    }
    ax_acc, ax_ent = plot_rotation(angles, series)
    assert len(ax_acc.lines) == 2 and len(ax_ent.lines) == 2
    fig, axes = plt.subplots(1, 2)
    assert tuple(plot_rotation(angles, series, axes=axes)) == tuple(axes)
    with pytest.raises(ValueError, match="angles"):
        plot_rotation([0, 30], series)

    fig, ax0 = plt.subplots()
    ax = plot_ood_histograms([0.1, 0.2, 0.3], [0.5, 0.6], ax=ax0, label="MI (nats)")
    assert ax is ax0 and len(ax.containers) == 2
    assert "1.000" in ax.get_title()


def test_accuracy_vs_samples_breaks_a_near_tie_as_summarize_does():
    # the mean of (0.1, 0.9), (0.7, 0.3), (0.7, 0.3) is (0.5, 0.5) in float32 but 0.49999999 vs
    # 0.5 in float64: both must read the same class (found by review: summarize 0.0, this 1.0)
    probs = torch.tensor([[[0.1, 0.9]], [[0.7, 0.3]], [[0.7, 0.3]]])
    y = torch.tensor([1])
    assert accuracy_vs_samples(probs, y, [1, 3]) == {1: 1.0, 3: summarize(probs, y)["accuracy"]}
