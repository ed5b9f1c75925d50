"""Named data sets as train/validation/test tensors with their metadata, the readers of their
canonical files, and your own data (array files, folders of images, torchvision data sets:
:mod:`pyrovamp.data.sources`) as the same :class:`Dataset`."""

from pyrovamp.data.datasets import (
    DATASETS,
    DEFAULT_ROOTS,
    FASHION_URL,
    MNIST_URL,
    SHA256,
    STATIC_MNIST_FILES,
    STATIC_MNIST_URL,
    Dataset,
    dataset_files,
    dataset_source,
    dataset_stem,
    load_dataset,
    spread_subset,
)
from pyrovamp.data.readers import read_amat, read_array_pickle, read_idx_images
from pyrovamp.data.torchvision_sets import TORCHVISION_SETS

__all__ = [
    "STATIC_MNIST_URL",
    "STATIC_MNIST_FILES",
    "MNIST_URL",
    "FASHION_URL",
    "Dataset",
    "load_dataset",
    "dataset_files",
    "dataset_source",
    "dataset_stem",
    "DATASETS",
    "TORCHVISION_SETS",
    "DEFAULT_ROOTS",
    "SHA256",
    "spread_subset",
    "read_amat",
    "read_array_pickle",
    "read_idx_images",
]
