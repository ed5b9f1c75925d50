"""Test-set estimators shared out over several processes (``pyrovamp evaluate --devices N``):
importance sampling, the test ELBO and AIS of one model on N CPU processes or N GPUs, gathered
into the values one process computes.

Every block of test points draws its samples from the seed and the block's global index
(``first_block`` of :func:`pyrovamp.log_likelihood`, :func:`pyrovamp.elbo` and
:func:`pyrovamp.ais_log_likelihood`), and the block size depends only on the model and the
estimator's settings (:mod:`pyrovamp.infer.planning`), so process ``r`` scores a contiguous run of
blocks (:func:`pyrovamp.training.sharded_over_processes`) and the gathered values are those of one
process, bit for bit on the same kind of device (measured on a 2-core AVX-512 CPU: one process with
two threads and two processes with one thread each give the same bits for IS and the ELBO). AIS is
bit for bit between processes of the same number of threads; against one process of another
thread count its values differ within its Monte Carlo noise, as its HMC gradients go through the
BLAS's backward products, whose last bit can depend on the threads, and a chain that takes another
accept decision takes another path (20 static-MNIST images, 8 chains x 3 steps, one thread against
two: up to 0.0009 nats; 2078 images, 8 x 100, one process of two threads against two of one: up
to 0.25 nats on one image).

The library starts the processes itself: ``python -c`` workers that import pyrovamp, never the
caller's script or notebook (no ``if __name__ == "__main__"`` guard needed), each running
Lightning Fabric with the ``ddp`` strategy as an externally launched process (gloo on CPUs, NCCL on
GPUs, Lightning's choice). A worker loads the model itself with the :class:`Processes`'
``load_model`` (a picklable function of the device, e.g. ``functools.partial`` of a module-level
function), reads the data from a private temporary folder and process 0 writes the gathered
values there; the caller's process changes no global state (seeds, threads, environment). On a
CPU each process gets ``cores // N`` threads, set in its own environment, unless
``OMP_NUM_THREADS`` is set (then that many each).
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyrovamp._io import atomic_write
from pyrovamp._validate import check_choice, check_int, check_optional_int
from pyrovamp.infer import ais_log_likelihood, elbo, log_likelihood, points_per_block
from pyrovamp.infer.ais import _points_per_chunk, effective_chains
from pyrovamp.infer.context import as_model_data, evaluation_context
from pyrovamp.infer.planning import DEFAULT_MEMORY_BUDGET
from pyrovamp.training.sharding import sharded_over_processes

__all__ = [
    "ACCELERATORS",
    "Processes",
    "Estimate",
    "check_device",
    "resolve_hardware",
    "sharded_estimates",
    "score_shard",
]

logger = logging.getLogger(__name__)

ACCELERATORS = ("cpu", "gpu")
"""The hardware of ``--accelerator``: CPU processes or one GPU (CUDA) per process."""
_ESTIMATES = ("is", "elbo", "ais")
# per-point diagnostics of AIS gathered besides the estimate and its log-weights
_AIS_KEYS = ("acceptance_rate", "independence_acceptance", "step_size")
# what a worker's environment must not inherit from a launcher that started the caller
_LAUNCHER_VARIABLES = ("RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "ROLE_RANK", "TORCHELASTIC_RUN_ID")
_POLL_SECONDS = 0.05
# a worker: python -c _WORKER JOB_FILE (imports pyrovamp, not the caller's __main__)
_WORKER = (
    "import sys; from pyrovamp.workflow.parallel import _worker_main; "
    "sys.exit(_worker_main(sys.argv[1]))"
)


@dataclass(frozen=True)
class Processes:
    """Where a sharded evaluation runs.

    Attributes:
        devices: processes (``>= 1``; one per GPU with ``accelerator="gpu"``).
        accelerator: ``"cpu"`` or ``"gpu"``.
        load_model: ``load_model(device: str) -> model``, called in every worker (a module-level
            function or a ``functools.partial`` of one: it is pickled), returning the very model
            the caller evaluates, on ``device``.
    """

    devices: int
    accelerator: str
    load_model: Callable[[str], Any]


@dataclass(frozen=True)
class Estimate:
    """One sharded estimator: ``method`` ``"is"`` (:func:`pyrovamp.log_likelihood` with
    ``num_samples`` and its PSIS diagnostics), ``"elbo"`` (:func:`pyrovamp.elbo` with
    ``num_samples``) or ``"ais"`` (:func:`pyrovamp.ais_log_likelihood` with ``num_chains`` and
    ``num_steps``), seeded by ``seed``; ``batch_size``: the block of data points (default: the
    estimator's own, as in one process)."""

    method: str
    seed: int
    num_samples: int = 1
    num_chains: int = 1
    num_steps: int = 1
    batch_size: int | None = None


def check_device(device: str) -> str:
    """``device`` if it is ``"cpu"``, or ``"cuda"`` / ``"cuda:i"`` (one GPU) on a machine with
    CUDA (and more than ``i`` CUDA devices).

    Raises:
        ValueError: one line naming ``--device``: another name (``"tpu"``, ``"cuda:x"``), CUDA
            asked for where ``torch.cuda.is_available()`` is False, a GPU index the machine does
            not have.
    """
    kind, colon, index = str(device).partition(":")
    if not (device == "cpu" or (kind == "cuda" and (not colon or re.fullmatch("[0-9]+", index)))):
        raise ValueError(f"--device must be cpu, cuda or cuda:i, got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was asked for but torch.cuda.is_available() is False")
    if colon and int(index) >= (count := torch.cuda.device_count()):
        raise ValueError(
            f"--device {device}: this machine has {count} CUDA device{'s' if count != 1 else ''}"
        )
    return device


def resolve_hardware(
    devices: int, accelerator: str | None, device: str | None
) -> tuple[int, str, str]:
    """Check ``--devices``, ``--accelerator`` and ``--device`` together, before any work.

    ``accelerator`` (``"cpu"``, ``"gpu"``; default: ``device``'s) is the hardware of the
    ``devices`` processes, ``device`` (``"cpu"``, ``"cuda"``, or ``"cuda:i"`` for one process on
    GPU ``i``; default: ``accelerator``'s) that of the calling process, which loads the model and
    does what is not sharded; they name one kind.

    Returns:
        ``(devices, accelerator, device)``.

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``devices`` is not an integer.
        ValueError: one line naming the option: ``devices < 1``, an unknown accelerator or
            device, an ``accelerator`` and a ``device`` of different kinds, ``gpu`` without CUDA,
            more GPU processes than CUDA devices, ``cuda:i`` for a GPU the machine does not have
            or with ``devices > 1`` (:func:`check_device`).
    """
    devices = check_int("--devices", devices)
    if accelerator is not None:
        check_choice("--accelerator", accelerator, ACCELERATORS)
    kind = None
    if device is not None:
        kind, colon, _ = check_device(device).partition(":")
        if colon and devices > 1:
            raise ValueError(
                f"--device {device} names one GPU; --devices {devices} runs one process on each "
                "of GPUs 0 to N-1: give --device cuda"
            )
    if accelerator is not None and kind is not None and (accelerator == "gpu") != (kind == "cuda"):
        raise ValueError(
            f"--accelerator {accelerator} and --device {device} name different hardware "
            "(gpu goes with cuda): give one of them"
        )
    asked = "--accelerator gpu" if accelerator is not None else "--device cuda"
    accelerator = accelerator or ("gpu" if kind == "cuda" else "cpu")
    device = device or ("cuda" if accelerator == "gpu" else "cpu")
    if accelerator == "gpu":
        if not torch.cuda.is_available():
            raise ValueError(f"{asked} was asked for but torch.cuda.is_available() is False")
        count = torch.cuda.device_count()
        if devices > count:
            raise ValueError(
                f"--devices {devices} with --accelerator gpu: this machine has {count} CUDA "
                f"device{'s' if count != 1 else ''} (one process per GPU)"
            )
    return devices, accelerator, device


def sharded_estimates(
    processes: Processes, x, estimates: list[Estimate], progress: bool | str = False
) -> list[dict[str, Any]]:
    """Run ``estimates`` on the data ``x`` over ``processes.devices`` processes (started here,
    waited for, and ended) and gather their per-point values.

    Args:
        processes: how many processes, on what, and how each loads the model.
        x: ``(N, ...)`` data (a tensor on any device or a numpy array); the workers get a copy.
        estimates: the estimators, run one after the other in the same processes.
        progress: process 0's progress bar over its share of the data points.

    Returns:
        One dict per estimate of ``(N,)`` numpy arrays: ``"log_likelihood"`` (nats per data
        point) and for IS ``log_likelihood_psis``, ``pareto_k``, ``ess``; for AIS
        ``acceptance_rate``, ``independence_acceptance``, ``step_size``, ``ess``; ``"elbo"``
        for the ELBO; and ``block_size`` (``int``, the points per seeded block used).

    Raises:
        ValueError: bad arguments (before any process starts).
        Exception: the first worker's error, re-raised here (a note names the process); the
            other workers are then stopped.
    """
    check_int("devices", processes.devices)
    check_choice("accelerator", processes.accelerator, ACCELERATORS)
    for e in estimates:
        check_choice("method", e.method, _ESTIMATES)
        check_int("seed", e.seed, 0)
        for name in ("num_samples", "num_chains", "num_steps"):
            check_int(name, getattr(e, name))
        check_optional_int("batch_size", e.batch_size)
    data = torch.as_tensor(x).detach().cpu().numpy()
    n = processes.devices
    # deferred: Lightning loads only when processes are started
    from lightning.fabric.plugins.environments.lightning import find_free_network_port

    with tempfile.TemporaryDirectory(prefix="pyrovamp-shards-") as tmp:
        folder = Path(tmp)
        job = {
            "load_model": processes.load_model,
            "accelerator": processes.accelerator,
            "devices": n,
            "x": data,
            "estimates": list(estimates),
            "progress": progress,
            "folder": str(folder),
        }
        atomic_write(folder / "job.pkl", lambda f: pickle.dump(job, f))
        env = _worker_environment(n, find_free_network_port())
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, str(folder / "job.pkl")],
                env={**env, "LOCAL_RANK": str(r)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None if r == 0 else subprocess.DEVNULL,  # process 0's progress bar
            )
            for r in range(n)
        ]
        try:
            failed = _wait(procs)
        finally:
            for p in procs:  # the ones still running after a failure or an interruption
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if failed is not None:
            _raise_worker_error(folder, n, procs[failed].returncode, failed)
        with open(folder / "result.pkl", "rb") as f:
            result = pickle.load(f)
    logger.debug("%d processes scored %d points in %.1f s", n, data.shape[0],
                 time.perf_counter() - t0)  # fmt: skip
    return result


