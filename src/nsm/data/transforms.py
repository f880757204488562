"""Preprocessing fitted on the training set only, and training-time augmentation.

- :func:`channel_stats` / :func:`standardize`: per-channel mean and std of the training images.
- :func:`fit_zca` / :func:`apply_zca`: ZCA whitening, W = U diag(1/sqrt(lambda + eps)) U^T
  of the training covariance (Salimans & Kingma whiten CIFAR this way); the test images are
  whitened with the training set's mean and W.
- :func:`translate_flip`: random translations by up to ``max_shift`` pixels (zero fill) and
  horizontal flips, drawn per image from a ``torch.Generator`` (CIFAR augmentation).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["channel_stats", "standardize", "fit_zca", "apply_zca", "translate_flip"]


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std per channel of images (N, C, H, W), in float64 for accuracy."""
    xd = x.to(torch.float64)
    return xd.mean(dim=(0, 2, 3)), xd.std(dim=(0, 2, 3)).clamp_min(1e-12)


def standardize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return ((x.to(torch.float64) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).to(torch.float32)


def fit_zca(x: Tensor, eps: float = 1e-2) -> tuple[Tensor, Tensor]:
    """(mean, W) of ZCA whitening fitted on images x (N, ...): cov(W (x - mean)) ~ I."""
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    mean = flat.mean(0)
    centered = flat - mean
    cov = centered.T @ centered / max(1, flat.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)
    w = (evecs * (evals.clamp_min(0) + eps).rsqrt()) @ evecs.T
    return mean, w


def apply_zca(x: Tensor, mean: Tensor, w: Tensor, batch: int = 4096) -> Tensor:
    """Whiten x (N, ...) with a fitted (mean, W); returns float32 of x's shape."""
    out = torch.empty(x.shape, dtype=torch.float32)
    flat_out = out.view(x.shape[0], -1)
    for i in range(0, x.shape[0], batch):
        xb = x[i : i + batch].reshape(-1, mean.numel()).to(torch.float64)
        flat_out[i : i + batch] = ((xb - mean) @ w).to(torch.float32)
    return out


def translate_flip(x: Tensor, generator: torch.Generator, max_shift: int = 2, flip: bool = True) -> Tensor:
    """Shift each image of x (N, C, H, W) by (dy, dx) in [-max_shift, max_shift] (zero fill)
    and flip it horizontally with probability 1/2."""
    n, _, h, w = x.shape
    if max_shift > 0:
        m = max_shift
        padded = torch.nn.functional.pad(x, (m, m, m, m))
        shifts = torch.randint(0, 2 * m + 1, (n, 2), generator=generator)
        out = torch.empty_like(x)
        for dy in range(2 * m + 1):  # at most (2m+1)^2 slicing ops per batch
            for dx in range(2 * m + 1):
                idx = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().flatten()
                if idx.numel():
                    out[idx] = padded[idx, :, dy : dy + h, dx : dx + w]
        x = out
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1).to(x.device), x.flip(-1), x)
    return x
