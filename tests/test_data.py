import hashlib
import io

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from pyrovamp.data import datasets as datasets_module
from pyrovamp.data import load_dataset, read_amat, readers
from pyrovamp.errors import ArgumentTypeError


@pytest.fixture
def unchecked(monkeypatch):
    """Small files in a canonical format under a canonical name: no recorded digest applies."""
    monkeypatch.setattr(datasets_module, "SHA256", {})


def test_digits_has_the_books_split():
    ds = load_dataset("digits")
    assert (ds.train.shape, ds.validation.shape, ds.test.shape) == (
        (1000, 64),
        (350, 64),
        (447, 64),
    )
    assert ds.likelihood == "categorical" and ds.num_values == 17 and ds.image_shape == (8, 8)
    allx = torch.cat([ds.train, ds.validation, ds.test])
    assert allx.dtype == torch.float32 and allx.min() == 0 and allx.max() == 16
    assert bool((allx == allx.round()).all())


def _write_amat(path, rows):
    path.write_text("".join(" ".join(str(int(v)) for v in r) + "\n" for r in rows))


def test_static_mnist_reads_canonical_amat_files(tmp_path, unchecked):
    g = torch.Generator().manual_seed(0)
    parts = {
        s: (torch.rand(n, 784, generator=g) < 0.3).int()
        for s, n in (("train", 5), ("valid", 3), ("test", 2))
    }
    for s, rows in parts.items():
        _write_amat(tmp_path / f"binarized_mnist_{s}.amat", rows.tolist())
    ds = load_dataset("static_mnist", tmp_path, download=False)
    assert torch.equal(ds.train, parts["train"].float())
    assert torch.equal(ds.validation, parts["valid"].float())
    assert torch.equal(ds.test, parts["test"].float())
    assert ds.likelihood == "bernoulli" and ds.image_shape == (28, 28)


def test_missing_and_malformed_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="binarized_mnist_train.amat") as e:
        load_dataset("static_mnist", tmp_path, download=False)
    assert "--data-root FOLDER" in str(e.value) and "\n" not in str(e.value)  # says what to do
    bad = tmp_path / "bad.amat"
    _write_amat(bad, [[0] * 784, [1] * 783])
    with pytest.raises(ValueError, match=r"bad.amat.*line 2 has 783 values"):
        read_amat(bad)
    bad.write_text(" ".join(["0"] * 783 + ["2"]) + "\n")
    with pytest.raises(ValueError, match=r"bad.amat.*unexpected character '2' on line 1"):
        read_amat(bad)
    bad.write_text(" ".join(["0"] * 782 + ["10"]) + "\n")
    with pytest.raises(ValueError, match=r"bad.amat.*other than 0 or 1 on line 1"):
        read_amat(bad)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown data set 'mnist'.*digits, static_mnist"):
        load_dataset("mnist")


@pytest.mark.skipif(not (SHARED_DATA / "static_mnist").is_dir(), reason="real files not present")
def test_real_static_mnist_files():
    ds = load_dataset("static_mnist", SHARED_DATA / "static_mnist", download=False)
    assert (ds.train.shape, ds.validation.shape, ds.test.shape) == (
        (50000, 784),
        (10000, 784),
        (10000, 784),
    )
    assert set(ds.test.unique().tolist()) == {0.0, 1.0}


def test_spread_subset_takes_evenly_spaced_rows_in_order():
    from pyrovamp.data import spread_subset

    x = torch.arange(10000)
    sub = spread_subset(x, 1000)
    assert sub.shape == (1000,) and sub[0] == 0 and sub[-1] == 9999
    assert torch.all(sub.diff() >= 10) and torch.all(sub.diff() <= 11)
    assert torch.equal(spread_subset(x, 3), torch.tensor([0, 5000, 9999]))
    assert spread_subset(x[:5], 9) is not None and torch.equal(spread_subset(x[:5], 9), x[:5])
    with pytest.raises(ValueError, match="n must be a positive integer"):
        spread_subset(x, 0)
    # NumPy integers are integers; a float or a string is the wrong type, named as such
    assert torch.equal(spread_subset(x, np.int64(3)), torch.tensor([0, 5000, 9999]))
    for bad in (2.5, "3", True):
        with pytest.raises(ArgumentTypeError, match="n must be a positive integer"):
            spread_subset(x, bad)
    with pytest.raises(ArgumentTypeError, match="x must be a torch.Tensor"):
        spread_subset([1, 2, 3], 2)


