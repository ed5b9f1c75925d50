"""Trained models as folders: save, load, share on the Hugging Face Hub, and the zoo that ships
with pyrovamp.

A pretrained folder holds

* ``model.safetensors`` -- the parameters and buffers (the ``safetensors`` format: no pickle, so
  loading a foreign file cannot run code),
* ``config.json`` -- everything needed to rebuild the model before its weights are loaded: the
  class and constructor arguments of the model and of its prior
  (``pyrovamp._rebuild.module_config``), the compute dtype, the data set it was trained on,
* ``README.md`` -- the model card (Hugging Face's format: YAML metadata, then text): the data, the
  recipe and its exact command, the pyrovamp version, hardware, training time, and the test
  numbers -- ELBO, IS with S=5000, AIS, active units -- in nats per data point,
* and, for the zoo, ``log_likelihood_is.npz``: the IS estimate of every test image with the seed
  and block size that give it (:func:`pyrovamp.log_likelihood` draws each block of points from the
  seed and the block's index, so any block can be recomputed on its own).

:func:`save_pretrained` / :func:`from_pretrained` write and read such folders locally; a name of
:data:`PRETRAINED` (the zoo, installed with the package) or a Hub repository id (``owner/name``,
through ``huggingface_hub``, which honours ``HF_HUB_OFFLINE=1`` and its cache) works as well.
Every model has ``model.save_pretrained(folder)`` and ``model.push_to_hub(repo_id)``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from pyrovamp._card import card_text, plain_card
from pyrovamp._io import atomic_write_text
from pyrovamp._random import fork_rng
from pyrovamp._rebuild import build_from_config, module_config
from pyrovamp._validate import check_finite_weights, check_int, check_type
from pyrovamp._version import __version__
from pyrovamp.data.datasets import dataset_source
from pyrovamp.errors import CheckpointError

__all__ = [
    "PRETRAINED",
    "PretrainedMixin",
    "save_pretrained",
    "from_pretrained",
    "push_to_hub",
    "load_card",
    "pretrained_folder",
    "is_repo_id",
    "WEIGHTS",
    "CONFIG",
    "CARD",
    "PER_POINT",
]

logger = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
"""The weights' file name in a pretrained folder (safetensors)."""
CONFIG = "config.json"
"""The configuration's file name in a pretrained folder (what rebuilds the model)."""
CARD = "README.md"
"""The model card's file name in a pretrained folder."""
PER_POINT = "log_likelihood_is.npz"
"""The per-image IS values' file name in a zoo folder."""
FORMAT = "pyrovamp-pretrained"
FORMAT_VERSION = 1
ZOO = Path(__file__).resolve().parent / "zoo"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16}  # fmt: skip


class _Zoo(Mapping):
    """The zoo's folders by name, read from the package's ``zoo/`` folder on every access (so a
    model exported into it is there at once); read-only."""

    def _folders(self) -> dict[str, Path]:
        if not ZOO.is_dir():
            return {}
        return {p.name: p for p in sorted(ZOO.iterdir()) if (p / CONFIG).is_file()}

    def __getitem__(self, name: str) -> Path:
        return self._folders()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._folders())

    def __len__(self) -> int:
        return len(self._folders())

    def __repr__(self) -> str:
        return f"PRETRAINED({', '.join(self._folders())})"


