"""The files a training run writes and how they are read back: the full training state
(:data:`CHECKPOINT`), the best validated parameters (:data:`BEST`) and the result's parameters
(:data:`MODEL`), each written atomically and read with ``torch.load(weights_only=True)``.

Every file is a dict with a ``"pyrovamp"`` entry: ``format`` (:data:`FORMAT`), ``config`` (the
run's :class:`~pyrovamp.training.config.TrainConfig` as a dict), ``history``,
``model_class`` and ``scored_state`` (the parameters the run scores: averaged or last). The
checkpoints are Lightning's (``state_dict``: the live model; ``optimizer_states``,
``callbacks``, ...) with the random states added (:func:`rng_state`), so that a resumed run
draws what the uninterrupted run would have. Importing it does not load Lightning.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import cast

import numpy as np
import torch

from pyrovamp._io import atomic_write
from pyrovamp._validate import check_finite_weights
from pyrovamp.errors import CheckpointError

__all__ = [
    "CHECKPOINT",
    "BEST",
    "MODEL",
    "FORMAT",
    "EMA_STATE_KEY",
    "atomic_save",
    "read_checkpoint",
    "load_model_weights",
    "rng_state",
    "set_rng_state",
]

CHECKPOINT = "checkpoint.ckpt"  # the last epoch's full training state (resume from it)
BEST = "best.ckpt"  # the parameters with the best validation score so far
MODEL = "model.pt"  # the trained model's parameters (best, averaged or last)
FORMAT = 2  # the layout of the "pyrovamp" entry
EMA_STATE_KEY = "ParameterEMA"  # the parameter average's entry in a checkpoint's "callbacks"


def atomic_save(obj, path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`pyrovamp._io.atomic_write`): a reader,
    or a run killed mid-write, never sees a half-written file."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def read_checkpoint(path, map_location=None) -> dict:
    """Load a pyrovamp checkpoint or model file with ``torch.load(weights_only=True)``.

    A checkpoint written with a parameter average by pyrovamp 0.1 (Lightning's
    ``WeightAveraging`` layout: the average under ``state_dict``, the live model under
    ``current_model_state``) is returned in the current layout (the live model under
    ``state_dict``, the average in the ``callbacks`` entry :data:`EMA_STATE_KEY`).

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, unsafe to unpickle or not a
            pyrovamp file, or its parameters hold NaN or infinite values -- one line naming the
            file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 -- every failure to read becomes one line
        unsafe = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(\n\n|$)", str(e), re.S)
        if "Weights only load failed" in str(e):  # not torch's advice to load it unsafely
            what = " ".join(unsafe.group(1).split()) if unsafe else "see torch.load"
            what = re.split(r"(?<=\.)\s", what)[0][:200]  # its first sentence
            raise CheckpointError(
                f"{path} is unsafe to load: it holds Python objects besides tensors and plain "
                f"data ({what}); pyrovamp reads only with torch.load(weights_only=True)"
            ) from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} cannot be read as a pyrovamp checkpoint (truncated, "
            f"corrupt or unsafe): {type(e).__name__}: {first[:200]}"
        ) from None
    if not isinstance(obj, dict) or "pyrovamp" not in obj:
        raise CheckpointError(f"{path} is not a pyrovamp checkpoint (no 'pyrovamp' entry)")
    fmt = obj["pyrovamp"].get("format") if isinstance(obj["pyrovamp"], dict) else None
    if fmt != FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {fmt!r}; this pyrovamp reads format {FORMAT}"
        )
    if "current_model_state" in obj and "averaging_state" in obj:
        _from_weight_averaging(obj)
    ema = (obj.get("callbacks") or {}).get(EMA_STATE_KEY) or {}
    for entry in (
        obj.get("state_dict"),
        obj["pyrovamp"].get("scored_state"),
        ema.get("parameters"),
    ):
        if isinstance(entry, dict):
            check_finite_weights(path, entry)
    return obj


def model_state(lightning_state: dict | None) -> dict:
    """The model's own parameters (name -> tensor) in a LightningModule's ``state_dict``: the
    entries under its ``model.`` prefix, the prefix removed (none for ``None``)."""
    prefix = "model."
    return {k[len(prefix) :]: v for k, v in (lightning_state or {}).items() if k.startswith(prefix)}


def epochs_done(checkpoint: dict) -> int:
    """The epochs a read checkpoint has completed (Lightning stores the last one's 0-based
    index)."""
    return int(checkpoint.get("epoch", -1)) + 1


def check_epochs(checkpoint: dict, epochs: int, path) -> None:
    """Refuse to resume the checkpoint ``checkpoint`` (read from ``path``) for ``epochs`` epochs
    in all when it has trained more (Lightning failed with a traceback, or at one fewer ran
    one epoch more than asked).

    Raises:
        CheckpointError: one line naming ``path``, ``epochs`` and the epochs done.
    """
    done = epochs_done(checkpoint)
    if epochs < done:
        raise CheckpointError(
            f"cannot resume {path} for {epochs} epochs in all: it has trained {done}; ask for "
            f"at least {done} (--epochs)"
        )


def _from_weight_averaging(obj: dict) -> None:
    """Move a ``WeightAveraging`` checkpoint's average into the ``callbacks`` entry of
    :class:`~pyrovamp.training.callbacks.ParameterEMA`, in place (``model.`` is the
    LightningModule's prefix of the model's names)."""
    average = obj.pop("state_dict")
    obj["state_dict"] = obj.pop("current_model_state")
    callbacks = obj.setdefault("callbacks", {})
    state = callbacks.get(EMA_STATE_KEY, {})
    state["parameters"] = model_state(average)
    state["n_averaged"] = obj.pop("averaging_state")["n_averaged"]
    callbacks[EMA_STATE_KEY] = state


def load_model_weights(model: torch.nn.Module, path) -> dict:
    """Load a ``model.pt`` (or ``best.ckpt`` / ``checkpoint.ckpt``) written by
    :func:`pyrovamp.training.fit` into ``model``; returns the file's ``pyrovamp`` metadata.

    Raises:
        CheckpointError: unreadable file, or one written for another model (class or shapes).
    """
    obj = read_checkpoint(path, map_location="cpu")
    meta = obj["pyrovamp"]
    state = meta.get("scored_state")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no model parameters ('scored_state')")
    if meta.get("model_class") not in (None, type(model).__name__):
        raise CheckpointError(
            f"{path} holds a {meta.get('model_class')}, not a {type(model).__name__}"
        )
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{path} does not fit this model: "
            f"{state_mismatch(model, state) or str(e).strip().splitlines()[0][:200]}"
        ) from None
    return meta


def state_mismatch(model: torch.nn.Module, state: dict) -> str:
    """One line naming how ``state`` differs from ``model.state_dict()``: missing and unexpected
    keys and shape mismatches (the first three of each); empty if no key or shape differs."""
    own = model.state_dict()
    parts = []
    for what, keys in (
        ("missing", [k for k in own if k not in state]),
        ("unexpected", [k for k in state if k not in own]),
        (
            "shape differs for",
            [
                k
                for k in own
                if k in state
                and hasattr(state[k], "shape")
                and tuple(state[k].shape) != tuple(own[k].shape)
            ],
        ),
    ):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            parts.append(f"{what} {', '.join(keys[:3])}{more}")
    return "; ".join(parts)


def rng_state() -> dict:
    """All random states (torch CPU and CUDA, NumPy, Python) as tensors and plain numbers
    (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = cast(tuple, np.random.get_state(legacy=True))
    ver, internal, gnext = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": ver, "state": list(internal), "gauss_next": gnext},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the random states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