def test_load_dataset_names_an_argument_of_the_wrong_type():
    with pytest.raises(ArgumentTypeError, match="name must be a data set name"):
        load_dataset(3)
    with pytest.raises(ArgumentTypeError, match="download must be True or False"):
        load_dataset("static_mnist", "/no/such/folder", download="no")
    with pytest.raises(ArgumentTypeError, match="root must be a folder"):
        load_dataset("static_mnist", 5)


def test_every_download_address_is_https():
    from pyrovamp import data

    urls = [v for k, v in vars(datasets_module).items() if k.endswith("_URL")]
    assert len(urls) == 7 and data.STATIC_MNIST_URL in urls and data.FASHION_URL in urls
    assert all(u.startswith("https://") for u in urls), urls


def test_a_canonical_file_with_another_digest_is_refused_in_one_line(tmp_path):
    """The recorded digests are those of the real files; a file of the right name and format
    but other contents (here a small, well-formed one) is refused before it is read."""
    rows = (torch.rand(3, 784, generator=torch.Generator().manual_seed(0)) < 0.3).int()
    for s in ("train", "valid", "test"):
        _write_amat(tmp_path / f"binarized_mnist_{s}.amat", rows.tolist())
    path = tmp_path / "binarized_mnist_train.amat"
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = datasets_module.SHA256["static_mnist"]["binarized_mnist_train.amat"]
    with pytest.raises(ValueError) as e:
        load_dataset("static_mnist", tmp_path, download=False)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and expected in msg and actual in msg
    from scipy.io import savemat

    ff = np.random.default_rng(0).integers(0, 256, (560, 30)).astype(np.uint8)
    savemat(tmp_path / "frey_rawface.mat", {"ff": ff})
    with pytest.raises(ValueError, match=r"frey_rawface\.mat: SHA-256 [0-9a-f]{64} differs"):
        load_dataset("frey_faces", tmp_path, download=False)


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_a_download_is_checked_before_it_takes_its_place(tmp_path, monkeypatch):
    """No network: the downloader is replaced by one that serves given bytes."""
    from scipy.io import savemat

    good = tmp_path / "good.mat"
    savemat(good, {"ff": np.random.default_rng(0).integers(0, 256, (560, 30)).astype(np.uint8)})
    payload = good.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    monkeypatch.setattr(datasets_module, "SHA256", {"frey_faces": {"frey_rawface.mat": digest}})
    served, asked = [b"tampered" + payload[8:]], []

    def urlopen(url, timeout=None):
        asked.append(url)
        return _Response(served[0])

    monkeypatch.setattr(readers.urllib.request, "urlopen", urlopen)
    root = tmp_path / "data"
    with pytest.raises(ValueError) as e:
        load_dataset("frey_faces", root, download=True)
    msg = str(e.value)
    assert "frey_rawface.mat" in msg and digest in msg and "\n" not in msg
    assert asked == ["https://cs.nyu.edu/~roweis/data/frey_rawface.mat"]
    assert not root.exists() or not any(root.iterdir())  # nothing written, no partial file
    served[0] = payload
    ds = load_dataset("frey_faces", root, download=True)
    assert ds.train.shape[1] == 560 and (root / "frey_rawface.mat").read_bytes() == payload


def test_each_file_is_hashed_once_per_process(tmp_path, monkeypatch):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    calls = []
    real = hashlib.file_digest

    def counting(f, name):
        calls.append(name)
        return real(f, name)

    monkeypatch.setattr(readers.hashlib, "file_digest", counting)
    want = hashlib.sha256(b"abc").hexdigest()
    for _ in range(3):
        assert readers.check_sha256(path, want) == path
    assert calls == ["sha256"]
    path.write_bytes(b"abcd")  # another size: hashed again, and refused
    with pytest.raises(ValueError, match="a.bin: SHA-256"):
        readers.check_sha256(path, want)
    assert len(calls) == 2