PRETRAINED: Mapping[str, Path] = _Zoo()
"""The zoo: name -> its folder in the installed package (``digits-vae-vampprior``,
``static-mnist-hvae-vampprior``, ...); ``pyrovamp pretrained`` lists them with their cards'
numbers. Load one with ``pv.from_pretrained(name)``."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _model_dtype(model) -> torch.dtype:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _check_dtype(name: str, dtype):
    """``dtype`` as a floating ``torch.dtype`` (a name such as ``"bfloat16"`` too), or None."""
    if dtype is None or dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"{name} must be one of {', '.join(_DTYPES)} or None, got {dtype!r}")


def _check_rebuilds(model, config: dict) -> None:
    """Rebuild ``model`` from its configuration (on the side: the caller's random streams are
    left alone) and check that it has the same class and the same tensors, names and shapes;
    else the folder could not be loaded. One line naming what differs."""
    with fork_rng():
        try:
            rebuilt = build_from_config(config)
        except (TypeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"{type(model).__name__} cannot be rebuilt from its recorded arguments ({first})"
            ) from None
    if type(rebuilt) is not type(model):
        raise ValueError(f"{type(model).__name__} rebuilds as a {type(rebuilt).__name__}")
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    new = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if own != new:
        diff = sorted(set(own.items()) ^ set(new.items()))[:3]
        raise ValueError(
            f"{type(model).__name__} rebuilt from its recorded arguments has other tensors "
            f"(e.g. {', '.join(f'{k} {s}' for k, s in diff)}): a module assigned after "
            "construction that pyrovamp cannot record"
        )


def holds_pretrained_config(folder) -> bool:
    """Whether ``folder/config.json`` is a readable configuration of the pretrained format (of
    any version): False for a missing or unreadable file, or another tool's (a run folder's)."""
    try:
        config = json.loads((Path(folder) / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT


def _check_target(folder: Path) -> None:
    """Refuse a ``folder`` :func:`save_pretrained` would damage: a file, a run folder of
    ``pyrovamp train`` (whose ``config.json`` it would replace), a folder whose ``config.json`` is
    something else's. One line naming the folder."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder {folder} exists and is not a folder")
    for f in ("model.pt", "checkpoint.ckpt"):
        if (folder / f).is_file():
            raise ValueError(
                f"folder {folder} is a run folder ({f}): its config.json and README.md would be "
                "replaced; save the pretrained model into another folder"
            )
    # a pretrained configuration of any version is replaced; an unreadable one is not
    if (folder / CONFIG).is_file() and not holds_pretrained_config(folder):
        raise ValueError(
            f"folder {folder} holds a {CONFIG} that is not a pyrovamp pretrained "
            "configuration: save the pretrained model into another folder"
        )


