"""Named data sets as train/validation/test tensors with their metadata, and the readers of
their canonical files."""

from pyrovamp.data.datasets import (
    DATASETS,
    DEFAULT_ROOTS,
    FASHION_URL,
    MNIST_URL,
    SHA256,
    STATIC_MNIST_FILES,
    STATIC_MNIST_URL,
    Dataset,
    load_dataset,
    spread_subset,
)
from pyrovamp.data.readers import read_amat, read_array_pickle, read_idx_images

__all__ = [
    "STATIC_MNIST_URL",
    "STATIC_MNIST_FILES",
    "MNIST_URL",
    "FASHION_URL",
    "Dataset",
    "load_dataset",
    "DATASETS",
    "DEFAULT_ROOTS",
    "SHA256",
    "spread_subset",
    "read_amat",
    "read_array_pickle",
    "read_idx_images",
]
