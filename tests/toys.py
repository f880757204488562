"""Tiny synthetic datasets shared by tests that train for a few steps."""

from __future__ import annotations

import torch

from nsm.data import Dataset


def toy_dataset(n: int = 120) -> Dataset:
    """Three classes of 16x16 images, each with one bright horizontal block; 90 train, 30 test."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.3
    for k in range(3):  # one bright block per class
        x[y == k, :, 5 * k:5 * k + 5, :] += 0.7
    return Dataset("toy", x[:90], y[:90], x[90:], y[90:], 3)
