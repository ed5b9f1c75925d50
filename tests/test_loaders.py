"""Every loader of the paper's data sets, on small files written in the canonical formats (and on
the real files where this machine has them)."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from scipy.io import savemat

from pyrovamp.data import DATASETS, load_dataset, read_idx_images
from pyrovamp.data import datasets as datasets_module

FASHION = __import__("pathlib").Path("/usr/share/datasets/fashion-mnist")


def _write_idx(path, images):
    n, r, c = images.shape
    raw = b"\x00\x00\x08\x03" + struct.pack(">III", n, r, c) + images.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


@pytest.mark.parametrize("name", ["dynamic_mnist", "fashion_mnist"])
def test_idx_datasets_binarise_dynamically(tmp_path, name):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (60, 28, 28))
    test = rng.integers(0, 256, (12, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", test)  # uncompressed works too
    ds = load_dataset(name, tmp_path, download=False)
    assert (ds.train.shape, ds.validation.shape, ds.test.shape) == ((50, 784), (10, 784), (12, 784))
    assert ds.likelihood == "bernoulli" and set(ds.train.unique().tolist()) <= {0.0, 1.0}
    again = load_dataset(name, tmp_path, download=False)
    assert torch.equal(ds.test, again.test) and torch.equal(ds.validation, again.validation)
    torch.manual_seed(1)
    a, b = ds.train_sampler(), ds.train_sampler()
    assert a.shape == (50, 784) and not torch.equal(a, b)
    grey = torch.from_numpy(train[:50].reshape(50, 784) / 255.0).float()
    draws = torch.stack([ds.train_sampler() for _ in range(200)]).mean(0)
    assert float((draws - grey).abs().mean()) < 0.05  # the grey level is the probability


def test_idx_reader_rejects_a_wrong_file(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"not an idx file at all")
    with pytest.raises(ValueError, match="not an IDX image file"):
        read_idx_images(bad)


@pytest.mark.skipif(
    not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist():
    ds = load_dataset("fashion_mnist")
    assert (ds.train.shape, ds.validation.shape, ds.test.shape) == (
        (50000, 784),
        (10000, 784),
        (10000, 784),
    )
    assert 0.2 < float(ds.train.mean()) < 0.4


def test_omniglot(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((784, 3000))  # Burda et al.: one image per column, column-major pixels
    savemat(tmp_path / "chardata.mat", {"data": data, "testdata": rng.random((784, 40))})
    ds = load_dataset("omniglot", tmp_path, download=False)
    assert (ds.train.shape, ds.validation.shape, ds.test.shape) == (
        (3000 - 1345, 784),
        (1345, 784),
        (40, 784),
    )
    assert ds.train_sampler is not None and set(ds.test.unique().tolist()) <= {0.0, 1.0}


def test_caltech_silhouettes(tmp_path):
    rng = np.random.default_rng(0)
    parts = {
        k: (rng.random((n, 784)) < 0.5).astype(np.float64)
        for k, n in (("train_data", 20), ("val_data", 5), ("test_data", 6))
    }
    savemat(tmp_path / "caltech101_silhouettes_28_split1.mat", parts)
    ds = load_dataset("caltech101_silhouettes", tmp_path, download=False)
    assert ds.test.shape == (6, 784)
    img = 1.0 - parts["test_data"][0].reshape(28, 28).T.reshape(-1)  # column-major, inverted
    assert torch.equal(ds.test[0], torch.from_numpy(img).float())
    parts["test_data"][0, 0] = 0.5
    savemat(tmp_path / "caltech101_silhouettes_28_split1.mat", parts)
    with pytest.raises(ValueError, match="binary"):
        load_dataset("caltech101_silhouettes", tmp_path, download=False)


def test_frey_faces_small_file(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_module, "SHA256", {})  # a small file, not the canonical one
    ff = np.random.default_rng(0).integers(0, 256, (560, 50)).astype(np.uint8)
    savemat(tmp_path / "frey_rawface.mat", {"ff": ff})
    ds = load_dataset("frey_faces", tmp_path, download=False)
    assert (
        ds.likelihood == "discretized_logistic"
        and ds.num_values == 256
        and ds.image_shape == (28, 20)
    )
    allx = torch.cat([ds.train, ds.validation, ds.test])
    assert sorted(map(tuple, allx.int().tolist())) == sorted(map(tuple, ff.T.astype(int).tolist()))
    savemat(tmp_path / "frey_rawface.mat", {"faces": ff})
    with pytest.raises(ValueError, match="no variable 'ff'"):
        load_dataset("frey_faces", tmp_path, download=False)


@pytest.mark.skipif(not (SHARED_DATA / "frey_faces").is_dir(), reason="real file not present")
def test_real_frey_faces():
    ds = load_dataset("frey_faces", SHARED_DATA / "frey_faces", download=False)
    assert (ds.train.shape, ds.validation.shape, ds.test.shape) == (
        (1565, 560),
        (200, 560),
        (200, 560),
    )


def test_histopathology(tmp_path):
    rng = np.random.default_rng(0)
    data = {
        k: rng.random((n, 28 * 28)).astype(np.float32)
        for k, n in (("training", 10), ("validation", 4), ("test", 3))
    }
    with open(tmp_path / "histopathology.pkl", "wb") as f:
        pickle.dump(data, f)
    ds = load_dataset("histopathology", tmp_path, download=False)
    assert ds.test.shape == (3, 784) and ds.num_values == 256
    assert torch.equal(ds.test, torch.from_numpy(np.round(data["test"] * 255)))


@pytest.mark.parametrize("name", [n for n in DATASETS if n not in ("digits", "fashion_mnist")])
def test_missing_files_are_named(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=name):
        load_dataset(name, tmp_path / "empty", download=False)


@pytest.mark.parametrize("name", [n for n in DATASETS if n not in ("digits", "fashion_mnist")])
def test_dataset_files_names_what_the_loader_would_miss_without_reading(tmp_path, name):
    from pyrovamp.data import dataset_files

    with pytest.raises(FileNotFoundError, match=f"{name}: missing {tmp_path / 'empty'}"):
        dataset_files(name, tmp_path / "empty", download=False)


def test_dataset_files_of_the_real_static_mnist_and_of_digits():
    from pyrovamp.data import dataset_files

    assert dataset_files("digits") == []
    root = SHARED_DATA / "static_mnist"
    if root.is_dir():
        files = dataset_files("static_mnist", root, download=False)
        assert [f.name for f in files] == [
            f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")
        ]
    with pytest.raises(ValueError, match="name must be one of digits, static_mnist"):
        dataset_files("static-mnist")


class _RunsCode:
    """What a malicious pickle does: its reconstruction calls a function of the attacker's
    choice (here a harmless one that leaves a trace)."""

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_histopathology_pickle_may_hold_arrays_only(tmp_path):
    from pyrovamp.data import read_array_pickle

    payload = _RunsCode()
    payload.target = str(tmp_path / "pwned")
    data = {
        "training": np.zeros((2, 784), np.float32),
        "validation": payload,
        "test": np.zeros((1, 784), np.float32),
    }
    with open(tmp_path / "histopathology.pkl", "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(
        ValueError,
        match=r"histopathology\.pkl.*refusing to load posix\.makedirs|"
        r"histopathology\.pkl.*refusing to load os\.makedirs",
    ):
        load_dataset("histopathology", tmp_path, download=False)
    assert not (tmp_path / "pwned").exists()  # nothing ran
    # arrays written by any protocol (2: the Python 2 files of the paper's code) are read
    for protocol in (2, 4, 5):
        path = tmp_path / f"ok{protocol}.pkl"
        with open(path, "wb") as f:
            pickle.dump(
                {"a": np.arange(6.0).reshape(2, 3), "b": [np.float32(1.5)]}, f, protocol=protocol
            )
        out = read_array_pickle(path)
        assert np.array_equal(out["a"], np.arange(6.0).reshape(2, 3)) and out["b"] == [1.5]


def test_truncated_histopathology_pickle_is_one_line(tmp_path):
    data = {k: np.zeros((2, 784), np.float32) for k in ("training", "validation", "test")}
    blob = pickle.dumps(data)
    (tmp_path / "histopathology.pkl").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"histopathology\.pkl: not a readable pickle") as e:
        load_dataset("histopathology", tmp_path, download=False)
    assert "\n" not in str(e.value)


def test_missing_files_are_fetched_into_the_folder_and_a_failed_fetch_leaves_nothing(tmp_path):
    """The download path, offline: a ``file://`` address stands for the server."""
    from pyrovamp.data.readers import require_files

    server = tmp_path / "server"
    server.mkdir()
    (server / "a.bin").write_bytes(b"\x00\x01" * 1000)
    root = tmp_path / "data"
    paths = require_files(root, ["a.bin"], server.as_uri() + "/", "toy", download=True)
    assert paths == [root / "a.bin"] and paths[0].read_bytes() == b"\x00\x01" * 1000
    with pytest.raises(FileNotFoundError, match=r"toy: missing .*b\.bin"):
        require_files(root, ["b.bin"], server.as_uri() + "/", "toy", download=True)
    assert sorted(p.name for p in root.iterdir()) == ["a.bin"]  # no partial file left behind
    with pytest.raises(FileNotFoundError, match="toy: missing .*--data-root FOLDER"):
        require_files(tmp_path / "other", ["a.bin"], server.as_uri() + "/", "toy", download=False)
