"""Named data sets as train/validation/test tensors with their metadata."""

from pyrovamp.data.datasets import (DATASETS, STATIC_MNIST_URL, STATIC_MNIST_FILES, Dataset, spread_subset, load_dataset, read_amat, read_idx_images, MNIST_URL, FASHION_URL, read_array_pickle, DEFAULT_ROOTS)

__all__ = ['DATASETS', 'STATIC_MNIST_URL', 'STATIC_MNIST_FILES', 'Dataset', 'spread_subset', 'load_dataset', 'read_amat', 'read_idx_images', 'MNIST_URL', 'FASHION_URL', 'read_array_pickle', 'DEFAULT_ROOTS']
