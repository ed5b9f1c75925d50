"""Long test-set estimates that survive an interruption: importance sampling and AIS in one
process, scored in pieces of whole seeded blocks, each piece's per-point values saved in the run
folder as soon as it is done, so that the same command started again (after a killed job, the end
of a session, a ``Ctrl-C`` in a notebook) goes on where the last one stopped.

Every block of test points draws its samples from the seed and the block's global index
(``first_block`` of :func:`pyrovamp.log_likelihood` and :func:`pyrovamp.ais_log_likelihood`), so
a piece scores exactly what one uninterrupted call scores on those points, and the result of an
estimate resumed any number of times is the uninterrupted one, bit for bit (the property that
``pyrovamp evaluate --devices N`` rests on, :mod:`pyrovamp.workflow.parallel`).

The saved values (``.partial_<method>.npz`` in the folder, written atomically) carry a
fingerprint of everything that decides them -- the method and its settings, the block size, the
data's and the parameters' bytes, the device type and pyrovamp's version -- and are used only by
the same estimate of the same model on the same data; the file is removed when the estimate is
complete. An AIS piece is one of its memory-sized blocks (the values are saved after each of
them), an IS piece about :data:`IS_PIECE_POINTS` points.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovamp._io import atomic_write
from pyrovamp._progress import progress_bar
from pyrovamp._version import __version__
from pyrovamp.infer.ais import effective_chains
from pyrovamp.workflow.parallel import Estimate, _block, score_shard

__all__ = ["IS_PIECE_POINTS", "estimate_in_pieces", "partial_path"]

logger = logging.getLogger(__name__)

IS_PIECE_POINTS = 512
"""Importance sampling saves its values after about this many test points (whole blocks)."""


def partial_path(folder, method: str) -> Path:
    """Where the values of an unfinished ``method`` estimate are kept in ``folder``."""
    return Path(folder) / f".partial_{method}.npz"


def _fingerprint(model, x: torch.Tensor, e: Estimate, block: int) -> str:
    """What decides the per-point values: the estimate, the block size, the data's and the
    parameters' bytes (SHA-256), the device type and pyrovamp's version."""
    h = hashlib.sha256()
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    data = h.hexdigest()
    h = hashlib.sha256()
    if isinstance(model, torch.nn.Module):
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return json.dumps({
        "method": e.method, "seed": e.seed, "num_samples": e.num_samples,
        "num_chains": e.num_chains, "num_steps": e.num_steps, "block_size": block,
        "points": int(x.shape[0]), "data_sha256": data, "parameters_sha256": h.hexdigest(),
        "device": x.device.type, "dtype": str(x.dtype), "pyrovamp": __version__,
    }, sort_keys=True)  # fmt: skip


def _load(path: Path | None, fingerprint: str) -> dict[str, np.ndarray]:
    """The saved per-point values of the same estimate, or ``{}``."""
    if path is None or not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as f:
            saved = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # unreadable: start again
        logger.warning("%s is unreadable (%s): the estimate starts from the first point", path,
                       str(err).splitlines()[0] if str(err) else type(err).__name__)  # fmt: skip
        return {}
    if str(saved.pop("fingerprint", "")) != fingerprint:
        logger.info("%s holds another estimate's values: the estimate starts again", path)
        return {}
    return saved


def _save(path: Path, arrays: dict[str, Any]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def estimate_in_pieces(
    model, x: torch.Tensor, e: Estimate, folder=None, progress: bool | str = False
) -> dict[str, Any]:
    """Estimate ``e`` (``"is"`` or ``"ais"``) of ``model`` on the data ``x`` in one process, in
    pieces of whole seeded blocks; with ``folder`` each piece's values are saved there at once and
    an earlier unfinished run of the same estimate is continued (see the module docstring).

    Args:
        model: a model with Pyro ``model(x)`` / ``guide(x)``.
        x: ``(N, ...)`` data on the model's device.
        e: the estimate (:class:`pyrovamp.workflow.parallel.Estimate`).
        folder: where the unfinished values are kept (a run folder); ``None``: nowhere.
        progress: a progress bar over all N points (it starts at the points already done).

    Returns:
        What :func:`pyrovamp.workflow.parallel.sharded_estimates` returns for ``e``, the same
        values: ``(N,)`` numpy arrays ``log_likelihood`` (nats per data point) and the method's
        diagnostics (IS: ``log_likelihood_psis``, ``pareto_k``, ``ess``; AIS:
        ``acceptance_rate``, ``independence_acceptance``, ``step_size``, ``ess``), and
        ``block_size``.

    Raises:
        ValueError: a method other than ``"is"`` and ``"ais"``; what the estimator raises.
    """
    if e.method not in ("is", "ais"):
        raise ValueError(f"method must be 'is' or 'ais' to be scored in pieces, got {e.method!r}")
    n = int(x.shape[0])
    block = _block(model, x, e)
    piece = block if e.method == "ais" else block * max(1, IS_PIECE_POINTS // block)
    path = None if folder is None else partial_path(folder, e.method)
    fingerprint = _fingerprint(model, x, e, block) if path is not None else ""
    got = _load(path, fingerprint)
    start = int(got["log_likelihood"].shape[0]) if got else 0
    if start % block or start >= n:  # not a run of whole blocks of these points: not ours
        got, start = {}, 0
    if start:
        logger.info("%s: continuing from point %d of %d (values saved by an earlier run)",
                    e.method.upper(), start, n)  # fmt: skip
    desc = (f"IS log-likelihood (S={e.num_samples})" if e.method == "is"
            else f"AIS log-likelihood ({e.num_chains} chains)")  # fmt: skip
    with progress_bar(n, desc, progress, initial=start) as bar:
        for a in range(start, n, piece):
            part = score_shard(model, e, False, x[a : a + piece], a // block, block)
            new = {k: v.detach().cpu().numpy() for k, v in part.items()}
            got = {k: np.concatenate([got[k], v]) if k in got else v for k, v in new.items()}
            if path is not None and a + piece < n:
                _save(path, {**got, "fingerprint": np.array(fingerprint)})
            bar.update(min(piece, n - a))
    if e.method == "ais":
        got["ess"] = effective_chains(torch.from_numpy(got.pop("log_weights")).T).numpy()
    if path is not None:
        path.unlink(missing_ok=True)
    return {**got, "block_size": block}
