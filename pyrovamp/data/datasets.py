"""Named data sets: train / validation / test tensors of shape ``(N, D)`` plus metadata.

* ``digits`` -- scikit-learn's 8x8 Digits, values 0..16 (17 levels), the book's split
  1000 / 350 / 447 (Tomczak, *Deep Generative Modeling*, ch. 4), categorical likelihood.
* ``static_mnist`` -- Larochelle & Murray's fixed binarisation of MNIST (the VampPrior paper's
  "static MNIST"), files ``binarized_mnist_{train,valid,test}.amat``, 50000 / 10000 / 10000,
  Bernoulli likelihood.
* ``dynamic_mnist``, ``fashion_mnist`` -- the IDX files (``train-images-idx3-ubyte[.gz]``,
  ``t10k-images-idx3-ubyte[.gz]``), 50000 / 10000 (last 10000 training images) / 10000; the
  training images are binarised anew at every epoch (``Dataset.train_sampler``), validation and
  test images once with a fixed seed (the paper's code).
* ``omniglot`` -- ``chardata.mat`` of Burda et al.: 23000 / 1345 / 8070, dynamic binarisation.
* ``caltech101_silhouettes`` -- ``caltech101_silhouettes_28_split1.mat``: 4100 / 2264 / 2307.
* ``frey_faces`` -- ``frey_rawface.mat`` (key ``ff``, 560 x 1965 uint8, one 28x20 image per
  column): a fixed shuffle (seed 0) into 1565 / 200 / 200 as the paper's code, 256 grey levels.
* ``histopathology`` -- ``histopathology.pkl`` (dict of ``training``, ``validation``, ``test``
  arrays of 28x28 grey images in [0, 1]) of the paper's code, stored as 256 integer levels.
  This is the one data set that exists only as a Python pickle, and unpickling an arbitrary file
  can run arbitrary code; its loader therefore unpickles with a restricted unpickler that builds
  numpy arrays and plain containers only and refuses any other object with a ``ValueError``
  (:func:`read_array_pickle`). No other loader reads pickles.

Binary data sets hold 0/1 values, grey ones their integer levels; every loader reads the
canonical files from ``root`` and, with ``download=True`` and internet, fetches missing ones over
https. Every canonical file whose SHA-256 is recorded in :data:`SHA256` is checked after a
download and when it is read from a local folder (each file hashed once per process); a file with
another digest is refused before any work, in one line naming it and both digests.

:func:`load_dataset` also reads your own data -- an ``.npy``/``.npz`` array file, a folder of
images or a torchvision data set (:mod:`pyrovamp.data.sources`) -- into the same
:class:`Dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovamp._validate import check_int, check_type
from pyrovamp.data.readers import (
    find_idx,
    load_mat,
    mat_key,
    read_amat,
    read_array_pickle,
    read_idx_images,
    require_files,
)
from pyrovamp.data.sources import TORCHVISION_SETS, load_source, source_kind

__all__ = [
    "Dataset",
    "load_dataset",
    "dataset_files",
    "dataset_source",
    "dataset_stem",
    "DATASETS",
    "SHA256",
    "read_amat",
    "read_array_pickle",
    "spread_subset",
]

DATASETS = (
    "digits",
    "static_mnist",
    "dynamic_mnist",
    "fashion_mnist",
    "omniglot",
    "caltech101_silhouettes",
    "frey_faces",
    "histopathology",
)

STATIC_MNIST_URL = "https://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
STATIC_MNIST_FILES = {
    split: f"binarized_mnist_{split}.amat" for split in ("train", "valid", "test")
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
# the authors' repository holds the original IDX files (their S3 website endpoint,
# fashion-mnist.s3-website.eu-central-1.amazonaws.com, serves plain http only)
FASHION_URL = "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"
OMNIGLOT_URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/"
CALTECH_URL = "https://people.cs.umass.edu/~marlin/data/"
FREY_URL = "https://cs.nyu.edu/~roweis/data/"
HISTOPATHOLOGY_URL = (
    "https://github.com/jmtomczak/vae_householder_flow/raw/master/datasets/histopathologyGray/"
)

#: The SHA-256 of every canonical file, per data set and file name, computed from the files as
#: their hosts distribute them. ``None``: not recorded (the file is read unchecked).
SHA256: dict[str, dict[str, str | None]] = {
    "static_mnist": {
        "binarized_mnist_train.amat": (
            "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"
        ),
        "binarized_mnist_valid.amat": (
            "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"
        ),
        "binarized_mnist_test.amat": (
            "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"
        ),
    },
    "frey_faces": {
        "frey_rawface.mat": "eac25e8e91a5af651923aebd47b2cdb9664b1ecbfd6490aa889831dea314e106"
    },
    "dynamic_mnist": {"train-images-idx3-ubyte.gz": None, "t10k-images-idx3-ubyte.gz": None},
    "fashion_mnist": {"train-images-idx3-ubyte.gz": None, "t10k-images-idx3-ubyte.gz": None},
    "omniglot": {"chardata.mat": None},
    "caltech101_silhouettes": {"caltech101_silhouettes_28_split1.mat": None},
    "histopathology": {"histopathology.pkl": None},
}


def _digests(name: str) -> dict[str, str | None]:
    return SHA256.get(name, {})


@dataclass
class Dataset:
    """A data set split into train / validation / test float32 tensors of shape ``(N, D)``.

    For dynamically binarised data sets ``train`` holds one binarisation and ``train_sampler()``
    draws a new one (with the global torch RNG, so seeded runs are reproducible).

    Attributes:
        name: the data set's name (a file's or folder's stem for your own data).
        train, validation, test: ``(N, D)`` float32 tensors in data space.
        image_shape: the shape of one point: ``(H, W)`` of a grey image, ``(C, H, W)`` of a
            colour one (``D`` laid out channels first), ``(D,)`` of a flat vector.
        likelihood: the likelihood that fits the values (``"bernoulli"``, ``"categorical"`` or
            ``"discretized_logistic"``).
        num_values: number of integer levels for the categorical and discretised logistic
            likelihoods, else ``None``.
        info: where the data came from: for your own data ``source`` (absolute path or
            torchvision name), ``split`` (the fractions used, ``None`` when the source holds all
            three parts), ``seed`` and ``likelihood`` (why that one).
    """

    name: str
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    image_shape: tuple
    likelihood: str
    num_values: int | None = None
    info: dict = field(default_factory=dict)
    # callable (generator=None) -> (N, D): a fresh binarisation per epoch
    train_sampler: Callable[..., torch.Tensor] | None = None

    @property
    def input_dim(self) -> int:
        """Number of dimensions ``D`` of one data point."""
        return int(self.train.shape[1])

    @property
    def data_range(self) -> tuple:
        """``(low, high)`` of the values: ``(0, 1)`` binary, ``(0, num_values - 1)`` integer."""
        return (0.0, float(self.num_values - 1)) if self.num_values else (0.0, 1.0)

    def __repr__(self):
        return (
            f"Dataset({self.name!r}, train={tuple(self.train.shape)}, "
            f"validation={tuple(self.validation.shape)}, test={tuple(self.test.shape)}, "
            f"likelihood={self.likelihood!r}, num_values={self.num_values})"
        )


def spread_subset(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` rows of ``x`` spread evenly over it (rows ``round(linspace(0, N-1, n))``): a fixed
    subset for a learning curve, a quick estimate or a time-to-quality mark.

    Not the first ``n``: files such as static MNIST's test set are not in random order (with
    one model its first 1000 test images score about 10 nats lower than the whole set).

    Args:
        x: ``(N, ...)`` data.
        n: subset size; ``n >= N`` returns ``x`` itself.

    Returns:
        ``(min(n, N), ...)`` rows of ``x`` in their original order.

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``x`` is not a tensor, ``n`` not an integer.
        ValueError: ``n`` is not positive.
    """
    check_type("x", x, torch.Tensor, "a torch.Tensor of shape (N, ...)")
    n = check_int("n", n)
    total = x.shape[0]
    if n >= total:
        return x
    return x[torch.linspace(0, total - 1, n, dtype=torch.float64).round().long()]