def save_pretrained(
    model, folder, *, dataset: str | None = None, card: dict | None = None, weights_dtype=None
) -> Path:
    """Write ``model`` to the pretrained folder ``folder`` (created if missing).

    Args:
        model: a pyrovamp model (or a prior without an encoder; a class of your own derived from
            pyrovamp's, if it is defined in an importable module).
        folder: where ``model.safetensors``, ``config.json`` and ``README.md`` go.
        dataset: the data set's name (recorded, so that ``pyrovamp evaluate FOLDER`` can score
            it): a name of :data:`pyrovamp.data.DATASETS` or a torchvision set, or the path of
            your own data (recorded as given: a folder pushed to the Hub names no path of yours).
        card: fields of the model card (numbers in nats per data point; JSON values), kept in
            the card's metadata under ``pyrovamp`` and shown in its text.
        weights_dtype: store the weights in this floating dtype (e.g. ``torch.bfloat16`` to halve
            the file); the model is rebuilt in its own dtype. Default: the model's.

    Returns:
        ``folder``.

    Raises:
        ValueError: the model (or an argument it was built with) cannot be rebuilt from JSON,
            or rebuilds as another model (a submodule assigned after construction), a bad
            ``weights_dtype``, card field or ``dataset`` (an unknown name), a ``folder`` that is a
            run folder or holds another ``config.json`` -- one line naming the class, argument,
            field or folder; before anything is written.
        FileNotFoundError: a ``dataset`` path with nothing there.
        pyrovamp.errors.ArgumentTypeError: a bad argument type.
    """
    check_type("folder", folder, (str, os.PathLike), "a folder (str or path)")
    if card is not None:
        check_type("card", card, dict, "a dict of card fields or None")
    if dataset is not None:
        check_type("dataset", dataset, str, "a data set name or None")
        dataset_source(dataset)  # a typo is refused now, not at its first evaluation
    _check_target(Path(folder))
    weights_dtype = _check_dtype("weights_dtype", weights_dtype)
    model_config = module_config(model)
    _check_rebuilds(model, model_config)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pyrovamp_version": __version__,
        "dtype": _dtype_name(_model_dtype(model)),
        "weights_dtype": _dtype_name(weights_dtype or _model_dtype(model)),
        "dataset": dataset,
        "model": model_config,
    }
    text = json.dumps(config, indent=2)
    card_md = card_text(config, plain_card(card or {}))
    folder = Path(folder)
    # all three files are written into a temporary folder beside the target, then moved in
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_weights(model, tmp / WEIGHTS, weights_dtype)
        atomic_write_text(tmp / CONFIG, text + "\n")
        atomic_write_text(tmp / CARD, card_md)
        if not folder.exists():
            os.replace(tmp, folder)
        else:
            (folder / PER_POINT).unlink(missing_ok=True)  # the values of the previous weights
            for f in (WEIGHTS, CONFIG, CARD):
                os.replace(tmp / f, folder / f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("saved %s to %s", type(model).__name__, folder)
    return folder


def _write_weights(model, path: Path, weights_dtype) -> None:
    """``model``'s state as a safetensors file at ``path``, atomically (a temporary file renamed
    over it); tensors on another device than the CPU, or to be stored in ``weights_dtype``, go
    through a CPU copy of the model (the model itself is left as it is)."""
    import copy

    from safetensors.torch import save_model

    on_cpu = all(t.device.type == "cpu" for t in model.state_dict().values())
    if weights_dtype is not None or not on_cpu:
        model = copy.deepcopy(model).to(device="cpu", dtype=weights_dtype)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_model(model, str(tmp), metadata={"format": "pt"})  # one key: the same bytes each time
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_repo_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hugging Face Hub repository id, ``owner/name``."""
    return bool(_REPO_ID.match(name))


def pretrained_folder(
    name_or_path,
    *,
    revision: str | None = None,
    cache_dir=None,
    local_files_only: bool = False,
    token=None,
) -> Path:
    """The local folder of ``name_or_path``: a zoo name (:data:`PRETRAINED`), a folder, or a
    Hugging Face Hub repository id (``owner/name``, downloaded into the Hub's cache, or read
    from it when ``HF_HUB_OFFLINE=1`` or ``local_files_only``).

    Raises:
        FileNotFoundError: a folder without ``config.json``/``model.safetensors``; a repository
            neither in the cache nor reachable (one line naming it).
        ValueError: neither a zoo name, a folder, nor a repository id (the line lists the zoo).
    """
    check_type("name_or_path", name_or_path, (str, os.PathLike), "a zoo name, folder or repo id")
    key = str(name_or_path)
    if key in PRETRAINED:
        folder = PRETRAINED[key]
    elif Path(key).exists():
        folder = Path(key)
    elif isinstance(name_or_path, str) and is_repo_id(key) and not Path(key).parent.is_dir():
        folder = _download(key, revision, cache_dir, local_files_only, token)
    elif Path(key).parent.is_dir() and len(Path(key).parts) > 1:
        raise FileNotFoundError(f"no folder {key}")
    else:
        zoo = ", ".join(PRETRAINED) or "none"
        raise ValueError(
            f"{key!r} is neither a pretrained model of the zoo ({zoo}), a folder, nor a "
            "Hugging Face Hub repository id (owner/name)"
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    if not (folder / WEIGHTS).is_file() and (folder / "model.pt").is_file():
        raise FileNotFoundError(
            f"{folder} is a run folder (model.pt), not a pretrained folder: load it with "
            "pyrovamp.load_run(folder), or export it with pyrovamp.save_pretrained"
        )
    for f in (CONFIG, WEIGHTS):
        if not (folder / f).is_file():
            raise FileNotFoundError(f"{folder} is not a pretrained folder: {folder / f} is missing")
    return folder


def _download(repo_id, revision, cache_dir, local_files_only, token) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            allow_patterns=[CONFIG, WEIGHTS, CARD, "*.npz"],
            library_name="pyrovamp",
            library_version=__version__,
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(
            f"{repo_id}: no such folder, and as a Hugging Face Hub repository id not in the "
            f"local cache and not downloadable ({first})"
        ) from None
    return Path(path)


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyrovamp pretrained configuration")
    try:
        version = check_int("format_version", config.get("format_version", 0), 0)
    except ValueError as e:  # ArgumentTypeError included
        raise CheckpointError(f"{path}: {e}") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is of format version {config['format_version']}; this pyrovamp "
            f"({__version__}) reads up to {FORMAT_VERSION}: upgrade pyrovamp"
        )
    if config.get("dtype") not in _DTYPES:
        raise CheckpointError(f"{path}: unknown dtype {config.get('dtype')!r}")
    return config


def _load_weights(
    model, path: Path, other: str = "another model than its config.json describes"
) -> None:
    """Load the safetensors file ``path`` into ``model`` (strict).

    Raises:
        CheckpointError: an unreadable file (truncated, corrupt, not safetensors), the weights
            of ``other`` (one line naming the first tensors that differ), or weights holding NaN
            or infinite values (naming the tensor).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        load_model(model, path, strict=True)
    except SafetensorError as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt: {e})"
        ) from None
    except RuntimeError as e:
        lines = [s.strip().rstrip(".") for s in str(e).splitlines() if s.strip()]
        detail = "; ".join(lines[1:4]) if len(lines) > 1 else (lines[0] if lines else "")
        more = f" and {len(lines) - 4} more" if len(lines) > 4 else ""
        raise CheckpointError(
            f"{path} holds the weights of {other} ({detail[:300]}{more})"
        ) from None
    check_finite_weights(path, dict(model.state_dict()))