def _worker_environment(devices: int, port: int) -> dict[str, str]:
    """The workers' environment: the caller's, with Lightning's launch variables of a single
    machine, pyrovamp importable, and ``cores // devices`` threads unless ``OMP_NUM_THREADS``
    is set."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    package_root = str(Path(__file__).resolve().parents[2])
    path = env.get("PYTHONPATH")
    env.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        NODE_RANK="0",
        WORLD_SIZE=str(devices),
        PYTHONPATH=package_root + (os.pathsep + path if path else ""),
    )
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, _cores() // devices))
    return env


def _cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _wait(procs: list[subprocess.Popen]) -> int | None:
    """Wait until every process has ended or one has failed; the index of the first that
    failed, else ``None``."""
    while True:
        codes = [p.poll() for p in procs]
        for r, c in enumerate(codes):
            if c is not None and c != 0:
                return r
        if all(c == 0 for c in codes):
            return None
        time.sleep(_POLL_SECONDS)


def _raise_worker_error(folder: Path, n: int, code: int | None, rank: int) -> None:
    """Raise the error of the worker that failed first (the others' may follow from it: a
    process group whose peer ended)."""
    errors = []
    for r in range(n):
        if (folder / f"error{r}.pkl").is_file():
            with open(folder / f"error{r}.pkl", "rb") as f:
                errors.append((*pickle.load(f), r))
    if not errors:
        raise RuntimeError(f"evaluation process {rank} of {n} ended with exit status {code}")
    _, pickled, text, rank = min(errors, key=lambda e: e[0])
    where = f"in evaluation process {rank} of {n}"
    logger.debug("%s:\n%s", where, text)
    try:
        error = pickle.loads(pickled) if pickled is not None else None
    except Exception:  # an exception class that does not unpickle: its text
        error = None
    if isinstance(error, BaseException):
        error.add_note(where)
        raise error
    raise RuntimeError(f"{where}: {text.strip().splitlines()[-1]}")


def _worker_main(job_file: str) -> int:
    """A worker's entry point (``python -c``; ``LOCAL_RANK`` etc. in its environment): score its
    share of the job in ``job_file``; process 0 writes the gathered values beside it. Returns
    the exit status (1: the error is written beside the job for the caller to raise)."""
    rank = int(os.environ.get("LOCAL_RANK", 0))
    folder = Path(job_file).parent
    try:
        with open(job_file, "rb") as f:
            job = pickle.load(f)
        result = _work(job, rank)
        if rank == 0:
            atomic_write(folder / "result.pkl", lambda f: pickle.dump(result, f))
        return 0
    except BaseException as e:  # the caller raises it
        try:
            error = pickle.dumps(e)
        except Exception:  # an exception that does not pickle: its text
            error = None
        payload = (time.time(), error, traceback.format_exc())
        (folder / f"error{rank}.pkl").write_bytes(pickle.dumps(payload))
        return 1


def _work(job: dict, rank: int) -> list[dict[str, Any]] | None:
    """Scores a worker's share of every estimate; process 0 returns the gathered values."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    # deferred: a worker process alone needs Lightning
    from lightning.fabric import Fabric
    from lightning.fabric.plugins.environments import LightningEnvironment

    from pyrovamp.training import quiet_lightning  # deferred: it loads Lightning

    with quiet_lightning():  # no banner of the process group
        fabric = Fabric(
            accelerator="cuda" if job["accelerator"] == "gpu" else "cpu",
            devices=job["devices"],
            strategy="ddp",
            plugins=[LightningEnvironment()],  # launched here, whatever cluster the caller is in
        )
        fabric.launch()
    try:
        model = job["load_model"](str(fabric.device))
        x = torch.from_numpy(job["x"])
        out = []
        for e in job["estimates"]:
            block = fabric.broadcast(_block(model, x, e), src=0)
            show = job["progress"] if fabric.global_rank == 0 else False
            got = sharded_over_processes(functools.partial(score_shard, model, e, show), x, block,
                                         fabric)  # fmt: skip
            if e.method == "ais":
                got["ess"] = effective_chains(got.pop("log_weights").T.contiguous()).cpu()
            out.append({**{k: v.numpy() for k, v in got.items()}, "block_size": block})
        fabric.barrier()
        return out if fabric.global_rank == 0 else None
    finally:
        if torch.distributed.is_initialized():  # gloo's and NCCL's threads end with it
            torch.distributed.destroy_process_group()


