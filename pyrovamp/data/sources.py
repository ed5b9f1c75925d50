"""Your own data: array files (``.npy``, ``.npz``), folders of images and the torchvision data
sets, read into train / validation / test arrays of shape ``(N, D)`` with the likelihood their
values call for. :func:`pyrovamp.data.load_dataset` turns what :func:`load_source` returns into a
:class:`pyrovamp.data.Dataset`.

* An ``.npy`` file holds one array, split by ``split``; an ``.npz`` file holds the arrays
  ``train`` and optionally ``validation`` and ``test`` (a missing one is split off ``train``), or
  one array under any single key, split by ``split``.
* A folder of images (PNG, JPEG, BMP; searched recursively, sorted by path) of one size, grey
  (modes ``"1"``, ``"L"``) or colour (``"RGB"``; ``"RGBA"`` and palettes become RGB), read with
  Pillow, split by ``split``.
* A torchvision data set (:data:`TORCHVISION_SETS`) in torchvision's layout under ``root``,
  downloaded by torchvision when allowed: its training part is split into train and validation,
  its test part is the test set (Omniglot: ``images_background`` / ``images_evaluation``, strokes
  as 1). Read with pyrovamp's readers, which name the file that is missing or malformed.

Arrays may be ``(N, D)`` vectors, ``(N, H, W)`` grey images, ``(N, H, W, C)`` or ``(N, C, H,
W)`` images with ``C`` in 1, 3, 4 (where both would fit: channels first when ``H == W != C``,
else channels last); colour images are stored channels first, flattened. The likelihood
follows the values (:func:`infer_likelihood`): 0/1 -> ``"bernoulli"``; integers up to 32 ->
``"categorical"`` with ``max + 1`` levels; 8-bit values (``uint8``, or integers up to 255) ->
``"discretized_logistic"`` with 256 levels; floats in [0, 1] that are multiples of 1/255 are
stored as those 256 levels. Splits are seeded
(``numpy.random.default_rng(seed)``). Every error is one line naming the file or argument.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from pyrovamp.data.images import read_image_folder
from pyrovamp.data.torchvision_sets import TORCHVISION_SETS, read_torchvision

__all__ = [
    "LIKELIHOOD_NAMES",
    "ARRAY_SUFFIXES",
    "DEFAULT_SPLIT",
    "DEFAULT_HELD_OUT",
    "source_kind",
    "check_split",
    "read_array_file",
    "as_points",
    "infer_likelihood",
    "split_points",
    "load_source",
]

LIKELIHOOD_NAMES = ("bernoulli", "categorical", "discretized_logistic")
"""The likelihoods a data set's values may be given (``likelihood=``)."""
ARRAY_SUFFIXES = (".npy", ".npz")
"""The array files."""
DEFAULT_SPLIT = (0.8, 0.1, 0.1)
"""``(train, validation, test)`` fractions of a single array or folder."""
DEFAULT_HELD_OUT = 0.1
"""The fraction of ``train`` split off as the one missing part (validation or test)."""

_CATEGORICAL_MAX = 32  # integer values up to this: categorical with max + 1 levels
_VALIDATION_KEYS = ("validation", "valid", "val")


def source_kind(value: str) -> tuple[str, str] | None:
    """What ``value`` names: ``("torchvision", name)``, ``("array", absolute path)``,
    ``("folder", absolute path)``, or ``None`` for a name that is no path (the caller knows the
    other names).

    Raises:
        FileNotFoundError: ``value`` looks like a path (a separator, ``~``, a leading ``.`` or an
            array file's suffix) but nothing is there.
        ValueError: a file that is not an array file (naming it).
    """
    if value in TORCHVISION_SETS:
        return "torchvision", value
    path = Path(value).expanduser()
    if path.is_dir():
        return "folder", str(path.resolve())
    if path.is_file():
        if path.suffix.lower() not in ARRAY_SUFFIXES:
            raise ValueError(f"{path}: not an array file (.npy, .npz) or a folder of images")
        return "array", str(path.resolve())
    looks_like_path = (
        os.sep in value
        or "/" in value
        or value.startswith((".", "~"))
        or path.suffix.lower() in ARRAY_SUFFIXES
    )
    if looks_like_path:
        raise FileNotFoundError(f"{value}: no such file or folder")
    return None


def check_split(split, what: str = "split") -> tuple[float, float, float] | None:
    """``split`` as three fractions ``(train, validation, test)`` (``None`` stays ``None``).

    Raises:
        ValueError: not three finite numbers >= 0 with ``train > 0`` summing to 1 (within 1e-6)
            -- one line naming ``what``.
    """
    if split is None:
        return None
    try:
        values = tuple(float(v) for v in split)
    except (TypeError, ValueError):
        values = ()
    if (
        isinstance(split, (str, bytes))
        or len(values) != 3
        or not all(math.isfinite(v) and v >= 0 for v in values)
        or values[0] <= 0
        or abs(sum(values) - 1.0) > 1e-6
    ):
        raise ValueError(
            f"{what} must be three fractions TRAIN VALIDATION TEST >= 0 (TRAIN > 0) summing "
            f"to 1, got {split!r}"
        )
    return values


