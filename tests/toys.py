"""Tiny synthetic datasets shared by tests that train for a few steps, and the comparison of
two such runs' files."""

from __future__ import annotations

import json

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
