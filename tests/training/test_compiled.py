"""The compiled fast path (nsm.training.compiled): when `nsm train` compiles, that the compiled network
fires and learns by the same laws as the eager one (inductor draws its own random numbers),
that a seeded compiled pass repeats itself, and that a failed compile falls back to eager."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import nsm
from nsm.training.compiled import AUTO_MIN_STEPS, Compiled, decide
from nsm.training.config import TrainConfig
from nsm.training.loop import fit
from toys import toy_dataset


@pytest.fixture(autouse=True)
def _fresh_dynamo(one_thread):
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(mode="off", network="bnsm", sampler=None, steps=10**6, record=False, distributed=False), False),
        (dict(mode="on", network="sn", sampler=None, steps=1, record=False, distributed=False), True),
        (dict(mode="auto", network="bnsm", sampler=None, steps=AUTO_MIN_STEPS, record=False, distributed=False), True),
        (dict(mode="auto", network="bnsm", sampler="neuron", steps=60_000, record=False, distributed=False), True),
        (
            dict(mode="auto", network="bnsm", sampler=None, steps=AUTO_MIN_STEPS - 1, record=False, distributed=False),
            False,
        ),
        (
            dict(mode="auto", network="bnsm", sampler="probability", steps=60_000, record=False, distributed=False),
            False,
        ),
        (dict(mode="auto", network="s2m", sampler=None, steps=60_000, record=False, distributed=False), False),
        (dict(mode="auto", network="gnsm", sampler=None, steps=60_000, record=False, distributed=False), False),
        (dict(mode="auto", network="dcnn", sampler=None, steps=60_000, record=False, distributed=False), False),
        (dict(mode="auto", network="bnsm", sampler=None, steps=60_000, record=True, distributed=False), False),
        (dict(mode="auto", network="bnsm", sampler=None, steps=60_000, record=False, distributed=True), False),
    ],
)
def test_auto_compiles_only_where_it_pays(kwargs, expected):
    use, why = decide(**kwargs)
    assert use is expected and why


def test_compiled_layer_fires_and_learns_by_the_eager_laws():
    """Inductor: P(+1) over 20,000 draws against firing_probability (4.5 binomial sd + 0.01 for
    the central-limit law at fan-in 400); the training gradient equals the eager gradient of
    2P - 1 (it does not depend on the draw); a seeded pass repeats itself bit for bit."""
    torch.manual_seed(1)
    layer = nsm.NSMLinear(400, 5)
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-1, 1, 5))
    x = (torch.rand(1, 400) * 2 - 1).sign()
    p = layer.firing_probability(x).detach()[0]
    fast = torch.compile(layer, fullgraph=True)
    with torch.no_grad():
        torch.manual_seed(0)
        z = fast(x.expand(20_000, -1))
        torch.manual_seed(0)
        again = fast(x.expand(20_000, -1))
    assert set(z.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(z, again)  # seeded: the same draws
    freq = (z > 0).double().mean(0)
    assert torch.all((freq - p).abs() <= 4.5 * torch.sqrt(p * (1 - p) / 20_000) + 0.01), (freq, p)
    xg = x.expand(64, -1).clone().requires_grad_()
    out = fast(xg)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    got = torch.autograd.grad((out * g).sum(), [xg, *layer.parameters()])
    want = torch.autograd.grad(((2 * layer.firing_probability(xg) - 1) * g).sum(), [xg, *layer.parameters()])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_compiled_mc_prediction_converges_to_the_exact_expectation():
    """One probability-sampler unit feeding a fixed readout (as tests/test_mc.py), compiled:
    the MC mean over S = 20,000 passes within 4.5 sd of the exact E[softmax]."""
    torch.manual_seed(0)
    unit = nsm.NSMLinear(40, 1, sampler="probability")
    readout = nn.Linear(1, 2)
    with torch.no_grad():
        readout.weight.copy_(torch.tensor([[1.5], [-1.0]]))
        readout.bias.copy_(torch.tensor([0.2, -0.1]))
    model = nn.Sequential(unit, readout)
    x = torch.randn(6, 40).sign()
    p = unit.firing_probability(x).detach()[:, 0].double()
    with torch.no_grad():
        up = torch.softmax(readout(torch.ones(1, 1)), -1)[0, 0].double()
        down = torch.softmax(readout(-torch.ones(1, 1)), -1)[0, 0].double()
    exact = p * up + (1 - p) * down
    S = 20_000
    probs = nsm.mc_predict(torch.compile(model, fullgraph=True), x, S, max_pass=10_000)
    tol = 4.5 * (up - down).abs() * torch.sqrt(p * (1 - p) / S)
    assert torch.all((probs[:, 0].double() - exact).abs() <= tol)


def test_a_failed_compile_falls_back_to_eager_once():
    class Breaks(nn.Module):
        def forward(self, x):
            torch._dynamo.graph_break()  # no full graph: fullgraph=True refuses it
            return x * 3

    logs = []
    model = Compiled(Breaks(), logs.append)
    x = torch.ones(3)
    torch.testing.assert_close(model(x), x * 3)
    torch.testing.assert_close(model(x), x * 3)
    assert len(logs) == 1 and logs[0].startswith("torch.compile failed (") and model.failed


def test_fit_compiles_on_request_and_auto_stays_eager_for_a_short_run(tmp_path):
    logs = []
    base = dict(model="bnsm", epochs=1, batch_size=30, samples=2, progress=False, threads=1, out=str(tmp_path))
    fit(TrainConfig(**base, run_name="auto"), dataset=toy_dataset(), log=logs.append)
    assert any(line.startswith("torch.compile: no (auto: 3 steps are too few") for line in logs)
    logs.clear()
    summary = fit(TrainConfig(**base, run_name="on", compile="on"), dataset=toy_dataset(), log=logs.append)
    assert "torch.compile: yes (--compile on)" in logs
    assert not any("failed" in line for line in logs)
    assert 0 <= summary["final_test_error"] <= 1
    saved = json.loads((tmp_path / "on" / "config.json").read_text())
    assert saved["compile"] == "on"
    state = torch.load(tmp_path / "on" / "checkpoint.pt", weights_only=True)["model_state"]
    assert not any(k.startswith(("_orig_mod", "model.")) for k in state)  # the model's own names


def test_runs_saved_before_the_option_existed_were_eager():
    config = TrainConfig.from_dict({"model": "bnsm"})
    assert config.compile == "off"
    assert TrainConfig().compile == "auto"
