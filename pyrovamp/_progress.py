"""Progress output that fits where it goes: a tqdm bar on a terminal or in a notebook, and
occasional plain log lines where output goes to a file (a cluster job, CI, ``nohup``), never
thousands of redrawn bars.

``progress`` options across pyrovamp take ``True`` (a bar), ``False`` (nothing) or ``"auto"``
(:func:`resolve_progress`: a bar where someone watches, log lines elsewhere).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from pyrovamp.errors import ArgumentTypeError

__all__ = ["interactive", "resolve_progress", "progress_bar", "LINE_SECONDS"]

LINE_SECONDS = 60.0
"""Where output is not interactive, a progress line at most this often (seconds)."""

_log = logging.getLogger("pyrovamp.progress")


def interactive(stream: Any = None) -> bool:
    """Whether a person watches ``stream`` (default ``sys.stderr``, where tqdm's bars go;
    Lightning's training bar goes to ``sys.stdout``): it is a terminal (``isatty()``), or the
    code runs in a Jupyter kernel (IPython's ``ZMQInteractiveShell`` or a subclass, where tqdm
    draws a widget)."""
    stream = sys.stderr if stream is None else stream
    try:
        if stream is not None and stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        pass
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    if shell is None:
        return False
    # a Jupyter kernel (Colab's and others' shells derive from it), as tqdm.autonotebook asks
    kernel = any(c.__name__ == "ZMQInteractiveShell" for c in type(shell).__mro__)
    return kernel or "IPKernelApp" in getattr(shell, "config", {})


def resolve_progress(
    progress: bool | str, name: str = "progress", stream: Any = None
) -> bool | str:
    """``progress`` as ``True`` (a bar), ``False`` (nothing) or ``"lines"`` (log lines):
    ``"auto"`` is a bar where :func:`interactive` (``stream``: where the bar would go, default
    ``sys.stderr``), else lines.

    Raises:
        ArgumentTypeError: ``progress`` is not a bool or ``"auto"`` (one line naming ``name``).
    """
    if isinstance(progress, bool):
        return progress
    if progress == "auto":
        return True if interactive(stream) else "lines"
    raise ArgumentTypeError(f"{name} must be True, False or 'auto', got {progress!r}")


class _LogLines:
    """A file for tqdm whose redraws become log lines (``\\r`` and blank redraws dropped)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.log.info("%s", line)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def progress_bar(total: int, desc: str, progress: bool | str, initial: int = 0) -> Iterator[Any]:
    """A tqdm progress bar over ``total`` items (``initial`` of them already done), closed on
    exit.

    ``progress``: ``True`` a bar (``tqdm.auto``: a widget in Jupyter, a line on stderr
    elsewhere); ``False`` a silent one; ``"auto"`` a bar where :func:`interactive`, else the
    bar's text as a log line (logger ``pyrovamp.progress``, level INFO) at most every
    :data:`LINE_SECONDS` seconds and once at the end; ``"lines"`` those lines.

    Raises:
        ArgumentTypeError: another ``progress``.
    """
    from tqdm import tqdm as plain_tqdm
    from tqdm.auto import tqdm

    mode = resolve_progress(progress) if progress != "lines" else "lines"
    if mode == "lines":
        bar = plain_tqdm(
            total=total,
            desc=desc,
            initial=initial,
            unit="point",
            file=_LogLines(_log),
            mininterval=LINE_SECONDS,
            maxinterval=LINE_SECONDS,  # tqdm's monitor would refresh every 10 s
            ascii=True,
            ncols=100,
        )
    else:
        bar = tqdm(total=total, desc=desc, initial=initial, unit="point", disable=not mode,
                   dynamic_ncols=True)  # fmt: skip
    try:
        yield bar
    finally:
        bar.close()
