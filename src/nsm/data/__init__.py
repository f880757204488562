"""Datasets for nsm: IDX file reading, MNIST fetching/loading, datasets by name."""

from .datasets import DATASETS, Dataset, load_dataset
from .idx import DataError, read_idx
from .mnist import MNIST_FILES, default_data_dir, fetch_mnist, load_mnist

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "MNIST_FILES",
    "default_data_dir",
    "fetch_mnist",
    "load_dataset",
    "load_mnist",
    "read_idx",
]