def from_pretrained(
    name_or_path,
    *,
    device="cpu",
    dtype=None,
    revision: str | None = None,
    cache_dir=None,
    local_files_only: bool = False,
    token=None,
):
    """The pretrained model ``name_or_path``, in evaluation mode on ``device``.

    ``pv.from_pretrained("static-mnist-vae-vampprior")`` loads a model of the zoo
    (:data:`PRETRAINED`); a folder written by :func:`save_pretrained` and a Hugging Face Hub
    repository id (``owner/name``; ``revision``, ``cache_dir``, ``token``, ``local_files_only``
    as ``huggingface_hub.snapshot_download``; offline with ``HF_HUB_OFFLINE=1``) work alike.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``.
        dtype: the model's floating dtype (default: the one it was saved in).

    Returns:
        The model (``model.training`` is False).

    Raises:
        ValueError: an unknown name, a device name torch does not know, CUDA where it is not
            available.
        FileNotFoundError: a folder that is not a pretrained folder; a repository that can be
            neither downloaded nor found in the cache.
        pyrovamp.errors.CheckpointError: a damaged ``config.json``; a truncated or foreign
            ``model.safetensors`` (one line naming the file).
    """
    if isinstance(device, str):
        try:
            device = torch.device(device)
        except RuntimeError:
            raise ValueError(
                f"device must be a device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}"
            ) from None
    check_type("device", device, torch.device, "a device name or torch.device")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available")
    folder = pretrained_folder(
        name_or_path,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
    )
    config = _read_config(folder)
    dtype = _check_dtype("dtype", dtype)
    try:
        with fork_rng():  # the fresh parameters' draws leave the caller's streams alone
            model = build_from_config(config["model"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{folder / CONFIG}: the model cannot be rebuilt ({e})") from None
    model = model.to(dtype or _DTYPES[config["dtype"]])
    _load_weights(model, folder / WEIGHTS)
    return model.to(device).eval()


def load_card(name_or_path, **kwargs) -> dict:
    """The model card's fields (its metadata under ``pyrovamp``: numbers in nats per data point,
    the recipe, commands, hardware, ...) of a zoo name, folder or repository id (``kwargs`` as
    :func:`pretrained_folder`). Empty for a folder without a card.

    Raises:
        as :func:`pretrained_folder`; ValueError: a card whose metadata is not YAML.
    """
    import yaml

    path = pretrained_folder(name_or_path, **kwargs) / CARD
    if not path.is_file():
        return {}
    m = re.match(r"---\n(.*?)\n---\s*$", path.read_text(), re.S | re.M)
    if m is None:
        return {}
    head = m.group(1)
    try:
        meta = yaml.safe_load(head) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: the card's metadata is not valid YAML ({e})") from None
    card = meta.get("pyrovamp") if isinstance(meta, dict) else None
    return dict(card) if isinstance(card, dict) else {}


def push_to_hub(
    model,
    repo_id: str,
    *,
    dataset: str | None = None,
    card: dict | None = None,
    private: bool | None = None,
    token=None,
    commit_message: str = "Upload pyrovamp model",
    extra_files=(),
):
    """Save ``model`` as :func:`save_pretrained` does and upload the folder to the Hugging Face
    Hub repository ``repo_id`` (created if missing), with ``huggingface_hub``.

    ``extra_files``: more files to upload beside it (e.g. ``log_likelihood_is.npz``).

    Returns:
        The ``huggingface_hub.CommitInfo`` of the upload.

    Raises:
        ValueError: ``repo_id`` is not ``owner/name``; as :func:`save_pretrained`.
        huggingface_hub.errors.HfHubHTTPError: the upload failed (no token, no network).
    """
    check_type("repo_id", repo_id, str, "a Hugging Face Hub repository id (owner/name)")
    if not is_repo_id(repo_id):
        raise ValueError(f"repo_id must be owner/name, got {repo_id!r}")
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="pyrovamp-push-") as tmp:
        save_pretrained(model, tmp, dataset=dataset, card=card)
        for f in extra_files:
            shutil.copy2(f, Path(tmp) / Path(f).name)
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)


class PretrainedMixin:
    """``save_pretrained`` and ``push_to_hub`` as methods of every pyrovamp model."""

    def save_pretrained(
        self, folder, *, dataset: str | None = None, card: dict | None = None, weights_dtype=None
    ) -> Path:
        """Write this model to a pretrained folder: :func:`pyrovamp.pretrained.save_pretrained`
        (``model.safetensors``, ``config.json``, the card ``README.md``); load it back with
        ``pv.from_pretrained(folder)``."""
        return save_pretrained(
            self, folder, dataset=dataset, card=card, weights_dtype=weights_dtype
        )

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload this model to the Hugging Face Hub: :func:`pyrovamp.pretrained.push_to_hub`."""
        return push_to_hub(self, repo_id, **kwargs)
