"""Readers of the canonical files of the data sets (binarised-MNIST ``.amat``, IDX, MATLAB
``.mat``, the array pickles of the paper's code), their download into a local folder and the
check of their SHA-256 digests. Every reader raises one line naming the file and what is wrong."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from pyrovamp._io import atomic_write

__all__ = [
    "read_amat",
    "read_idx_images",
    "read_array_pickle",
    "load_mat",
    "mat_key",
    "download_files",
    "require_files",
    "find_idx",
    "file_sha256",
    "check_sha256",
]


#: What a missing-file error tells the user to do besides downloading (the library's argument and
#: the command line's option).
FOLDER_HINT = "name the folder that holds them: root=FOLDER, on the command line --data-root FOLDER"


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
        raise ValueError(
            f"{path}: malformed .amat file: unexpected character "
            f"{chr(raw[bad[0]])!r} on line {line} (expected 0/1 values)"
        )
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
        raise ValueError(
            f"{path}: malformed .amat file: line {int(wrong[0]) + 1} has "
            f"{int(counts[wrong[0]])} values, expected {dim}"
        )
    if counts_nonempty.size == 0:
        raise ValueError(f"{path}: malformed .amat file: no images in it")
    values = (raw[is_digit] - ord("0")).astype(np.float32)
    return torch.from_numpy(values.reshape(-1, dim))


# digests already computed in this process, keyed by (resolved path, size, mtime): every file is
# hashed once however often its data set is loaded
_SHA256_SEEN: dict[tuple[str, int, int], str] = {}


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path`` as 64 hex digits, computed once per process for each
    ``(path, size, modification time)``.

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    path = Path(path)
    key = _stat_key(path)
    digest = _SHA256_SEEN.get(key)
    if digest is None:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        _SHA256_SEEN[key] = digest
    return digest


def _mismatch(what, expected: str, actual: str) -> ValueError:
    return ValueError(
        f"{what}: SHA-256 {actual} differs from the canonical file's {expected} "
        "(a damaged, incomplete or different file; delete it to download it again)"
    )


def check_sha256(path: str | os.PathLike, expected: str | None) -> Path:
    """``path`` if its SHA-256 (:func:`file_sha256`) is ``expected`` (``None``: not checked).

    Raises:
        ValueError: another digest -- one line naming the file, the expected and the actual
            digest.
    """
    path = Path(path)
    if expected is not None:
        actual = file_sha256(path)
        if actual != expected.lower():
            raise _mismatch(path, expected.lower(), actual)
    return path


def _fetch(url: str, path: Path, expected: str | None) -> None:
    """Download ``url`` to ``path`` atomically, hashing it on the way; a digest other than
    ``expected`` leaves ``path`` as it was and raises."""
    with urllib.request.urlopen(url, timeout=30) as response:

        def write(f):
            h = hashlib.sha256()
            while chunk := response.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
            if expected is not None and h.hexdigest() != expected.lower():
                raise _mismatch(f"{path} (downloaded from {url})", expected.lower(), h.hexdigest())
            return h.hexdigest()

        digest: list[str] = []
        atomic_write(path, lambda f: digest.append(write(f)))
    _SHA256_SEEN[_stat_key(path)] = digest[0]


def download_files(
    paths: Iterable[Path], base_url: str, digests: Mapping[str, str | None] | None = None
) -> None:
    """Download each file of ``paths`` from ``base_url + name`` into its folder, atomically
    (:func:`pyrovamp._io.atomic_write`), checking the SHA-256 of those whose name ``digests``
    maps to one before the file takes its place. A failed connection (no internet) is silent
    here -- the caller reports the missing file.

    Raises:
        ValueError: a downloaded file with another digest (nothing is written; one line naming
            the file, the URL, the expected and the actual digest).
    """
    digests = digests or {}
    for p in paths:
        try:
            _fetch(base_url + p.name, p, digests.get(p.name))
        except OSError:
            pass


def require_files(
    root: Path,
    files,
    base_url,
    name,
    download,
    digests: Mapping[str, str | None] | None = None,
):
    """Paths of ``files`` in ``root``, each checked against its SHA-256 in ``digests`` (by file
    name; absent or ``None``: not checked); missing ones are downloaded (and checked) when
    allowed.

    Raises:
        FileNotFoundError: a missing file (naming the first missing path).
        ValueError: a file with another digest (naming it, the expected and the actual digest).
    """
    digests = digests or {}
    paths = [root / f for f in files]
    missing = [p for p in paths if not p.is_file()]
    if missing and download and base_url:
        download_files(missing, base_url, digests)
        missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name}: missing {missing[0]} (expected {', '.join(files)} in {root}"
            + (f"; get them from {base_url}" if base_url else "")
            + f"; or {FOLDER_HINT})"
        )
    for p in paths:
        check_sha256(p, digests.get(p.name))
    return paths


def read_idx_images(path) -> np.ndarray:
    """Read an IDX image file (MNIST format, optionally ``.gz``): ``(N, rows * cols)`` uint8.

    Raises:
        ValueError: not an IDX file of unsigned bytes with 3 dimensions (naming the path).
    """
    path = Path(path)
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 16 or raw[:4] != b"\x00\x00\x08\x03":
        raise ValueError(f"{path}: not an IDX image file (expected magic 0x00000803)")
    n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    data = np.frombuffer(raw, dtype=np.uint8, offset=16)
    if data.size != n * rows * cols:
        raise ValueError(
            f"{path}: IDX header says {n}x{rows}x{cols} images but holds {data.size} bytes"
        )
    return data.reshape(n, rows * cols)


def find_idx(
    root: Path,
    stem: str,
    base_url,
    name,
    download,
    digests: Mapping[str, str | None] | None = None,
) -> Path:
    """The IDX file ``stem`` in ``root``, plain or gzipped, downloaded as ``stem.gz`` when
    missing and allowed (:func:`require_files`); a file named in ``digests`` is checked against
    its SHA-256."""
    digests = digests or {}
    for candidate in (root / stem, root / (stem + ".gz")):
        if candidate.is_file():
            return check_sha256(candidate, digests.get(candidate.name))
    return require_files(root, [stem + ".gz"], base_url, name, download, digests)[0]


def load_mat(path: str | os.PathLike) -> dict:
    """The variables of a MATLAB ``.mat`` file (``scipy.io.loadmat``).

    Raises:
        ValueError: the file cannot be read as a MATLAB file (naming the path).
    """
    from scipy.io import loadmat

    try:
        return loadmat(path)
    except Exception as e:  # scipy raises several types for a broken file
        raise ValueError(f"{path}: not a readable MATLAB file ({e})") from None


def mat_key(mat: dict, key: str, path) -> np.ndarray:
    """The variable ``key`` of a loaded ``.mat`` file as an array.

    Raises:
        ValueError: no such variable (naming ``path``).
    """
    if key not in mat:
        raise ValueError(f"{path}: malformed file: no variable {key!r} in it")
    return np.asarray(mat[key])


# what a pickle of numpy arrays may reference: the array and dtype constructors, nothing else
_ARRAY_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles
}


def read_array_pickle(path):
    """Read a pickle that holds numpy arrays in plain containers (dict, list, tuple), also one
    written by Python 2 (``encoding="latin1"``), without running code from the file: the
    unpickler resolves only numpy's array, scalar and dtype constructors (and ``_codecs.encode``
    for bytes), so a file that references any other callable -- the way a malicious pickle runs
    code -- is refused.

    Raises:
        ValueError: the file references anything else, or is not a readable pickle (truncated,
            corrupt) -- one line naming the file.
    """

    class _ArrayUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _ARRAY_PICKLE_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays "
                "and plain containers are allowed"
            )

    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as e:
        raise ValueError(
            f"{path}: not a readable pickle of numpy arrays ({type(e).__name__}: {e})"
        ) from None