def dataset_source(value: str) -> str:
    """``value`` as a run records it: a name of :data:`DATASETS` or
    :data:`~pyrovamp.data.sources.TORCHVISION_SETS` as it is, a path to an array file or a
    folder as an absolute path.

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``value`` not a string or path.
        ValueError: an empty string, an unknown name (listing the choices), a file that is no
            array file;
        FileNotFoundError: a path with nothing there.
    """
    check_type("dataset", value, (str, os.PathLike), "a data set name or a path")
    value = os.fspath(value)
    if value in DATASETS:
        return value
    if not value.strip():  # "" would be the current folder, read as a folder of images
        raise ValueError(f"dataset must name a data set or a path, got {value!r}")
    kind = source_kind(value)
    if kind is None:
        raise ValueError(
            f"unknown data set {value!r}; expected one of {', '.join(DATASETS)}, a torchvision "
            f"data set ({', '.join(TORCHVISION_SETS)}), or a path to an .npy/.npz file or a "
            "folder of images"
        )
    return kind[1]


def dataset_stem(value: str) -> str:
    """A short name of the data set ``value`` (a name, or a path's stem), e.g. for a folder."""
    return value if value in DATASETS or value in TORCHVISION_SETS else Path(value).stem


def load_dataset(
    name: str | os.PathLike,
    root: str | os.PathLike | None = None,
    download: bool = True,
    *,
    split=None,
    seed: int = 0,
    likelihood: str | None = None,
) -> Dataset:
    """Load a named data set, an array file, a folder of images or a torchvision data set.

    Args:
        name: one of :data:`DATASETS`; a path to an ``.npy``/``.npz`` file or to a folder of
            images; or a torchvision data set
            (:data:`~pyrovamp.data.sources.TORCHVISION_SETS`) -- see :mod:`pyrovamp.data.sources`.
        root: folder holding the canonical files; ignored for ``digits`` and paths. Defaults to
            ``~/.cache/pyrovamp/<name>`` (torchvision sets: ``~/.cache/pyrovamp/torchvision``).
        download: fetch missing files from their original location into ``root`` (needs
            internet); a failed download leaves nothing half-written.
        split: ``(train, validation, test)`` fractions summing to 1 for the parts a source of
            your own lacks (default ``(0.8, 0.1, 0.1)`` for one array, 0.1 of ``train`` for one
            missing part); not for the named data sets.
        seed: the seed of that split.
        likelihood: ``"bernoulli"``, ``"categorical"`` or ``"discretized_logistic"`` instead of
            the one the values call for (your own data only).

    Returns:
        :class:`Dataset` with ``(N, D)`` float32 parts.

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``name`` not a string or path, ``root`` not a path,
            ``download`` not a bool, ``seed`` not an integer.
        ValueError: unknown ``name`` (listing the choices); a malformed file (naming the path
            and what is wrong: not an array file, empty, NaN, images of several sizes, no
            images, an unreadable image, values no likelihood fits); a bad ``split`` or
            ``likelihood``; ``split``/``likelihood`` for a named data set; a canonical file
            whose SHA-256 differs from :data:`SHA256` (naming the file and both digests); a
            ``root`` that is a file.
        FileNotFoundError: a missing file that could not be downloaded, a path with nothing
            there (naming the path).
    """
    check_type(
        "name",
        name,
        (str, os.PathLike),
        f"a data set name (one of {', '.join(DATASETS)}) or a path",
    )
    if root is not None:
        check_type("root", root, (str, os.PathLike), "a folder (str or path) or None")
    check_type("download", download, bool, "True or False")
    seed = check_int("seed", seed, 0)
    name = os.fspath(name)
    if name not in DATASETS:
        path = dataset_source(name)  # names no source: the one-line error listing the choices
        fields: dict[str, Any] | None = load_source(
            path, root, download, split=split, seed=seed, likelihood=likelihood
        )
        if fields is None:
            raise ValueError(f"unknown data set {name!r}")
        for k in ("train", "validation", "test"):
            fields[k] = torch.from_numpy(fields[k])
        return Dataset(**fields)
    given = [k for k, v in (("split", split), ("likelihood", likelihood)) if v is not None]
    if given:
        raise ValueError(
            f"{' and '.join(given)} apply to array files, image folders and torchvision data "
            f"sets, not the named data set {name!r}"
        )
    if name == "digits":
        return _load_digits()
    return _LOADERS[name](_root(name, root), download)


