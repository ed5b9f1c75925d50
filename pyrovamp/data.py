"""Named data sets: train / validation / test tensors of shape ``(N, D)`` plus metadata.

* ``digits`` -- scikit-learn's 8x8 Digits, values 0..16 (17 levels), the book's split
  1000 / 350 / 447 (Tomczak, *Deep Generative Modeling*, ch. 4), categorical likelihood.
* ``static_mnist`` -- Larochelle & Murray's fixed binarisation of MNIST (the VampPrior paper's
  "static MNIST"), files ``binarized_mnist_{train,valid,test}.amat``, 50000 / 10000 / 10000,
  Bernoulli likelihood.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["Dataset", "load_dataset", "DATASETS", "read_amat"]

DATASETS = ("digits", "static_mnist")

STATIC_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
STATIC_MNIST_FILES = {split: f"binarized_mnist_{split}.amat" for split in ("train", "valid", "test")}


@dataclass
class Dataset:
    """A data set split into train / validation / test float32 tensors of shape ``(N, D)``.

    Attributes:
        name: the data set's name.
        train, validation, test: ``(N, D)`` float32 tensors in data space.
        image_shape: ``(H, W)`` of one image (``D == H * W``).
        likelihood: the likelihood that fits the values (``"bernoulli"`` or ``"categorical"``).
        num_values: number of integer levels for the categorical likelihood, else ``None``.
    """

    name: str
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    image_shape: tuple
    likelihood: str
    num_values: int | None = None
    info: dict = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        """Number of dimensions ``D`` of one data point."""
        return int(self.train.shape[1])

    @property
    def data_range(self) -> tuple:
        """``(low, high)`` of the values: ``(0, 1)`` binary, ``(0, num_values - 1)`` integer."""
        return (0.0, float(self.num_values - 1)) if self.num_values else (0.0, 1.0)

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={tuple(self.train.shape)}, "
                f"validation={tuple(self.validation.shape)}, test={tuple(self.test.shape)}, "
                f"likelihood={self.likelihood!r}, num_values={self.num_values})")


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """Load a named data set.

    Args:
        name: ``"digits"`` or ``"static_mnist"``.
        root: folder holding the canonical files (``static_mnist``); ignored for ``digits``.
            Defaults to ``~/.cache/pyrovamp/<name>``.
        download: fetch missing files from their original location into ``root`` (needs
            internet); a failed download leaves nothing half-written.

    Returns:
        :class:`Dataset`.

    Raises:
        ValueError: unknown ``name``; a malformed file (naming the path and line).
        FileNotFoundError: a missing file that could not be downloaded (naming the path).
    """
    if name == "digits":
        return _load_digits()
    if name == "static_mnist":
        root = Path(root) if root is not None else Path.home() / ".cache" / "pyrovamp" / name
        return _load_static_mnist(root, download)
    raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().data, dtype=torch.float32)
    return Dataset("digits", x[:1000], x[1000:1350], x[1350:], (8, 8), "categorical", 17,
                   info={"source": "sklearn.datasets.load_digits", "split": "book: 1000/350/447"})


def read_amat(path: str | os.PathLike, dim: int = 784) -> torch.Tensor:
    """Read a binarised-MNIST ``.amat`` file: one image per line, ``dim`` space-separated 0/1.

    Returns a ``(N, dim)`` float32 tensor.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a line without exactly ``dim`` binary values or another character in the
            file (the message names the path and the line).
    """
    path = Path(path)
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    is_digit = (raw == ord("0")) | (raw == ord("1"))
    is_space = (raw == ord(" ")) | (raw == ord("\n")) | (raw == ord("\r")) | (raw == ord("\t"))
    bad = np.flatnonzero(~(is_digit | is_space))
    if bad.size:
        line = int((raw[: bad[0]] == ord("\n")).sum()) + 1
        raise ValueError(f"{path}: malformed .amat file: unexpected character "
                         f"{chr(raw[bad[0]])!r} on line {line} (expected 0/1 values)")
    # values must be separated: a digit directly followed by a digit is a malformed token
    adjacent = np.flatnonzero(is_digit[:-1] & is_digit[1:])
    if adjacent.size:
        line = int((raw[: adjacent[0]] == ord("\n")).sum()) + 1
        raise ValueError(f"{path}: malformed .amat file: a value other than 0 or 1 on line {line}")
    digits_before = np.cumsum(is_digit)
    newlines = np.flatnonzero(raw == ord("\n"))
    ends = np.append(newlines, raw.size - 1) if raw.size and raw[-1] != ord("\n") else newlines
    counts = np.diff(np.concatenate([[0], digits_before[ends]])) if ends.size else np.array([])
    counts_nonempty = counts[counts > 0]
    wrong = np.flatnonzero((counts != 0) & (counts != dim))
    if wrong.size:
        raise ValueError(f"{path}: malformed .amat file: line {int(wrong[0]) + 1} has "
                         f"{int(counts[wrong[0]])} values, expected {dim}")
    if counts_nonempty.size == 0:
        raise ValueError(f"{path}: malformed .amat file: no images in it")
    values = (raw[is_digit] - ord("0")).astype(np.float32)
    return torch.from_numpy(values.reshape(-1, dim))


def _load_static_mnist(root: Path, download: bool) -> Dataset:
    paths = {split: root / fname for split, fname in STATIC_MNIST_FILES.items()}
    missing = [p for p in paths.values() if not p.is_file()]
    if missing and download:
        _download(missing, STATIC_MNIST_URL)
        missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"static_mnist: missing {missing[0]} (expected the files "
            f"{', '.join(STATIC_MNIST_FILES.values())} in {root}; get them from {STATIC_MNIST_URL})"
        )
    parts = {split: read_amat(p) for split, p in paths.items()}
    return Dataset("static_mnist", parts["train"], parts["valid"], parts["test"], (28, 28),
                   "bernoulli", None, info={"source": STATIC_MNIST_URL, "root": str(root)})


def _download(paths, base_url):
    """Download each missing file into its folder, atomically (temporary name, then rename);
    a failure (no internet) is silent here -- the caller reports the missing file."""
    import urllib.request

    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".part")
        try:
            with urllib.request.urlopen(base_url + p.name, timeout=30) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            os.replace(tmp, p)
        except OSError:
            if tmp.exists():
                tmp.unlink()