def _block(model, x: torch.Tensor, e: Estimate) -> int:
    """The points per seeded block of estimate ``e`` -- what one process uses."""
    if e.batch_size is not None:
        return e.batch_size
    if e.method == "ais":  # AIS's chunk, as ais_log_likelihood sizes it
        with evaluation_context(model):
            return _points_per_chunk(
                model, as_model_data(model, x), e.num_chains, DEFAULT_MEMORY_BUDGET, None
            )
    return points_per_block(model, e.num_samples)


def score_shard(
    model, e: Estimate, progress: bool | str, part: torch.Tensor, first_block: int, block: int
) -> dict[str, torch.Tensor]:
    """Estimate ``e`` of ``model`` on a shard ``part`` of the data that starts at the global block
    ``first_block`` (blocks of ``block`` points): per-point ``(n,)`` tensors, ``log_likelihood``
    (with IS's diagnostics, or AIS's and its ``(n, C)`` log-weights) or ``elbo``. What
    :func:`pyrovamp.training.sharded_over_processes` calls in every process."""
    seed, first = e.seed, first_block
    if e.method == "elbo":
        return {"elbo": elbo(model, part, e.num_samples, seed=seed, batch_size=block,
                             first_block=first)}  # fmt: skip
    if e.method == "is":
        ll, d = log_likelihood(model, part, e.num_samples, seed=seed, batch_size=block,
                               first_block=first, diagnostics=True, progress=progress)  # fmt: skip
        return {"log_likelihood": ll, **{k: torch.as_tensor(v) for k, v in d.items()}}
    ll, d = ais_log_likelihood(model, part, e.num_chains, e.num_steps, seed=seed, batch_size=block,
                               first_block=first, diagnostics=True, progress=progress)  # fmt: skip
    return {
        "log_likelihood": ll,
        "log_weights": torch.as_tensor(d["log_weights"]).T,  # (n, C): gathered by data point
        **{k: torch.as_tensor(d[k]) for k in _AIS_KEYS},
    }
