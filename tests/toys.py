"""Tiny synthetic datasets shared by tests that train for a few steps, and the comparison of
two such runs' files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from nsm.data import Dataset


def toy_dataset(n: int = 120) -> Dataset:
    """Three classes of 16x16 images, each with one bright horizontal block; 90 train, 30 test."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.3
    for k in range(3):  # one bright block per class
        x[y == k, :, 5 * k : 5 * k + 5, :] += 0.7
    return Dataset("toy", x[:90], y[:90], x[90:], y[90:], 3)


def run_metrics(run_dir):
    """metrics.jsonl without the timings."""
    return [
        {k: v for k, v in json.loads(line).items() if "seconds" not in k}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


def run_weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model_state"]


def assert_same_run(a, b):
    """Two run folders hold the same metrics (timings aside) and the same final weights."""
    assert run_metrics(a) == run_metrics(b)
    wa, wb = run_weights(a), run_weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def freeze_at_step_checkpoint(proc: subprocess.Popen, run_dir: Path, timeout: float = 120.0) -> dict:
    """Wait until the training ``proc`` has written a step checkpoint of epoch 2 or later, and
    return it with ``proc`` stopped (SIGSTOP) and alive: the caller signals a run that cannot
    have moved on, whatever the load of the machine. The checkpoint is only read while the
    process is stopped, so what is read is where the process stands."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the run ended before it was stopped: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, f"no step checkpoint of epoch 2 within {timeout:.0f} s"
        os.kill(proc.pid, signal.SIGSTOP)
        assert proc.poll() is None, f"the run ended before it was stopped: {proc.stderr.read().decode()}"
        if (run_dir / "checkpoint.pt").exists():
            ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
            if ckpt["epoch"] >= 1 and ckpt["in_epoch"] is not None:
                return ckpt
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