def read_array_file(path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npy`` (key ``""``) or ``.npz`` file, read without pickles.

    Raises:
        ValueError: not a readable array file, or one that holds Python objects or no arrays
            (one line naming the file).
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(6)
    if not (magic == b"\x93NUMPY" or magic.startswith(b"PK\x03\x04")):
        raise ValueError(f"{path}: not a readable .npy/.npz array file (no NumPy or zip header)")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {"": loaded}
        else:
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
    except ValueError as e:
        what = "holds Python objects" if "pickle" in str(e) else f"is not readable ({e})"
        raise ValueError(f"{path}: not an array file of numbers: it {what}") from None
    except Exception as e:  # a damaged zip raises zipfile's own errors
        raise ValueError(f"{path}: not a readable .npy/.npz array file ({e})") from None
    if not arrays:
        raise ValueError(f"{path}: no arrays in it")
    return arrays


def as_points(array: np.ndarray, what: str) -> tuple[np.ndarray, tuple]:
    """``array`` of ``(N, D)``, ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` (``C`` in 1,
    3, 4; where both fit, channels first if ``H == W != C``, else channels last) as ``(N, D)``
    points in its own dtype, with the shape of one point: ``(D,)``, ``(H, W)`` (one channel)
    or ``(C, H, W)`` (channels first, as ``D`` is laid out).

    Raises:
        ValueError: another number of dimensions, an empty array, a 4-D array without a
            channel axis of 1, 3 or 4, values that are not real numbers, NaN or infinite
            values (one line naming ``what``).
    """
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{what}: values of dtype {a.dtype}, expected real numbers")
    if a.ndim < 2 or a.ndim > 4:
        raise ValueError(
            f"{what}: an array of shape {a.shape}; expected (N, D), (N, H, W), (N, H, W, C) "
            "or (N, C, H, W)"
        )
    if a.size == 0:
        raise ValueError(f"{what}: empty array (shape {a.shape})")
    if np.issubdtype(a.dtype, np.floating):
        if np.isnan(a).any():
            raise ValueError(f"{what}: holds NaN values")
        if np.isinf(a).any():
            raise ValueError(f"{what}: holds infinite values")
    if a.ndim == 4:
        channels = (1, 3, 4)
        first_only = a.shape[1] in channels and a.shape[2] == a.shape[3] != a.shape[1]
        if a.shape[3] in channels and not first_only:
            a = a.transpose(0, 3, 1, 2)
        elif a.shape[1] not in channels:
            raise ValueError(
                f"{what}: an array of shape {a.shape} has no channel axis of 1, 3 or 4 "
                "(expected (N, H, W, C) or (N, C, H, W))"
            )
        if a.shape[1] == 1:
            a = a[:, 0]
    shape = tuple(int(s) for s in a.shape[1:])
    return np.ascontiguousarray(a).reshape(a.shape[0], -1), shape


def infer_likelihood(
    parts: list[np.ndarray], what: str, likelihood: str | None = None
) -> tuple[list[np.ndarray], str, int | None, str]:
    """The likelihood that fits the values of ``parts`` (all of them together), or the one
    given, and the parts as float32 in its support.

    0/1 (or only 0 and 255: binary images, stored as 0/1) -> ``"bernoulli"``; ``uint8`` or
    integers up to 255 -> ``"discretized_logistic"`` with
    256 levels, except integers up to 32 that are not ``uint8`` -> ``"categorical"`` with
    ``max + 1`` levels; floats in [0, 1] that are multiples of 1/255 -> their 256 levels. A
    given ``"categorical"`` or ``"discretized_logistic"`` keeps the levels the values have
    (256 for 8-bit values, ``max + 1`` else, at least 2).

    Returns:
        ``(parts as float32, likelihood, num_values or None, reason)``.

    Raises:
        ValueError: unknown ``likelihood``; negative values, integers over 255, other floats,
            ``"bernoulli"`` for values other than 0/1 (one line naming ``what``).
    """
    if likelihood is not None and likelihood not in LIKELIHOOD_NAMES:
        raise ValueError(
            f"unknown likelihood {likelihood!r}; expected one of {', '.join(LIKELIHOOD_NAMES)}"
        )
    lo = min(float(p.min()) for p in parts)
    hi = max(float(p.max()) for p in parts)
    if lo < 0:
        raise ValueError(
            f"{what}: negative values (min {lo:g}); expected 0/1, integer levels 0..255 or "
            "grey values in [0, 1]"
        )
    integral = all(
        not np.issubdtype(p.dtype, np.floating) or bool(np.all(p == np.round(p))) for p in parts
    )
    eight_bit = any(p.dtype == np.uint8 for p in parts)
    if not integral:
        scaled = [np.asarray(p, dtype=np.float64) * 255.0 for p in parts]
        if hi > 1 or not all(np.abs(s - np.round(s)).max() <= 1e-3 for s in scaled):
            sample = next(float(v) for p in parts for v in p.ravel() if v != round(float(v)))
            raise ValueError(
                f"{what}: float values such as {sample:g} that are neither 0/1, integer levels "
                "nor grey values in [0, 1] on 256 levels (multiples of 1/255); scale and round "
                "them to integer levels 0..255 (or 0/1) first"
            )
        parts = [np.round(s) for s in scaled]
        hi, eight_bit = round(hi * 255.0), True
        reason = "grey values in [0, 1], multiples of 1/255: stored as the levels 0..255"
    elif hi > 255:
        raise ValueError(
            f"{what}: integer values up to {hi:g}; expected 0/1, few levels or 8-bit values "
            "(0..255)"
        )
    black_white = integral and hi == 255 and all(bool(np.all((p == 0) | (p == 255))) for p in parts)
    if black_white and likelihood in (None, "bernoulli"):  # binary images saved as 0/255
        parts = [p // 255 if p.dtype == np.uint8 else p / 255.0 for p in parts]
        hi = 1
    if integral and hi <= 1:
        inferred, levels, reason = "bernoulli", 2, "values 0/1"
        if black_white and likelihood in (None, "bernoulli"):
            reason = "values 0/255 (binary images): stored as 0/1"
    elif integral and hi <= _CATEGORICAL_MAX and not eight_bit:
        inferred, levels = "categorical", int(hi) + 1
        reason = f"integer values 0..{int(hi)} ({levels} levels)"
    else:
        inferred, levels = "discretized_logistic", 256
        if integral:
            reason = "8-bit values (0..255)"
    if likelihood is None:
        name = inferred
    else:
        name = likelihood
        if name == "bernoulli" and inferred != "bernoulli":
            raise ValueError(
                f"{what}: likelihood 'bernoulli' needs 0/1 values, got values up to {hi:g}"
            )
        reason = f"given ({inferred} would fit the {reason})"
    num_values = None if name == "bernoulli" else max(levels, 2)
    return [np.asarray(p, dtype=np.float32) for p in parts], name, num_values, reason


def split_points(
    x: np.ndarray, fractions: tuple[float, float, float], seed: int, what: str
) -> list[np.ndarray]:
    """``x`` ``(N, ...)`` shuffled with ``numpy.random.default_rng(seed)`` and cut into the
    parts of ``fractions`` (``(train, validation, test)``; a part of fraction 0 is left out):
    ``round(N * f)`` points for validation and test, the rest for training.

    Raises:
        ValueError: a part of positive fraction, or training, would get no point (one line
            naming ``what`` and the sizes).
    """
    n = x.shape[0]
    n_val, n_test = (round(n * f) for f in fractions[1:])
    n_val = max(n_val, 1) if fractions[1] > 0 else 0
    n_test = max(n_test, 1) if fractions[2] > 0 else 0
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(
            f"{what}: {n} point{'s' if n != 1 else ''} are too few for the split "
            f"{tuple(fractions)} (train {n_train}, validation {n_val}, test {n_test})"
        )
    x = x[np.random.default_rng(seed).permutation(n)]
    cuts = [x[:n_train], x[n_train : n_train + n_val], x[n_train + n_val :]]
    return [c for c, f in zip(cuts, fractions, strict=True) if f > 0 or c is cuts[0]]


def _held_out(split, missing: str) -> tuple[float, float, float]:
    """The fractions that split the one missing part (``"validation"``/``"test"``) off
    ``train``: ``split``'s share of train plus that part, or :data:`DEFAULT_HELD_OUT`."""
    if split is None:
        f = DEFAULT_HELD_OUT
    else:
        t, v, te = split
        share = v if missing == "validation" else te
        f = share / (t + share)
    return (1 - f, f, 0.0) if missing == "validation" else (1 - f, 0.0, f)


def _arrays_parts(arrays: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    """The parts an array file holds: ``{"all": a}`` or ``train`` (+ ``validation``/``test``)."""
    if "train" not in arrays:
        if len(arrays) != 1:
            raise ValueError(
                f"{path}: expected the arrays train (and optionally validation, test) or one "
                f"array, found {', '.join(sorted(arrays))}"
            )
        return {"all": next(iter(arrays.values()))}
    parts = {"train": arrays["train"]}
    for key in _VALIDATION_KEYS:
        if key in arrays:
            parts["validation"] = arrays[key]
            break
    if "test" in arrays:
        parts["test"] = arrays["test"]
    return parts


def _check_positive(fractions, missing, what: str) -> None:
    index = {"validation": 1, "test": 2}
    zero = [m for m in missing if fractions[index[m]] <= 0]
    if zero:
        raise ValueError(
            f"{what}: the split {tuple(fractions)} gives the {' and '.join(zero)} part no "
            "points (the source has none of its own)"
        )


def _cut(parts: dict, split, seed: int, what: str) -> tuple[list[np.ndarray], list | None]:
    """Train, validation and test points from the parts a source holds, and the split used."""
    if "all" in parts:
        fractions = split or DEFAULT_SPLIT
        _check_positive(fractions, ("validation", "test"), what)
        return split_points(parts["all"], fractions, seed, what), list(fractions)
    missing = [k for k in ("validation", "test") if k not in parts]
    if not missing:
        if split is not None:
            raise ValueError(
                f"{what}: split applies to the parts a source lacks; it holds train, "
                "validation and test"
            )
        return [parts["train"], parts["validation"], parts["test"]], None
    if len(missing) == 2:
        fractions = split or DEFAULT_SPLIT
        _check_positive(fractions, missing, what)
        return split_points(parts["train"], fractions, seed, what), list(fractions)
    fractions = _held_out(split, missing[0])
    _check_positive(fractions, missing, what)
    train, held = split_points(parts["train"], fractions, seed, what)
    if missing[0] == "validation":
        out = [train, held, parts["test"]]
    else:
        out = [train, parts["validation"], held]
    return out, list(split) if split is not None else list(fractions)


def load_source(
    source: str,
    root=None,
    download: bool = True,
    *,
    split=None,
    seed: int = 0,
    likelihood: str | None = None,
) -> dict | None:
    """Read the data ``source`` names (a path to an ``.npy``/``.npz`` file or a folder of
    images, or a torchvision name): the fields of a :class:`pyrovamp.data.Dataset`, or ``None``
    when ``source`` is a name it does not know (:func:`source_kind`).

    Args:
        source: path or torchvision name.
        root: the torchvision sets' folder (default ``~/.cache/pyrovamp/torchvision``).
        download: let torchvision fetch a missing torchvision set.
        split: ``(train, validation, test)`` fractions (:func:`check_split`); default
            :data:`DEFAULT_SPLIT` for one array, :data:`DEFAULT_HELD_OUT` for the one part
            missing; a source with all three parts takes none.
        seed: the seed of the split.
        likelihood: one of :data:`LIKELIHOOD_NAMES`, or ``None``: what the values call for.

    Returns:
        ``{"name", "train", "validation", "test" (float32 (N, D) arrays), "image_shape",
        "likelihood", "num_values", "info"}`` -- ``info`` records ``source``, ``split``,
        ``seed`` and ``likelihood`` (the reason).

    Raises:
        ValueError: a bad file, folder, split or likelihood (one line naming it);
        FileNotFoundError: a path with nothing there, a missing torchvision file.
    """
    split = check_split(split)
    found = source_kind(source)
    if found is None:
        return None
    kind, ident = found
    info: dict = {"source": ident, "kind": kind}
    if kind == "array":
        arrays = read_array_file(ident)
        if "train" in arrays:  # other arrays (labels, statistics) are not data points
            keep = {"train", "test", *_VALIDATION_KEYS}
            arrays = {k: a for k, a in arrays.items() if k in keep}
        points = {k: as_points(a, ident + (f" ({k})" if k else "")) for k, a in arrays.items()}
        shapes = {k: s for k, (_, s) in points.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(
                f"{ident}: arrays of different point shapes: "
                + ", ".join(f"{k} {s}" for k, s in shapes.items())
            )
        raw = _arrays_parts({k: x for k, (x, _) in points.items()}, ident)
        shape = next(iter(shapes.values()))
        name = Path(ident).stem
    elif kind == "folder":
        images = read_image_folder(ident)
        x, shape = as_points(images, ident)
        raw, name = {"all": x}, Path(ident).name
    else:
        root = (
            Path(root).expanduser()
            if root is not None
            else Path.home() / ".cache/pyrovamp/torchvision"
        )
        train, test = read_torchvision(ident, root, download)
        (xt, shape), (xs, _) = (as_points(a, f"{ident} in {root}") for a in (train, test))
        raw, name, info["root"] = {"train": xt, "test": xs}, ident, str(root)
    pieces, used = _cut(raw, split, seed, ident)
    pieces, lik, num_values, reason = infer_likelihood(pieces, ident, likelihood)
    info.update(split=used, seed=seed, likelihood=reason)
    return {
        "name": name,
        "train": pieces[0],
        "validation": pieces[1],
        "test": pieces[2],
        "image_shape": shape,
        "likelihood": lik,
        "num_values": num_values,
        "info": info,
    }
