"""Datasets for nsm: IDX file reading, MNIST fetching/loading, datasets by name."""

from .idx import DataError, read_idx
from .mnist import MNIST_FILES, default_data_dir, fetch_mnist, load_mnist
from .datasets import DATASETS, Dataset, load_dataset

__all__ = ["DATASETS", "DataError", "Dataset", "MNIST_FILES", "default_data_dir", "fetch_mnist",
           "load_dataset", "load_mnist", "read_idx"]
