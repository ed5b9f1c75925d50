"""The torchvision data sets in torchvision's layout on disk, read with pyrovamp's readers (which
name the file that is missing or malformed; CIFAR-10's pickles through the restricted
unpickler), downloaded by torchvision only when allowed (:func:`read_torchvision`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pyrovamp.data.images import read_image_folder
from pyrovamp.data.readers import read_array_pickle, read_idx_images

__all__ = ["TORCHVISION_SETS", "read_torchvision"]

TORCHVISION_SETS = ("MNIST", "FashionMNIST", "KMNIST", "EMNIST", "Omniglot", "CIFAR10")
"""The torchvision data sets :func:`pyrovamp.data.load_dataset` reads (EMNIST: its
``"balanced"`` split)."""

_TV_IDX = {  # the training and test image files in root/<name>/raw
    "MNIST": ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"),
    "FashionMNIST": ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"),
    "KMNIST": ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"),
    "EMNIST": ("emnist-balanced-train-images-idx3-ubyte", "emnist-balanced-test-images-idx3-ubyte"),
}
_CIFAR = ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch")


def _torchvision_files(name: str, root: Path) -> list[Path]:
    if name in _TV_IDX:
        return [root / name / "raw" / f for f in _TV_IDX[name]]
    if name == "Omniglot":
        return [root / "omniglot-py" / f"images_{p}" for p in ("background", "evaluation")]
    folder, train, test = _CIFAR
    return [root / folder / f for f in (*train, test)]


def _download_torchvision(name: str, root: Path) -> None:
    """Fetch a torchvision data set into ``root`` with torchvision (no internet: nothing)."""
    import torchvision.datasets as tvd  # torchvision: only a download needs its data sets

    kwargs = {"split": "balanced"} if name == "EMNIST" else {}
    try:
        if name == "Omniglot":
            for background in (True, False):
                tvd.Omniglot(str(root), background=background, download=True)
        else:
            for train in (True, False):
                getattr(tvd, name)(str(root), train=train, download=True, **kwargs)
    except (OSError, RuntimeError):  # the caller names the missing file
        pass


def _idx_images(path: Path) -> np.ndarray:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return read_idx_images(candidate)
    raise FileNotFoundError(path)


def _cifar_batch(path: Path) -> np.ndarray:
    batch = read_array_pickle(path)
    data = batch.get("data", batch.get(b"data")) if isinstance(batch, dict) else None
    data = np.asarray(data) if data is not None else None
    if data is None or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: malformed CIFAR-10 batch: expected 'data' of shape (N, 3072)")
    return data.reshape(-1, 3, 32, 32)


def read_torchvision(name: str, root, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The training and test images of the torchvision data set ``name`` in torchvision's
    layout under ``root`` (``root/MNIST/raw/train-images-idx3-ubyte`` ...,
    ``root/omniglot-py/images_background/``, ``root/cifar-10-batches-py/data_batch_1`` ...),
    downloaded by torchvision first when files are missing and ``download``: ``(N, H, W)`` grey
    or ``(N, 3, H, W)`` colour uint8 arrays (EMNIST's images transposed upright; Omniglot's
    strokes as 1 on 0).

    Raises:
        FileNotFoundError: a missing file (naming it).
        ValueError: unknown ``name``; a malformed file (naming it).
    """
    if name not in TORCHVISION_SETS:
        raise ValueError(
            f"unknown torchvision data set {name!r}; expected one of {', '.join(TORCHVISION_SETS)}"
        )
    root = Path(root).expanduser()
    files = _torchvision_files(name, root)

    def missing():
        return [f for f in files if not (f.exists() or f.with_name(f.name + ".gz").is_file())]

    if missing() and download:
        _download_torchvision(name, root)
    if missing():
        raise FileNotFoundError(
            f"{name}: missing {missing()[0]} (torchvision's layout under the data root {root}"
            + ("; download=True fetches it)" if not download else "; the download failed)")
        )
    if name in _TV_IDX:
        train, test = (_idx_images(f) for f in files)
        side = math.isqrt(train.shape[1])
        train, test = (a.reshape(-1, side, side) for a in (train, test))
        if name == "EMNIST":  # stored transposed
            train, test = (a.transpose(0, 2, 1).copy() for a in (train, test))
        return train, test
    if name == "Omniglot":
        # 1-bit files as they come; 8-bit grey copies thresholded to the strokes, part by part
        train, test = (
            (a >= 128).astype(np.uint8) if a.max() > 1 else a
            for a in (read_image_folder(f) for f in files)
        )
        return 1 - train, 1 - test
    batches = [_cifar_batch(f) for f in files]
    return np.concatenate(batches[:-1]), batches[-1]
