"""What must hold on a CUDA device, checked in a few minutes: the laws and gradients of the NSM
layers where the device matters (random numbers drawn on the GPU, eager and compiled), Monte-Carlo
prediction, a short training run, and a resumed CUDA run. Prints one line per check and a
summary; exits 1 if any check fails. Run by benchmarks/gpu_check.sh.

The gradient check runs with TF32 off (cuBLAS and cuDNN): it compares two float32 gradients to
1e-4, which TF32 products (10-bit mantissa) need not meet. The resumed-run check runs with
torch's deterministic algorithms (cuDNN deterministic, CUBLAS_WORKSPACE_CONFIG set before CUDA
starts; an operation without a deterministic CUDA kernel is named in a warning): bit-for-bit
equality is asked of it. The compiled `synapse` sampler is not checked (it runs eagerly).

Usage: python benchmarks/gpu_check.py [--device cuda] [--no-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback

import torch
from torch import nn

import nsm
import nsm.training.epoch
from nsm.data import Dataset
from nsm.training.config import TrainConfig
from nsm.training.loop import fit

N = 20_000


def pm1(shape, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, shape, generator=g) * 2 - 1).float().to(device)


def frequency_check(device, noise, sampler, compiled):
    """P(+1) over N draws against firing_probability: 4.5 binomial sd + 0.01 (central-limit law)."""
    torch.manual_seed(0)
    layer = nsm.NSMLinear(800, 6, noise=noise, sampler=sampler).to(device)
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-2, 2, 6))
    x = pm1((1, 800), device)
    p = layer.firing_probability(x).detach()[0].double()
    f = torch.compile(layer, fullgraph=True) if compiled else layer
    with torch.no_grad():
        z = torch.cat([f(x.expand(N // 4, -1)) for _ in range(4)])
    freq = (z > 0).double().mean(0)
    tol = 4.5 * torch.sqrt(p * (1 - p) / N) + 0.01
    worst = float((freq - p).abs().max())
    assert torch.all((freq - p).abs() <= tol), f"max |freq - P| = {worst:.4f}"
    return f"max |freq - P| {worst:.4f}"


def conv_border_check(device):
    torch.manual_seed(1)
    layer = nsm.NSMConv2d(64, 3, 3, padding=1, noise="gaussian", sigma=0.8).to(device)
    x = pm1((1, 64, 5, 5), device, seed=2)
    p = layer.firing_probability(x).detach()[0].double()
    with torch.no_grad():
        z = torch.cat([layer(x.expand(N // 4, -1, -1, -1)) for _ in range(4)])
    freq = (z > 0).double().mean(0)
    tol = 4.5 * torch.sqrt(p * (1 - p) / N)
    worst = float((freq - p).abs().max())
    assert torch.all((freq - p).abs() <= tol), f"max |freq - P| = {worst:.4f}"
    return f"every position of a padded conv, max |freq - P| {worst:.4f}"


@contextlib.contextmanager
def exact_float32():
    """TF32 off for cuBLAS products and cuDNN convolutions (CUDA lets convolutions use it by
    default), restored after: float32 products stay float32. No effect on the CPU."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@contextlib.contextmanager
def deterministic():
    """torch's deterministic algorithms (an operation without one warns, naming itself), cuDNN
    deterministic and not benchmarking, restored after. cuBLAS needs CUBLAS_WORKSPACE_CONFIG set
    before it starts: main() sets it."""
    old = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0], warn_only=old[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old[2], old[3]


def gradient_check(device, compiled):
    """The sample's gradient against the gradient of 2P - 1, with TF32 off (both are float32)."""
    with exact_float32():
        torch.manual_seed(3)
        layer = nsm.NSMConv2d(3, 4, 3, padding=1).to(device)
        x = pm1((8, 3, 6, 6), device).requires_grad_()
        f = torch.compile(layer, fullgraph=True) if compiled else layer
        out = f(x)
        g = torch.randn_like(out)
        got = torch.autograd.grad((out * g).sum(), [x, *layer.parameters()])
        want = torch.autograd.grad(((2 * layer.firing_probability(x) - 1) * g).sum(), [x, *layer.parameters()])
    err = max(float((a - b).abs().max()) for a, b in zip(got, want))
    assert err < 1e-4, f"max gradient difference {err:.2e}"
    return f"max |grad - grad of 2P-1| {err:.1e}"


def mc_check(device):
    torch.manual_seed(0)
    unit = nsm.NSMLinear(40, 1, sampler="probability").to(device)
    readout = nn.Linear(1, 2).to(device)
    x = pm1((6, 40), device)
    p = unit.firing_probability(x).detach()[:, 0].double()
    with torch.no_grad():
        up = torch.softmax(readout(torch.ones(1, 1, device=device)), -1)[0, 0].double()
        down = torch.softmax(readout(-torch.ones(1, 1, device=device)), -1)[0, 0].double()
    probs = nsm.mc_predict(nn.Sequential(unit, readout), x, N)
    exact = p * up + (1 - p) * down
    tol = 4.5 * (up - down).abs() * torch.sqrt(p * (1 - p) / N) + 1e-6
    worst = float((probs[:, 0].double() - exact).abs().max())
    assert torch.all((probs[:, 0].double() - exact).abs() <= tol), f"max error {worst:.4f}"
    return f"max |MC - exact| {worst:.4f} (S={N})"


def toy_data():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (400,), generator=g)
    x = torch.rand(400, 1, 16, 16, generator=g) * 0.3
    for k in range(3):
        x[y == k, :, 5 * k : 5 * k + 5, :] += 0.7
    return Dataset("toy", x[:300], y[:300], x[300:], y[300:], 3)


