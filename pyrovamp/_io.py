"""One atomic write for every file pyrovamp writes: a temporary file in the target's folder,
flushed and ``fsync``-ed, then renamed over the target -- a reader, or a run killed mid-write,
never sees half a file, and the previous version stays until the new one is complete."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a binary file that becomes ``path`` only once it is complete.

    Args:
        path: the target file; its folder is created if missing.
        write: writes the contents to the open binary file it is given (``torch.save(obj, f)``,
            ``np.savez(f, ...)``, ``fig.savefig(f, format="png")``, ...).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        Whatever ``write`` or the file system raises; the temporary file is removed and the
        target is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