def _root(name: str, root: str | os.PathLike | None) -> Path:
    """The folder of the named data set's files: ``root``, else :data:`DEFAULT_ROOTS`' entry,
    else ``~/.cache/pyrovamp/<name>`` (``~`` expanded).

    Raises:
        ValueError: the path is a file.
    """
    if root is None:
        root = DEFAULT_ROOTS.get(name) or Path.home() / ".cache" / "pyrovamp" / name
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise ValueError(f"root {root} is a file, not a folder of the {name} files")
    return root


def dataset_files(
    name: str, root: str | os.PathLike | None = None, download: bool = True
) -> list[Path]:
    """The canonical files of the named data set ``name`` in ``root``: the missing ones
    downloaded from their original location when ``download`` is true (and internet is there),
    each with a recorded digest checked (:data:`SHA256`). What :func:`load_dataset` reads, without
    reading it: a check that the files are there, e.g. before hours of work
    (``pyrovamp reproduce table1`` makes it before its first cell).

    Args:
        name: one of :data:`DATASETS`.
        root: the folder, as for :func:`load_dataset` (default ``~/.cache/pyrovamp/<name>``).
        download: fetch missing files.

    Returns:
        The paths, in the order the loader reads them (``digits``: none, it ships with
        scikit-learn; ``dynamic_mnist``, ``fashion_mnist``: the training then the test IDX file,
        plain or gzipped).

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``root`` not a path, ``download`` not a bool.
        ValueError: ``name`` not one of :data:`DATASETS`; a file whose SHA-256 differs from the
            recorded one (naming the file and both digests); a ``root`` that is a file.
        FileNotFoundError: a missing file that could not be downloaded (naming the path, the
            files expected and where to get them).
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name must be one of {', '.join(DATASETS)}, got {name!r}")
    if root is not None:
        check_type("root", root, (str, os.PathLike), "a folder (str or path) or None")
    check_type("download", download, bool, "True or False")
    if name == "digits":
        return []
    root = _root(name, root)
    url, files = _FILES[name]
    digests = _digests(name)
    if name in ("dynamic_mnist", "fashion_mnist"):
        return [find_idx(root, stem, url, name, download, digests) for stem in files]
    return require_files(root, list(files), url, name, download, digests)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().data, dtype=torch.float32)
    return Dataset(
        "digits",
        x[:1000],
        x[1000:1350],
        x[1350:],
        (8, 8),
        "categorical",
        17,
        info={"source": "sklearn.datasets.load_digits", "split": "book: 1000/350/447"},
    )


def _load_static_mnist(root: Path, download: bool) -> Dataset:
    paths = dict(
        zip(STATIC_MNIST_FILES, dataset_files("static_mnist", root, download), strict=True)
    )
    parts = {split: read_amat(p) for split, p in paths.items()}
    return Dataset(
        "static_mnist",
        parts["train"],
        parts["valid"],
        parts["test"],
        (28, 28),
        "bernoulli",
        None,
        info={"source": STATIC_MNIST_URL, "root": str(root)},
    )


def _dynamic(name, train_grey, val_grey, test_grey, image_shape, info, seed=0) -> Dataset:
    """Binary data set from grey intensities in [0, 1]: validation and test binarised once with a
    fixed seed; the training set anew by ``train_sampler()``."""
    g = torch.Generator().manual_seed(seed)
    val = torch.bernoulli(val_grey, generator=g)
    test = torch.bernoulli(test_grey, generator=g)
    train = torch.bernoulli(train_grey, generator=g)

    def sample_train(generator=None):
        return torch.bernoulli(train_grey, generator=generator)

    ds = Dataset(
        name,
        train,
        val,
        test,
        image_shape,
        "bernoulli",
        None,
        info={**info, "binarisation": "dynamic"},
        train_sampler=sample_train,
    )
    return ds


def _load_idx_dataset(name, root, download):
    train, test = dataset_files(name, root, download)
    x = torch.from_numpy(read_idx_images(train).astype(np.float32) / 255.0)
    xt = torch.from_numpy(read_idx_images(test).astype(np.float32) / 255.0)
    if x.shape[0] < 20000:
        n_val = x.shape[0] // 6
    else:
        n_val = 10000
    return _dynamic(name, x[:-n_val], x[-n_val:], xt, (28, 28), {"root": str(root)})


def _load_dynamic_mnist(root, download):
    return _load_idx_dataset("dynamic_mnist", root, download)


def _load_fashion_mnist(root, download):
    return _load_idx_dataset("fashion_mnist", root, download)


def _load_omniglot(root, download):
    (path,) = dataset_files("omniglot", root, download)
    mat = load_mat(path)

    def images(key):  # Burda et al. store images column-major
        a = mat_key(mat, key, path).T.astype(np.float32)
        return torch.from_numpy(a.reshape(-1, 28, 28).reshape(-1, 784, order="F").copy())

    train, test = images("data"), images("testdata")
    perm = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(0))
    train = train[perm]
    n_val = 1345 if train.shape[0] > 2 * 1345 else max(1, train.shape[0] // 6)
    return _dynamic("omniglot", train[:-n_val], train[-n_val:], test, (28, 28), {"root": str(root)})


def _load_caltech(root, download):
    (path,) = dataset_files("caltech101_silhouettes", root, download)
    mat = load_mat(path)

    def images(key):  # stored column-major with 1 = background: flip to 1 = silhouette
        a = 1.0 - mat_key(mat, key, path).astype(np.float32)
        return torch.from_numpy(a.reshape(-1, 28, 28).reshape(-1, 784, order="F").copy())

    parts = [images(k) for k in ("train_data", "val_data", "test_data")]
    for p in parts:
        if not bool(((p == 0) | (p == 1)).all()):
            raise ValueError(f"{path}: malformed file: silhouettes must be binary")
    return Dataset(
        "caltech101_silhouettes", *parts, (28, 28), "bernoulli", None, info={"root": str(root)}
    )


def _load_frey_faces(root, download):
    (path,) = dataset_files("frey_faces", root, download)
    ff = mat_key(load_mat(path), "ff", path)
    if ff.ndim != 2 or ff.shape[0] != 560:
        raise ValueError(
            f"{path}: malformed file: 'ff' must be 560 x N (28x20 images as columns), "
            f"got {ff.shape}"
        )
    x = torch.from_numpy(ff.T.astype(np.float32).copy())
    x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))]
    n = x.shape[0]
    n_val = n_test = 200 if n >= 1000 else max(1, n // 10)
    return Dataset(
        "frey_faces",
        x[: n - n_val - n_test],
        x[n - n_val - n_test : n - n_test],
        x[n - n_test :],
        (28, 20),
        "discretized_logistic",
        256,
        info={"root": str(root)},
    )


def _load_histopathology(root, download):
    (path,) = dataset_files("histopathology", root, download)
    data = read_array_pickle(path)
    parts = []
    for key in ("training", "validation", "test"):
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"{path}: malformed file: expected a dict with key {key!r}")
        a = np.asarray(data[key], dtype=np.float32).reshape(-1, 784)
        if a.min() < 0 or a.max() > 1:
            raise ValueError(f"{path}: malformed file: grey values must lie in [0, 1]")
        parts.append(torch.from_numpy(np.round(a * 255.0)))
    return Dataset(
        "histopathology", *parts, (28, 28), "discretized_logistic", 256, info={"root": str(root)}
    )


_LOADERS = {
    "static_mnist": _load_static_mnist,
    "dynamic_mnist": _load_dynamic_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "omniglot": _load_omniglot,
    "caltech101_silhouettes": _load_caltech,
    "frey_faces": _load_frey_faces,
    "histopathology": _load_histopathology,
}
DEFAULT_ROOTS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
# where each named data set's canonical files come from, and their names (the IDX files: stems,
# read plain or gzipped)
_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "static_mnist": (STATIC_MNIST_URL, tuple(STATIC_MNIST_FILES.values())),
    "dynamic_mnist": (MNIST_URL, ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")),
    "fashion_mnist": (FASHION_URL, ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")),
    "omniglot": (OMNIGLOT_URL, ("chardata.mat",)),
    "caltech101_silhouettes": (CALTECH_URL, ("caltech101_silhouettes_28_split1.mat",)),
    "frey_faces": (FREY_URL, ("frey_rawface.mat",)),
    "histopathology": (HISTOPATHOLOGY_URL, ("histopathology.pkl",)),
}