def training_check(device):
    """A short toy run learns, and a run stopped mid-way and resumed ends bit for bit as the
    uninterrupted one (deterministic algorithms on)."""
    with deterministic(), tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            model="bnsm",
            epochs=3,
            batch_size=30,
            samples=4,
            device=str(device),
            progress=False,
            out=tmp,
            run_name="run",
            checkpoint_every=7,
        )
        summary = fit(cfg, dataset=toy_data(), log=lambda *a: None)
        assert summary["final_test_error"] < 0.2, f"toy test error {summary['final_test_error']:.2f}"
        # a run stopped mid-way and resumed on the GPU ends as the uninterrupted one
        stopped = cfg.replace(run_name="stopped")
        real, calls = nsm.training.epoch.train_step, [0]  # looked up there by train_one_epoch

        def stop(*a, **k):
            calls[0] += 1
            if calls[0] == 15:
                raise KeyboardInterrupt
            return real(*a, **k)

        nsm.training.epoch.train_step = stop
        try:
            fit(stopped, dataset=toy_data(), log=lambda *a: None)
        except KeyboardInterrupt:
            pass
        finally:
            nsm.training.epoch.train_step = real
        assert calls[0] == 15, f"the run was not stopped mid-way ({calls[0]} steps seen by the stop)"
        fit(stopped, dataset=toy_data(), resume=f"{tmp}/stopped", log=lambda *a: None)
        a = torch.load(f"{tmp}/run/checkpoint.pt", weights_only=True)["model_state"]
        b = torch.load(f"{tmp}/stopped/checkpoint.pt", weights_only=True)["model_state"]
        same = all(torch.equal(a[k], b[k]) for k in a)
        assert same, "the resumed CUDA run differs from the uninterrupted one"
    return f"toy error {100 * summary['final_test_error']:.1f}%, resumed run bit for bit"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true", help="eager checks only (quick, e.g. on the CPU)")
    args = ap.parse_args(argv)
    # cuBLAS reads this when it starts (the first CUDA product): deterministic() needs it
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: torch {torch.__version__} sees no CUDA device; nothing checked")
        return 1
    device = torch.device(args.device)
    checks = [
        (
            f"firing frequency, {n} noise, {s} sampler{', compiled' if c else ''}",
            lambda n=n, s=s, c=c: frequency_check(device, n, s, c),
        )
        for n in ("bernoulli", "gaussian")
        for s in ("neuron", "probability", "synapse")
        for c in (False, True)
        if not (c and (s == "synapse" or args.no_compile))
    ]
    checks += [
        ("padded convolution border law", lambda: conv_border_check(device)),
        ("prob gradient, eager", lambda: gradient_check(device, False)),
    ]
    if not args.no_compile:
        checks.append(("prob gradient, compiled", lambda: gradient_check(device, True)))
    checks += [
        ("mc_predict against the exact expectation", lambda: mc_check(device)),
        ("training and bit-for-bit resume", lambda: training_check(device)),
    ]
    failed = 0
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device) if device.type == 'cuda' else device}")
    for name, check in checks:
        t0 = time.perf_counter()
        try:
            detail = check()
            print(f"PASS  {name}: {detail} ({time.perf_counter() - t0:.1f} s)")
        except Exception as exc:  # report every check, then fail
            failed += 1
            print(f"FAIL  {name}: {exc}")
            traceback.print_exc(limit=3, file=sys.stdout)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
