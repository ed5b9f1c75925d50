"""Your own data (:mod:`pyrovamp.data.sources`): array files, folders of images and torchvision
data sets in their on-disk layout, all built here (tiny, seeded, no network); the likelihood the
values call for; one line for each bad input; and one epoch from the command line on each kind,
with ``--resume``, ``pyrovamp evaluate`` and ``load_run`` reading the very same data."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import pyrovamp as pv
from pyrovamp.cli.app import main
from pyrovamp.data import TORCHVISION_SETS, load_dataset
from pyrovamp.data.sources import infer_likelihood

RNG = np.random.default_rng(0)


def _bits(*shape) -> np.ndarray:
    return RNG.integers(0, 2, shape).astype(np.uint8)


def _bytes(*shape) -> np.ndarray:
    return RNG.integers(0, 256, shape).astype(np.uint8)


def _rows(t: torch.Tensor) -> set:
    return {tuple(r) for r in t.tolist()}


# --- array files ---------------------------------------------------------------------------


def test_an_npz_with_all_three_parts_is_taken_as_it_is(tmp_path):
    train, val, test = _bits(20, 4, 5), _bits(6, 4, 5), _bits(7, 4, 5)
    np.savez(tmp_path / "parts.npz", train=train, validation=val, test=test)
    ds = load_dataset(tmp_path / "parts.npz")
    assert ds.name == "parts" and ds.image_shape == (4, 5) and ds.likelihood == "bernoulli"
    assert ds.train.dtype == torch.float32 and ds.train.shape == (20, 20)
    assert torch.equal(ds.validation, torch.from_numpy(val.reshape(6, 20)).float())
    assert torch.equal(ds.test, torch.from_numpy(test.reshape(7, 20)).float())
    assert ds.info["source"] == str((tmp_path / "parts.npz").resolve())
    assert ds.info["split"] is None and ds.info["likelihood"] == "values 0/1"
    with pytest.raises(ValueError, match="split applies to the parts a source lacks"):
        load_dataset(tmp_path / "parts.npz", split=(0.8, 0.1, 0.1))


def test_the_missing_parts_of_an_npz_are_split_off_train_with_the_seed(tmp_path):
    train, test = _bytes(50, 3, 4, 4), _bytes(9, 3, 4, 4)  # channels first
    np.savez(tmp_path / "no_val.npz", train=train, test=test)
    ds = load_dataset(str(tmp_path / "no_val.npz"))
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (45, 5, 9)
    assert ds.info["split"] == [0.9, 0.1, 0.0] and ds.info["seed"] == 0
    assert ds.image_shape == (3, 4, 4) and (ds.likelihood, ds.num_values) == (
        "discretized_logistic",
        256,
    )
    # every training image once, in train or validation; the test part untouched
    flat = torch.from_numpy(train.reshape(50, -1)).float()
    assert _rows(torch.cat([ds.train, ds.validation])) == _rows(flat)
    assert torch.equal(ds.test, torch.from_numpy(test.reshape(9, -1)).float())
    again, other = (
        load_dataset(tmp_path / "no_val.npz"),
        load_dataset(tmp_path / "no_val.npz", seed=1),
    )
    assert torch.equal(again.validation, ds.validation)
    assert not torch.equal(other.validation, ds.validation)

    np.savez(tmp_path / "train_only.npz", train=_bits(40, 6))
    ds = load_dataset(tmp_path / "train_only.npz")
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (32, 4, 4)
    assert ds.image_shape == (6,)


def test_an_npy_array_is_split_by_split_and_channels_last_equals_channels_first(tmp_path):
    x = _bytes(40, 5, 6, 3)  # N, H, W, C
    np.save(tmp_path / "last.npy", x)
    np.save(tmp_path / "first.npy", x.transpose(0, 3, 1, 2))
    np.savez(tmp_path / "one_key.npz", pictures=x)
    last = load_dataset(tmp_path / "last.npy", split=(0.5, 0.25, 0.25), seed=3)
    assert (len(last.train), len(last.validation), len(last.test)) == (20, 10, 10)
    assert last.image_shape == (3, 5, 6) and last.info["split"] == [0.5, 0.25, 0.25]
    for other in ("first.npy", "one_key.npz"):
        ds = load_dataset(tmp_path / other, split=[0.5, 0.25, 0.25], seed=3)
        assert torch.equal(ds.train, last.train) and torch.equal(ds.test, last.test)
    # channels first in the flattened points: the red plane, then green, then blue
    expected = torch.from_numpy(x.transpose(0, 3, 1, 2).reshape(40, -1).copy()).float()
    assert _rows(torch.cat([last.train, last.validation, last.test])) == _rows(expected)
    single = load_dataset(tmp_path / "last.npy", split=(0.8, 0.1, 0.1))
    assert single.image_shape == (3, 5, 6)
    np.save(tmp_path / "grey4d.npy", _bytes(10, 4, 4, 1))
    assert load_dataset(tmp_path / "grey4d.npy").image_shape == (4, 4)


# --- folders of images -----------------------------------------------------------------------


def _write_images(folder, arrays, mode=None, nested=False):
    for i, a in enumerate(arrays):
        path = folder / (f"s{i % 2}" if nested else "") / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a, mode=mode).save(path) if mode else Image.fromarray(a).save(path)


def test_a_folder_of_grey_pngs_is_read_in_path_order_recursively(tmp_path):
    images = _bytes(20, 6, 9)  # not square
    _write_images(tmp_path / "grey", images, nested=True)
    ds = load_dataset(tmp_path / "grey", split=(0.6, 0.2, 0.2))
    assert ds.name == "grey" and ds.image_shape == (6, 9)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (12, 4, 4)
    assert ds.likelihood == "discretized_logistic" and ds.num_values == 256
    everything = torch.cat([ds.train, ds.validation, ds.test])
    assert _rows(everything) == _rows(torch.from_numpy(images.reshape(20, -1)).float())
    assert torch.equal(load_dataset(tmp_path / "grey", split=(0.6, 0.2, 0.2)).test, ds.test)

    bits = [Image.fromarray(b.astype(bool)) for b in _bits(10, 5, 5)]
    (tmp_path / "binary").mkdir()
    for i, img in enumerate(bits):
        assert img.mode == "1"
        img.save(tmp_path / "binary" / f"{i}.png")
    ds = load_dataset(tmp_path / "binary")
    assert ds.likelihood == "bernoulli" and set(ds.train.unique().tolist()) <= {0.0, 1.0}


def test_a_folder_of_colour_images_is_rgb_channels_first(tmp_path):
    rgb = _bytes(10, 4, 5, 3)
    _write_images(tmp_path / "colour", rgb)
    rgba = np.concatenate([_bytes(1, 4, 5, 3), np.full((1, 4, 5, 1), 255, np.uint8)], axis=3)
    Image.fromarray(rgba[0], mode="RGBA").save(tmp_path / "colour" / "zz_alpha.png")
    ds = load_dataset(tmp_path / "colour", split=(0.8, 0.1, 0.1))
    assert ds.image_shape == (3, 4, 5) and ds.input_dim == 60
    expected = np.concatenate([rgb, rgba[..., :3]]).transpose(0, 3, 1, 2).reshape(11, -1)
    everything = torch.cat([ds.train, ds.validation, ds.test])
    assert _rows(everything) == _rows(torch.from_numpy(expected).float())


# --- torchvision data sets in their own layout -----------------------------------------------


def _idx(path, array: np.ndarray, code: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    assert code == array.ndim
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_like(root, name, n_train=30, n_test=8):
    raw = root / name / "raw"
    images = {"train": _bytes(n_train, 28, 28), "t10k": _bytes(n_test, 28, 28)}
    for part, x in images.items():
        _idx(raw / f"{part}-images-idx3-ubyte", x, 3)
        _idx(raw / f"{part}-labels-idx1-ubyte", RNG.integers(0, 10, len(x)).astype(np.uint8), 1)
    return images


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "KMNIST"])
def test_a_torchvision_set_is_read_from_its_raw_files(tmp_path, name):
    import torchvision

    images = _mnist_like(tmp_path, name)
    ds = load_dataset(name, tmp_path, download=False)
    assert ds.name == name and ds.image_shape == (28, 28) and ds.info["root"] == str(tmp_path)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (27, 3, 8)
    assert ds.likelihood == "discretized_logistic" and ds.info["split"] == [0.9, 0.1, 0.0]
    assert torch.equal(ds.test, torch.from_numpy(images["t10k"].reshape(8, -1)).float())
    # the files are torchvision's own layout: its reader sees the same images
    tv = getattr(torchvision.datasets, name)(str(tmp_path), train=True, download=False)
    assert _rows(torch.cat([ds.train, ds.validation])) == _rows(tv.data.reshape(30, -1).float())


def test_emnist_omniglot_and_cifar10_in_their_layouts(tmp_path):
    raw = tmp_path / "EMNIST" / "raw"
    letters = _bytes(12, 28, 28)
    _idx(raw / "emnist-balanced-train-images-idx3-ubyte", letters, 3)
    _idx(raw / "emnist-balanced-test-images-idx3-ubyte", _bytes(4, 28, 28), 3)
    ds = load_dataset("EMNIST", tmp_path, download=False)
    upright = torch.from_numpy(letters.transpose(0, 2, 1).reshape(12, -1).copy()).float()
    assert _rows(torch.cat([ds.train, ds.validation])) == _rows(upright)

    for part, n in (("background", 6), ("evaluation", 3)):
        folder = tmp_path / "omniglot-py" / f"images_{part}" / "Alphabet" / "character01"
        folder.mkdir(parents=True)
        strokes = _bits(n, 7, 7)  # black strokes (0) on white (1) in the files
        for i, b in enumerate(strokes):
            Image.fromarray((1 - b).astype(bool)).save(folder / f"{i:02d}.png")
    ds = load_dataset("Omniglot", tmp_path, download=False)
    assert ds.likelihood == "bernoulli" and ds.image_shape == (7, 7)
    assert torch.equal(ds.test, torch.from_numpy(strokes.reshape(3, -1)).float())  # strokes: 1

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [_bytes(4, 3072) for _ in range(6)]
    for name, data in zip(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], batches, strict=True
    ):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [0] * 4}, f, protocol=2)
    ds = load_dataset("CIFAR10", tmp_path, download=False)
    assert ds.image_shape == (3, 32, 32) and (len(ds.train), len(ds.validation)) == (18, 2)
    assert torch.equal(ds.test, torch.from_numpy(batches[-1]).float())


def test_a_missing_torchvision_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNIST: missing .*MNIST/raw/train-images"):
        load_dataset("MNIST", tmp_path, download=False)
    assert set(TORCHVISION_SETS) == {
        "MNIST",
        "FashionMNIST",
        "KMNIST",
        "EMNIST",
        "Omniglot",
        "CIFAR10",
    }


# --- the likelihood the values call for -----------------------------------------------------


@pytest.mark.parametrize(
    "values, likelihood, num_values",
    [
        (np.array([[0, 1], [1, 1]], dtype=np.int64), "bernoulli", None),
        (np.array([[0.0, 1.0], [1.0, 0.0]]), "bernoulli", None),
        (np.array([[True, False]]), "bernoulli", None),
        (np.array([[0, 16], [3, 7]], dtype=np.int64), "categorical", 17),
        (np.array([[0, 3], [2, 1]], dtype=np.int32), "categorical", 4),
        (np.array([[0, 16], [3, 7]], dtype=np.uint8), "discretized_logistic", 256),
        (np.array([[0, 200], [3, 255]], dtype=np.int64), "discretized_logistic", 256),
        (
            np.array([[0.0, 3 / 255], [1.0, 128 / 255]], dtype=np.float32),
            "discretized_logistic",
            256,
        ),
    ],
)
def test_the_likelihood_follows_the_values(values, likelihood, num_values):
    (x,), name, levels, reason = infer_likelihood([values], "x")
    assert (name, levels) == (likelihood, num_values) and x.dtype == np.float32 and reason
    if values.dtype == np.float32:  # grey values on 256 levels: stored as those levels
        assert x.tolist() == [[0.0, 3.0], [255.0, 128.0]]


def test_a_likelihood_can_be_given(tmp_path):
    np.save(tmp_path / "levels.npy", RNG.integers(0, 17, (30, 4)))
    ds = load_dataset(tmp_path / "levels.npy", likelihood="discretized_logistic")
    assert (ds.likelihood, ds.num_values) == ("discretized_logistic", 17)
    assert ds.info["likelihood"].startswith("given (categorical would fit")
    np.save(tmp_path / "bytes.npy", _bytes(30, 4))
    ds = load_dataset(tmp_path / "bytes.npy", likelihood="categorical")
    assert (ds.likelihood, ds.num_values) == ("categorical", 256)
    with pytest.raises(ValueError, match=r"bytes.npy: likelihood 'bernoulli' needs 0/1 values"):
        load_dataset(tmp_path / "bytes.npy", likelihood="bernoulli")
    with pytest.raises(ValueError, match="unknown likelihood 'gaussian'"):
        load_dataset(tmp_path / "bytes.npy", likelihood="gaussian")
    with pytest.raises(ValueError, match="split and likelihood apply to array files"):
        load_dataset("digits", split=(0.8, 0.1, 0.1), likelihood="categorical")


# --- bad input: one line naming the file or argument ---------------------------------------


def _bad_inputs(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    (tmp_path / "notes.txt").write_text("hello")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    np.save(tmp_path / "nan.npy", np.array([[0.5, np.nan]] * 10))
    np.save(tmp_path / "floats.npy", np.array([[0.5, 0.123]] * 10))
    np.save(tmp_path / "negative.npy", np.array([[-1, 2]] * 10))
    np.save(tmp_path / "vector.npy", np.arange(5))
    np.save(tmp_path / "objects.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "keys.npz", a=_bits(4, 2), b=_bits(4, 2))
    np.savez(tmp_path / "shapes.npz", train=_bits(10, 2), test=_bits(3, 3))
    ragged = tmp_path / "ragged"
    _write_images(ragged, _bytes(3, 4, 4))
    Image.fromarray(_bytes(5, 4)).save(ragged / "img99.png")
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "readme.txt").write_text("no pictures here")
    broken = tmp_path / "broken"
    _write_images(broken, _bytes(2, 4, 4))
    (broken / "img05.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return [
        ("junk.npz", None, "junk.npz: not a readable .npy/.npz array file"),
        ("notes.txt", None, r"notes.txt: not an array file \(.npy, .npz\) or a folder of images"),
        ("empty.npy", None, r"empty.npy: empty array \(shape \(0, 4\)\)"),
        ("nan.npy", None, "nan.npy: holds NaN values"),
        ("floats.npy", None, "floats.npy: float values such as 0.5 that are neither 0/1"),
        ("negative.npy", None, r"negative.npy: negative values \(min -1\)"),
        ("vector.npy", None, r"vector.npy: an array of shape \(5,\); expected \(N, D\)"),
        ("objects.npy", None, "objects.npy: not an array file of numbers: it holds Python"),
        ("keys.npz", None, "keys.npz: expected the arrays train .* found a, b"),
        ("shapes.npz", None, r"shapes.npz: arrays of different point shapes: train \(2,\)"),
        ("ragged", None, r"ragged: images of different sizes: .*img99.png is 4x5, img00.png 4x4"),
        ("no_images", None, r"no_images: no images \(.png, .jpg, .jpeg, .bmp\) in it"),
        ("broken", None, "img05.png: unreadable image"),
        ("missing.npz", None, "missing.npz: no such file or folder"),
        ("negative.npy", (0.5, 0.5, 0.0), r"gives the test part no points"),
        ("vector2d", (0.05, 0.05, 0.9), r"vector2d.npy: 10 points are too few for the split"),
        ("nan.npy", (0.5, 0.5, 0.5), "split must be three fractions TRAIN VALIDATION TEST"),
        (
            "vector2d",
            (1.0, 0.0, 0.0),
            r"vector2d.npy: the split \(1.0, 0.0, 0.0\) gives the validation and",
        ),
    ]


def test_bad_input_is_one_line_naming_it(tmp_path):
    np.save(tmp_path / "vector2d.npy", _bits(10, 3))
    for name, split, message in _bad_inputs(tmp_path):
        path = tmp_path / (name + ".npy" if name == "vector2d" else name)
        with pytest.raises((ValueError, FileNotFoundError), match=message) as e:
            load_dataset(path, split=split)
        assert len(str(e.value).splitlines()) == 1, str(e.value)
    with pytest.raises(ValueError, match=r"unknown data set 'cifar'; expected one of digits, .*"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="CIFAR10\\), or a path to an .npy/.npz file"):
        load_dataset("cifar")


# --- figures of any image shape -------------------------------------------------------------


def test_image_grids_show_colour_non_square_and_flat_images():
    colour = torch.rand(5, 3 * 4 * 6)
    grid = pv.image_grid(colour, (3, 4, 6), nrow=3)
    assert grid.shape == (2 * 5 + 1, 3 * 7 + 1, 3)
    assert pv.image_grid(torch.rand(4, 4 * 6), (4, 6), nrow=2).shape == (11, 15)
    assert pv.image_grid(torch.rand(4, 12), (12,), nrow=4).shape == (3 + 2, 4 * 5 + 1)
    assert pv.image_grid(torch.rand(2, 13), (13,), nrow=2).shape == (1 + 2, 2 * 14 + 1)
    assert pv.image_grid(torch.rand(2, 36), (1, 6, 6), nrow=2).shape == (8, 15)


@pytest.mark.parametrize("shape", [(3, 4, 6), (5, 3), (13,)])
def test_the_figures_of_a_model_of_any_shape(shape):
    from pyrovamp.workflow.plots import plot_pseudo_inputs, plot_reconstructions, plot_samples

    model = pv.VAE(shape, 2, prior="vampprior", num_components=4, hidden_dim=8,
                   likelihood="discretized_logistic", num_values=256)  # fmt: skip
    x = torch.randint(0, 256, (6, int(np.prod(shape)))).float()
    for fig in (plot_samples(model, 6), plot_reconstructions(model, x), plot_pseudo_inputs(model)):
        fig.canvas.draw()  # rendered without an error
        shown = fig.axes[0].images[0].get_array()
        assert shown.ndim == (3 if len(shape) == 3 else 2)  # colour as colour


# --- one epoch from the command line on each kind, and the same data back ------------------

FAST = ["--epochs", "1", "--latent-dim", "2", "--num-components", "4", "--hidden-dim", "16"]
FAST += ["--batch-size", "16", "--num-samples", "4", "--accelerator", "cpu", "--no-progress"]


def _sources(tmp_path):
    np.savez(tmp_path / "arrays.npz", train=_bits(40, 5, 5), test=_bits(8, 5, 5))
    _write_images(tmp_path / "photos", _bytes(30, 4, 6, 3))
    _mnist_like(tmp_path / "tv", "MNIST", n_train=40, n_test=8)
    return [
        (["--dataset", str(tmp_path / "arrays.npz")], "arrays", "bernoulli"),
        (
            ["--dataset", str(tmp_path / "photos"), "--split", "0.6", "0.2", "0.2"],
            "photos",
            "discretized_logistic",
        ),  # fmt: skip
        (
            ["--dataset", "MNIST", "--data-root", str(tmp_path / "tv"), "--data-seed", "4"],
            "MNIST",
            "discretized_logistic",
        ),  # fmt: skip
    ]


def test_one_epoch_from_the_command_line_on_each_kind_and_the_same_data_back(
    tmp_path, monkeypatch, capsys
):
    from pyrovamp.workflow.runs import load_run, run_dataset
    from pyrovamp.workflow.zoo import evaluate_pretrained, export_run

    monkeypatch.chdir(tmp_path)
    for argv, stem, likelihood in _sources(tmp_path):
        assert main(["train", *argv, *FAST]) == 0, capsys.readouterr().err
        (out,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(f"{stem}_")]
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["likelihood"] == likelihood and cfg["data_seed"] == (4 if stem == "MNIST" else 0)
        if stem != "MNIST":
            assert cfg["dataset"] == str(tmp_path / argv[1])
        assert cfg["split"] == {"arrays": [0.9, 0.1, 0.0], "photos": [0.6, 0.2, 0.2]}.get(
            stem, [0.9, 0.1, 0.0]
        )
        for f in ("model.pt", "metrics.json", "samples.png", "reconstructions.png",
                  "pseudo_inputs.png"):  # fmt: skip
            assert (out / f).is_file(), f
        model, _, dataset, _ = load_run(out)
        assert model.likelihood.high == (1.0 if likelihood == "bernoulli" else 255.0)
        # the data the run trained on: the source read with the options given
        root = tmp_path / "tv" if stem == "MNIST" else None
        split = (0.6, 0.2, 0.2) if stem == "photos" else None
        seed = cfg["data_seed"]
        trained_on = load_dataset(cfg["dataset"], root, download=False, split=split, seed=seed)
        for part in ("train", "validation", "test"):
            assert torch.equal(getattr(dataset, part), getattr(trained_on, part))
            assert torch.equal(getattr(run_dataset(cfg), part), getattr(trained_on, part))
        # resume with one more epoch, and evaluate: the same points again
        assert main(["train", "--resume", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
        assert json.loads((out / "metrics.json").read_text())["epochs_trained"] == 2
        assert main(["evaluate", str(out), "--num-samples", "3", "--no-progress"]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["num_test_points"] == len(dataset.test)
        # exported as a pretrained model, it is scored on the same test points
        pre = export_run(out, tmp_path / "pretrained" / stem, name=stem)
        again = evaluate_pretrained(pre, data_root=root, progress=False)
        assert again["num_test_points"] == m["num_test_points"]
        assert again["test_log_likelihood"] == pytest.approx(m["test_log_likelihood"], abs=1e-9)
    capsys.readouterr()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "cifar"], "argument --dataset: unknown data set 'cifar'; expected one of"),
        (["--dataset", "no/such.npz"], "argument --dataset: no/such.npz: no such file or folder"),
        (["--split", "0.8", "0.1", "0.1"], "--split applies to array files"),
        (["--likelihood", "categorical"], "--likelihood applies to array files"),
        (["--dataset", "X.npy", "--split", "0.5", "0.5", "0.5"], "--split must be three"),
        (["--dataset", "X.npy", "--likelihood", "poisson"], "invalid choice: 'poisson'"),
        (["--dataset", "X.npy", "--likelihood", "bernoulli"], "X.npy: likelihood 'bernoulli'"),
    ],
)
def test_a_bad_data_option_is_one_line_before_any_work(
    tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "X.npy", _bytes(20, 3))
    try:
        status = main(["train", *argv, *FAST, "--out", str(tmp_path / "never")])
    except SystemExit as e:  # argparse's usage errors
        status = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "never").exists()


# --- what the review of the first version found -----------------------------------------------


def test_16_bit_images_are_refused_not_clipped(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    for i in range(3):
        values = np.random.default_rng(i).integers(0, 65536, (8, 8)).astype(np.uint16)
        Image.fromarray(values).save(folder / f"{i}.png")  # mode I;16
    with pytest.raises(ValueError, match=r"0\.png: image mode 'I;16' \(16-bit or floating grey\)"):
        load_dataset(folder)


def test_an_npz_with_labels_beside_the_images_reads_the_images(tmp_path):
    x, t = _bits(30, 4, 4), _bits(6, 4, 4)
    np.savez(tmp_path / "a.npz", train=x, test=t, train_labels=np.arange(30), mean=x.mean(0))
    ds = load_dataset(tmp_path / "a.npz")
    assert ds.image_shape == (4, 4) and ds.likelihood == "bernoulli"
    assert torch.equal(ds.test, torch.from_numpy(t.reshape(6, 16)).float())
    assert len(ds.train) + len(ds.validation) == 30


def test_black_and_white_images_saved_as_0_and_255_are_binary(tmp_path):
    bw = _bits(20, 6, 6) * 255
    _write_images(tmp_path / "bw", bw)  # mode "L", what most tools write
    ds = load_dataset(tmp_path / "bw")
    assert ds.likelihood == "bernoulli" and ds.num_values is None
    assert set(torch.cat([ds.train, ds.validation, ds.test]).unique().tolist()) == {0.0, 1.0}
    assert "0/255" in ds.info["likelihood"]
    grey = load_dataset(tmp_path / "bw", likelihood="discretized_logistic")
    assert grey.num_values == 256 and grey.train.max() == 255


def test_a_relative_data_root_is_recorded_absolute(tmp_path, monkeypatch, capsys):
    _mnist_like(tmp_path / "tv", "MNIST", n_train=40, n_test=8)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--dataset", "MNIST", "--data-root", "tv", "--out", str(out), *FAST]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["data_root"] == str(tmp_path / "tv")
    monkeypatch.chdir(tmp_path / "tv")  # elsewhere: the run still finds its data
    assert main(["evaluate", str(out), "--num-samples", "2", "--no-progress"]) == 0
    capsys.readouterr()
