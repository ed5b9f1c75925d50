import pytest
import torch
from conftest import SHARED_DATA

from pyrovamp.data import load_dataset, read_amat


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


def test_static_mnist_reads_canonical_amat_files(tmp_path):
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
    with pytest.raises(FileNotFoundError, match="binarized_mnist_train.amat"):
        load_dataset("static_mnist", tmp_path, download=False)
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
