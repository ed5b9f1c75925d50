"""One atomic write for every file pyrovamp writes: a temporary file in the target's folder,
flushed and ``fsync``-ed, then renamed over the target -- a reader, or a run killed mid-write,
never sees half a file, and the previous version stays until the new one is complete."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_text", "remove_stale_temporaries"]

log = logging.getLogger(__name__)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")


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


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (``True`` when that cannot be told)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` left in ``folder`` when its process
    was killed mid-write (``kill -9``, out of memory: ``.NAME.tmpPID``), those of processes no
    longer running; a live writer's file is left alone. Their targets are whole: the rename had
    not happened.

    Returns:
        The removed paths (logged at INFO).
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if match is None or not path.is_file() or _running(int(match["pid"])):
            continue
        try:
            path.unlink()
        except OSError:  # e.g. a read-only folder: the caller's own checks say so
            continue
        removed.append(path)
        log.info("removed %s, left by a process killed while writing %s", path, match["name"])
    return removed
