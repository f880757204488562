"""Datasets by name, as ``--dataset`` names them, loaded as tensors in memory.

Each loader returns a :class:`Dataset`: training and test inputs as float tensors of shape
(N, C, H, W), int64 labels, and the number of classes.

- ``mnist``, ``fashion-mnist``, ``emnist`` (``split=``, default ``letters``): images in [0, 1].
- ``nmnist``: 10 binary ON-event frames of 34 x 34 (0/1), ``dvs-gesture``: 6 x 64 x 64.
- ``cifar10``, ``cifar100``: standardized per channel with the training set's mean and std,
  or ZCA-whitened (``zca=True``) with a whitening fitted on the training set only; training
  batches are augmented by random translations of up to 2 pixels and horizontal flips.

Under ``data_dir`` each dataset lives in the folder its official archive unpacks to (see
each reader's module); a missing dataset raises ``FileNotFoundError`` saying what to
download and where to put it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from ..utils.registry import Registry
from . import transforms as T
from .mnist import load_mnist

__all__ = ["Dataset", "DATASETS", "IN_SHAPES", "load_dataset"]


@dataclass
class Dataset:
    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    # training-time augmentation, transform(x_batch, generator) -> x_batch (None: none)
    train_transform: Optional[Callable] = None
    info: dict = field(default_factory=dict)  # preprocessing facts (fitted statistics, split, ...)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")

#: The input (C, H, W) each built-in dataset gives the network, known before any file is read:
#: a run checks its model's options against it before it loads or downloads the data
#: (:func:`nsm.training.preflight.check_model_options`); tests/data/test_datasets.py checks it
#: against what the readers return.
IN_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "emnist": (1, 28, 28),
    "nmnist": (10, 34, 34),
    "dvs-gesture": (6, 64, 64),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
}


def _images(x: Tensor) -> Tensor:
    return x.to(torch.float32).div_(255.0).unsqueeze(1)  # (N, 1, H, W) in [0, 1]


@DATASETS.register("mnist")
def _mnist(data_dir=None, download: bool = True) -> Dataset:
    tx, ty = load_mnist(data_dir, train=True, download=download)
    vx, vy = load_mnist(data_dir, train=False, download=download)
    return Dataset("mnist", _images(tx), ty, _images(vx), vy, 10)


def _frames(x: Tensor) -> Tensor:
    return x.to(torch.float32)  # 0/1 event frames


@DATASETS.register("fashion-mnist")
def _fashion(data_dir=None, download: bool = True) -> Dataset:
    from .fashion import load_fashion_mnist

    tx, ty = load_fashion_mnist(data_dir, train=True, download=download)
    vx, vy = load_fashion_mnist(data_dir, train=False, download=download)
    return Dataset("fashion-mnist", _images(tx), ty, _images(vx), vy, 10)


@DATASETS.register("emnist")
def _emnist(data_dir=None, download: bool = True, split: str = "letters") -> Dataset:
    from .emnist import EMNIST_SPLITS, load_emnist

    tx, ty = load_emnist(data_dir, train=True, split=split, download=download)
    vx, vy = load_emnist(data_dir, train=False, split=split, download=download)
    k = EMNIST_SPLITS[split]["classes"]
    return Dataset("emnist", _images(tx), ty, _images(vx), vy, k, info={"split": split})


@DATASETS.register("nmnist")
def _nmnist(data_dir=None, download: bool = True, write_cache: bool = True) -> Dataset:
    from .nmnist import load_nmnist

    tx, ty = load_nmnist(data_dir, train=True, download=download, write_cache=write_cache)
    vx, vy = load_nmnist(data_dir, train=False, download=download, write_cache=write_cache)
    return Dataset("nmnist", _frames(tx), ty, _frames(vx), vy, 10)


@DATASETS.register("dvs-gesture")
def _dvs(data_dir=None, download: bool = True, write_cache: bool = True) -> Dataset:
    from .dvsgesture import NUM_CLASSES, load_dvs_gesture

    # no automatic download exists (the archive sits behind a licence page): `download` is moot
    tx, ty = load_dvs_gesture(data_dir, train=True, write_cache=write_cache)
    vx, vy = load_dvs_gesture(data_dir, train=False, write_cache=write_cache)
    return Dataset("dvs-gesture", _frames(tx), ty, _frames(vx), vy, NUM_CLASSES)


def _cifar(
    num_classes: int, data_dir, download: bool, zca: bool, zca_eps: float, augment: bool, label: str = "fine"
) -> Dataset:
    from .cifar import load_cifar

    tx, ty = load_cifar(data_dir, train=True, num_classes=num_classes, label=label, download=download)
    vx, vy = load_cifar(data_dir, train=False, num_classes=num_classes, label=label, download=download)
    tx, vx = tx.to(torch.float32).div_(255.0), vx.to(torch.float32).div_(255.0)
    if zca:  # fitted on the training set only
        mean, w = T.fit_zca(tx, eps=zca_eps)
        tx, vx = T.apply_zca(tx, mean, w), T.apply_zca(vx, mean, w)
        info = {"preprocessing": f"ZCA (eps={zca_eps}) fitted on the training set"}
    else:
        mean, std = T.channel_stats(tx)
        tx, vx = T.standardize(tx, mean, std), T.standardize(vx, mean, std)
        info = {
            "preprocessing": "per-channel standardization with training-set statistics",
            "mean": mean.tolist(),
            "std": std.tolist(),
        }
    k = 20 if label == "coarse" else num_classes
    return Dataset(
        f"cifar{num_classes}", tx, ty, vx, vy, k, info=info, train_transform=T.translate_flip if augment else None
    )


@DATASETS.register("cifar10")
def _cifar10(
    data_dir=None, download: bool = True, zca: bool = False, zca_eps: float = 1e-2, augment: bool = True
) -> Dataset:
    return _cifar(10, data_dir, download, zca, zca_eps, augment)


@DATASETS.register("cifar100")
def _cifar100(
    data_dir=None,
    download: bool = True,
    zca: bool = False,
    zca_eps: float = 1e-2,
    augment: bool = True,
    label: str = "fine",
) -> Dataset:
    return _cifar(100, data_dir, download, zca, zca_eps, augment, label)


def load_dataset(
    name: str,
    data_dir=None,
    *,
    download: bool = True,
    read_only: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    **options,
) -> Dataset:
    """Load dataset ``name``; ``*_subset`` keeps the first N examples of each split.

    ``options`` go to the dataset's loader (e.g. ``zca=True`` for CIFAR, ``split=`` for EMNIST).
    ``read_only=True`` writes nothing into ``data_dir``: no download (missing data is a
    ``FileNotFoundError``) and no cache (N-MNIST's and DVS Gesture's frames are built in
    memory when their cache is missing); for a folder that is not the user's own.
    """
    loader = DATASETS.get(name)
    internal = ("data_dir", "download", "write_cache")
    params = inspect.signature(loader).parameters
    allowed = [p for p in params if p not in internal]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"dataset {name!r} has no option(s) {unknown}; its options: {', '.join(allowed) or 'none'}")
    if read_only:
        download = False
        if "write_cache" in params:
            options["write_cache"] = False
    ds = loader(data_dir, download=download, **options)
    for split, n in (("train", train_subset), ("test", test_subset)):
        if n is None:
            continue
        total = getattr(ds, f"{split}_x").shape[0]
        if not 1 <= n <= total:
            raise ValueError(f"{split}_subset must be between 1 and {total} for {name}, got {n}")
        setattr(ds, f"{split}_x", getattr(ds, f"{split}_x")[:n])
        setattr(ds, f"{split}_y", getattr(ds, f"{split}_y")[:n])
    return ds
