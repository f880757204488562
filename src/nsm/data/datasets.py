"""Datasets by name, as ``--dataset`` names them, loaded as tensors in memory.

Each loader returns a :class:`Dataset`: training and test images as float tensors in
[0, 1] of shape (N, C, H, W), int64 labels, and the number of classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..registry import Registry
from .mnist import load_mnist

__all__ = ["Dataset", "DATASETS", "load_dataset"]


@dataclass
class Dataset:
    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")


def _images(x: Tensor) -> Tensor:
    return x.to(torch.float32).div_(255.0).unsqueeze(1)  # (N, 1, H, W) in [0, 1]


@DATASETS.register("mnist")
def _mnist(data_dir=None, download: bool = True) -> Dataset:
    tx, ty = load_mnist(data_dir, train=True, download=download)
    vx, vy = load_mnist(data_dir, train=False, download=download)
    return Dataset("mnist", _images(tx), ty, _images(vx), vy, 10)


def load_dataset(name: str, data_dir=None, *, download: bool = True,
                 train_subset: int | None = None, test_subset: int | None = None) -> Dataset:
    """Load dataset ``name``; ``*_subset`` keeps the first N examples of each split."""
    ds = DATASETS.get(name)(data_dir, download=download)
    for split, n in (("train", train_subset), ("test", test_subset)):
        if n is None:
            continue
        total = getattr(ds, f"{split}_x").shape[0]
        if not 1 <= n <= total:
            raise ValueError(f"{split}_subset must be between 1 and {total} for {name}, got {n}")
        setattr(ds, f"{split}_x", getattr(ds, f"{split}_x")[:n])
        setattr(ds, f"{split}_y", getattr(ds, f"{split}_y")[:n])
    return ds
