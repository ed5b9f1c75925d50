"""The zoo of pretrained models: exporting a finished run folder as a pretrained folder with its
card, scoring a pretrained model (``pyrovamp evaluate NAME``), and the table of the zoo
(``pyrovamp pretrained``, the README's and the site's tables, generated from the cards).

A card's numbers are in nats per test image: ``test_log_likelihood`` (IS with ``is_num_samples``
importance samples, seed ``is_seed``, blocks of ``is_block_size`` test images, so that any block of
``log_likelihood_is.npz`` can be recomputed on its own), ``test_log_likelihood_ais`` (AIS, Neal
2001, with ``ais_num_chains`` chains and ``ais_num_steps`` temperatures), ``test_elbo``,
``test_log_likelihood_exact`` (quadrature, two-dimensional latents only), ``active_units`` (Burda
et al. 2016), with the training recipe, its commands, the hardware and the training time.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pyrovamp._io import atomic_write_text
from pyrovamp._validate import check_optional_int
from pyrovamp._version import __version__
from pyrovamp.data import DATASETS
from pyrovamp.infer import points_per_block
from pyrovamp.pretrained import (
    CARD,
    CONFIG,
    PER_POINT,
    PRETRAINED,
    WEIGHTS,
    from_pretrained,
    holds_pretrained_config,
    is_repo_id,
    load_card,
    pretrained_folder,
)
from pyrovamp.workflow.estimates import (
    evaluate_method,
    evaluate_refined,
    merge_metrics,
    save_per_point,
)
from pyrovamp.workflow.parallel import Processes, resolve_hardware
from pyrovamp.workflow.runs import load_run, make_folder, read_json_object, run_dataset
from pyrovamp.workflow.settings import check_method_options, check_refine_options
from pyrovamp.workflow.table1 import PAPER_TABLE, read_cell

__all__ = [
    "export_run",
    "is_pretrained",
    "run_or_pretrained",
    "pretrained_dataset",
    "pretrained_test_set",
    "evaluate_pretrained",
    "zoo_rows",
    "zoo_table",
    "update_zoo_tables",
]

# card keys taken from a run folder's metrics.json
_METRICS = (
    "test_elbo",
    "test_log_likelihood",
    "test_log_likelihood_se",
    "test_log_likelihood_ais",
    "test_log_likelihood_ais_se",
    "ais_num_chains",
    "ais_num_steps",
    "ais_seconds",
    "test_log_likelihood_exact",
    "active_units",
    "median_ess",
    "share_k_above_threshold",
    "num_test_points",
    "epochs_trained",
    "train_seconds",
    "eval_seconds",
    "precision",
)


def _pieces_hardware(run: Path) -> str | None:
    """The machines the pieces of ``pyrovamp reproduce`` trained ``run`` on (its
    ``reproduce.json``, as :func:`pyrovamp.workflow.table1.read_cell` reads it), or None."""
    names = sorted({p.get("hardware") for p in read_cell(run).pieces if p.get("hardware")})
    return "; ".join(names) or None


def export_run(
    run_dir,
    folder,
    *,
    name: str,
    recipe: str | None = None,
    commands=(),
    hardware: str | None = None,
    weights_dtype=None,
    notes: str | None = None,
) -> Path:
    """Write the trained model of the run folder ``run_dir`` as the pretrained folder ``folder``
    with its card, and copy its per-image IS values (``log_likelihood_is.npz``, with the seed and
    the block size that give them).

    The run must have a test evaluation (``metrics.json``) and ``log_likelihood_is.npz``
    (``pyrovamp evaluate RUN --method is``); AIS (``--method ais``) is taken when present.

    Args:
        name: the model's name in the zoo (the card's title and ``pv.from_pretrained(name)``).
        recipe: the training recipe (e.g. ``"best v1"``, ``"book"``).
        commands: the exact commands that trained and scored it, in order.
        hardware: the machine it was trained on, where ``reproduce.json`` does not say.
        weights_dtype: as :func:`pyrovamp.save_pretrained`.
        notes: a sentence for the card.

    Raises:
        FileNotFoundError: not a run folder, or no ``metrics.json`` / ``log_likelihood_is.npz``.
        ValueError: as :func:`pyrovamp.save_pretrained`.
    """
    run = Path(run_dir)
    model, cfg, dataset, meta = load_run(run)
    for f in ("metrics.json", PER_POINT):
        if not (run / f).is_file():
            raise FileNotFoundError(f"{run / f} is missing: evaluate the run first")
    metrics = read_json_object(run / "metrics.json")
    per_point = dict(np.load(run / PER_POINT))
    num_samples = int(metrics.get("num_samples", 5000))
    if "num_samples" in per_point and int(per_point["num_samples"]) != num_samples:
        raise ValueError(f"{run / PER_POINT} holds S={int(per_point['num_samples'])}, "
                         f"metrics.json S={num_samples}: evaluate the run again")  # fmt: skip
    card: dict[str, Any] = {
        "name": name,
        "dataset": cfg["dataset"],
        "model": cfg.get("model", "vae"),
        "prior": cfg["prior"],
        "latent_dim": cfg["latent_dim"],
        "recipe": recipe,
        "commands": list(commands),
        "pyrovamp_version": __version__,
        "hardware": _pieces_hardware(run) or hardware,
        "is_num_samples": num_samples,
        "is_seed": int(per_point.get("seed", 0)),
        "is_block_size": int(
            per_point["block_size"]
            if "block_size" in per_point
            else points_per_block(model, num_samples)
        ),
        **{k: metrics[k] for k in _METRICS if k in metrics},
        "notes": notes,
    }
    ll = per_point["log_likelihood"]
    if abs(float(np.mean(ll)) - float(metrics["test_log_likelihood"])) > 1e-6:
        raise ValueError(
            f"{run / PER_POINT} (mean {np.mean(ll):.4f}) does not match metrics.json's "
            f"test_log_likelihood {metrics['test_log_likelihood']:.4f}: evaluate again"
        )
    if cfg["dataset"] not in DATASETS:  # your own data: what reads the same test points
        card["data"] = {
            "split": cfg.get("split"),
            "seed": cfg.get("data_seed") or 0,
            "likelihood": cfg.get("likelihood"),
        }
    card = {k: v for k, v in card.items() if v is not None}
    folder = make_folder(folder)
    model.save_pretrained(folder, dataset=cfg["dataset"], card=card, weights_dtype=weights_dtype)
    save_per_point(
        folder / PER_POINT,
        log_likelihood=ll,
        seed=np.asarray(card["is_seed"]),
        num_samples=np.asarray(num_samples),
        block_size=np.asarray(card["is_block_size"]),
    )
    return folder


def is_pretrained(name: str) -> bool:
    """Whether the command line's ``name`` is meant as a pretrained model rather than a run
    folder: a zoo name, a pretrained folder (``model.safetensors``, or a ``config.json`` of the
    pretrained format), or no folder at all (a Hub repository id, or a name the pretrained path
    reports with the zoo's names)."""
    path = Path(name)
    if name in PRETRAINED or (path / WEIGHTS).is_file():
        return True
    if (path / CONFIG).is_file():  # a pretrained folder that lost its weights says so; an
        return holds_pretrained_config(path)  # unreadable file, the run folder's checks name it
    return not path.exists()


class PretrainedTestSet(NamedTuple):
    """What :func:`pretrained_test_set` returns."""

    folder: Path
    model: Any
    x: torch.Tensor
    card: dict
    dataset: str
    data: Any  # the whole pyrovamp.data.Dataset (CPU): its training images, for a refined guide


def run_or_pretrained(name: str) -> bool:
    """Whether the command line's ``name`` (``pyrovamp evaluate``, ``pyrovamp compare``) is a
    pretrained model (:func:`is_pretrained`) rather than a run folder.

    Raises:
        ValueError: ``name`` is neither an existing folder, a zoo name nor of a Hub repository
            id's form (one line listing the zoo).
    """
    if not Path(name).exists() and name not in PRETRAINED and not is_repo_id(name):
        raise ValueError(
            f"{name} is not a run folder, a pretrained model of the zoo "
            f"({', '.join(PRETRAINED) or 'none'}), a pretrained folder or a Hugging Face Hub "
            "repository id (owner/name)"
        )
    return is_pretrained(name)


def pretrained_dataset(name_or_path) -> str:
    """The data set of a pretrained model as its ``config.json`` records it (a name, or the path
    of your own data).

    Raises:
        ValueError: a model saved without its data set (one line saying how to record it); as
            :func:`pyrovamp.pretrained.pretrained_folder`.
    """
    folder = pretrained_folder(name_or_path)
    config = read_json_object(folder / CONFIG)
    if not config.get("dataset"):
        raise ValueError(
            f"{folder / CONFIG} records no data set: save the model with "
            "save_pretrained(model, FOLDER, dataset=NAME), or score it in Python "
            "(pyrovamp.log_likelihood)"
        )
    return str(config["dataset"])


def pretrained_test_set(name_or_path, data_root=None, device: str = "cpu"):
    """A pretrained model and the test images of its data set, as its card records them.

    Returns:
        ``(folder, model, x, card, dataset, data)``: the model's local folder, the model
        (evaluation mode) on ``device``, its data set's ``(N, D)`` test images on ``device``
        (read from ``data_root``, default: the usual place; your own data with the split, seed
        and likelihood of the card's ``data``), the card's fields, the data set as
        ``config.json`` names it and the whole :class:`~pyrovamp.data.Dataset` (on the CPU).

    Raises:
        ValueError: a model without a recorded data set, a damaged card (one line naming the
            file); as :func:`pyrovamp.from_pretrained` and :func:`pyrovamp.load_dataset`.
    """
    folder = pretrained_folder(name_or_path)
    name = pretrained_dataset(folder)
    card = _checked_card(load_card(folder), folder / CARD)
    model = from_pretrained(folder, device=device)
    data = card.get("data") or {}  # your own data: the split, seed and likelihood it had
    cfg = {"dataset": name, "split": data.get("split"),
           "data_seed": data.get("seed"), "likelihood": data.get("likelihood")}  # fmt: skip
    dataset = run_dataset(cfg, data_root)
    return PretrainedTestSet(folder, model, dataset.test.to(device), card, name, dataset)


def evaluate_pretrained(
    name_or_path,
    *,
    method: str | None = None,
    num_samples: int | None = None,
    num_chains: int | None = None,
    num_steps: int | None = None,
    data_root=None,
    device: str | None = None,
    out=None,
    progress: bool | str = "auto",
    devices: int = 1,
    accelerator: str | None = None,
    refine_guide: int | None = None,
    refine_on: str | None = None,
    refine_num_samples: int | None = None,
    refine_lr: float | None = None,
    refine_batch_size: int | None = None,
    report: Callable[[str], None] | None = None,
) -> dict:
    """``pyrovamp evaluate NAME``: score a pretrained model (zoo name, folder or Hub repository)
    on its data set's test images.

    ``method``: ``"is"`` (also ``None``, the default; S and seed: the card's, so the result is
    the card's number), ``"ais"`` or ``"exact"``. The data set is the one recorded in
    ``config.json``, read from ``data_root`` (default: its usual place); your own data (a path,
    a torchvision set) with the split, seed and likelihood the card's ``data`` records. With
    ``out`` the metrics are merged into ``out/metrics.json`` and the per-image values written to
    ``out/log_likelihood_<method>.npz`` (a zoo folder is never written to); an interrupted IS or
    AIS with ``out`` goes on where it stopped when called again
    (:mod:`pyrovamp.workflow.resumable`).

    ``devices`` (``pyrovamp evaluate NAME --devices N``; IS and AIS): shard the estimator over N
    new processes on ``accelerator`` (``"cpu"``, or ``"gpu"``: one GPU each; default:
    ``device``'s, which defaults to the accelerator's, else ``"cpu"``), each loading the model
    from its folder: the same per-image values as one process. Default 1: one process.

    ``refine_guide`` (epochs; ``pyrovamp evaluate NAME --refine-guide EPOCHS``): instead of
    ``method``, IS with a copy of the guide refined on the training set (``refine_on="train"``)
    or on the test images it scores (``"test"``), the model frozen, as for a run folder
    (:func:`pyrovamp.workflow.estimates.evaluate_refined`, with its defaults; S and seed: the
    card's; its summary line goes to ``report``, default: the logger), so the refined estimate
    stands beside the card's: e.g. the zoo's
    ``static-mnist-hvae-vampprior`` with ``refine_guide=20, refine_on="test", refine_lr=3e-4``
    (docs/results/paper-table.md).

    Returns:
        The metrics (nats per test image), with ``card_log_likelihood`` (the card's value for the
        same method -- for a refined guide, the card's IS value -- when it has one) and ``name``.

    Raises:
        ValueError: a model without a recorded data set; ``devices`` > 1 with
            ``method="exact"``, ``devices < 1``, ``accelerator="gpu"`` without enough CUDA devices
            or with ``device="cpu"`` (one line naming the option); as
            :func:`pyrovamp.from_pretrained`, :func:`pyrovamp.load_dataset` and the estimators.
    """
    check_refine_options(
        refine_guide,
        refine_on,
        refine_num_samples,
        refine_lr,
        refine_batch_size,
        method,
        devices,
    )
    check_method_options(method, num_samples, num_steps, num_chains)
    method = method or "is"
    devices, accelerator, device = resolve_hardware(devices, accelerator, device)
    if devices > 1 and method == "exact":
        raise ValueError(
            f"--devices {devices} shards IS and AIS; --method exact (quadrature) runs in one "
            "process: leave out --devices"
        )
    folder, model, x, card, _, data = pretrained_test_set(name_or_path, data_root, device)
    if out is not None:
        out = make_folder(out)
    seed = card.get("is_seed") or 0
    if refine_guide is not None:
        metrics = evaluate_refined(
            model,
            data,
            out,
            epochs=refine_guide,
            refine_num_samples=refine_num_samples,
            lr=refine_lr,
            batch_size=refine_batch_size,
            num_samples=num_samples or card.get("is_num_samples") or 5000,
            device=device,
            seed=seed,
            refine_on=refine_on,
            trained_epochs=card.get("epochs_trained"),
            progress=progress,
            report=report,
        )
        metrics["name"] = str(name_or_path)
        metrics["num_test_points"] = int(x.shape[0])
        if "test_log_likelihood" in card:
            metrics["card_log_likelihood"] = card["test_log_likelihood"]
        return metrics
    processes = None
    if devices > 1:  # each process loads the model from its folder
        load = functools.partial(_pretrained_model, str(Path(folder).resolve()))
        processes = Processes(devices, accelerator, load)
    block = None
    if method == "is":
        num_samples = num_samples or card.get("is_num_samples") or 5000
        if num_samples == card.get("is_num_samples"):
            block = card.get("is_block_size")  # the card's blocks: the card's values
    metrics, per = evaluate_method(
        model,
        x,
        method,
        num_samples=num_samples or 5000,
        num_chains=num_chains or card.get("ais_num_chains"),
        num_steps=num_steps or card.get("ais_num_steps"),
        seed=seed,
        progress=progress,
        batch_size=block,
        processes=processes,
        folder=out,  # an interrupted IS or AIS goes on there (pyrovamp.workflow.resumable)
    )
    key = "test_log_likelihood" if method == "is" else f"test_log_likelihood_{method}"
    metrics["name"] = str(name_or_path)
    if key in card:
        metrics["card_log_likelihood"] = card[key]
    if out is not None:
        save_per_point(out / f"log_likelihood_{method}.npz", **per)
        metrics = merge_metrics(out / "metrics.json", metrics)
    return metrics


# the card's fields that steer an evaluation: (key, the smallest integer it may be)
_CARD_INTEGERS = (("is_seed", 0), ("is_num_samples", 1), ("is_block_size", 1),
                  ("ais_num_chains", 1), ("ais_num_steps", 2))  # fmt: skip
_CARD_NUMBERS = ("test_log_likelihood", "test_log_likelihood_ais", "test_log_likelihood_exact")


def _checked_card(card: dict, path: Path) -> dict:
    """``card`` (the fields of the card ``path``) once the fields an evaluation reads are of
    their kind: the estimators' settings integers (or absent), its numbers numbers, ``data`` a
    mapping.

    Raises:
        ValueError: one line naming ``path``, the field and what it must be.
    """
    for key, low in _CARD_INTEGERS:
        try:
            check_optional_int(key, card.get(key), low)
        except ValueError as e:  # ArgumentTypeError included
            raise ValueError(f"{path}: {e}") from None
    for key in _CARD_NUMBERS:
        value = card.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{path}: {key} must be a number (nats), got {value!r}")
    if not isinstance(card.get("data") or {}, dict):
        raise ValueError(f"{path}: data must be a mapping (split, seed, likelihood)")
    return card


def _pretrained_model(folder: str, device: str):
    """The pretrained model in ``folder`` on ``device`` (what a process of ``--devices N``
    calls)."""
    return from_pretrained(folder, device=device)


def zoo_rows(names=None) -> list[dict]:
    """One row per zoo model (default: all of :data:`pyrovamp.PRETRAINED`): its name, data
    set, model, prior, recipe, IS / AIS / exact / ELBO (nats per test image), active units, the
    paper's value where it has one, the folder's size in MB."""
    rows = []
    for name in names if names is not None else PRETRAINED:
        folder = pretrained_folder(name)
        card = load_card(folder)
        size = sum(
            (folder / f).stat().st_size
            for f in (WEIGHTS, CONFIG, CARD, PER_POINT)
            if (folder / f).is_file()
        )
        rows.append(
            {
                "name": name,
                **{k: card.get(k) for k in ("dataset", "model", "prior", "recipe")},
                "is": card.get("test_log_likelihood"),
                "is_se": card.get("test_log_likelihood_se"),
                "ais": card.get("test_log_likelihood_ais"),
                "exact": card.get("test_log_likelihood_exact"),
                "elbo": card.get("test_elbo"),
                "active_units": card.get("active_units"),
                "paper": _paper_value(card),
                "train_minutes": (card["train_seconds"] / 60) if "train_seconds" in card else None,
                "megabytes": size / 1e6,
            }
        )
    return rows


def _paper_value(card: dict) -> float | None:
    """The VampPrior paper's test log-likelihood for the card's cell (nats per image), if any."""
    key = (str(card.get("dataset")), str(card.get("model")), str(card.get("prior")))
    value, kind = PAPER_TABLE.get(key, (None, None))
    return value if kind == "ll" else None


def _num(v, fmt="{:.2f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else ""


def _units(v) -> str:
    if isinstance(v, dict):
        return " / ".join(f"{k} {n}" for k, n in v.items())
    return "" if v is None else str(v)


def zoo_table(names=None) -> str:
    """The zoo as a Markdown table, generated from the cards (the README and the site show it;
    a test checks that they hold this table verbatim)."""
    head = (
        "| name | data | model | prior | recipe | IS, S=5000 | AIS | exact | test ELBO | "
        "paper (IS) | active units | training | MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in zoo_rows(names):
        is_ = _num(r["is"]) + (f" ± {r['is_se']:.2f}" if isinstance(r["is_se"], float) else "")
        lines.append(
            f"| `{r['name']}` | {r['dataset']} | {r['model']} | {r['prior']} | "
            f"{r['recipe'] or ''} | {is_} | {_num(r['ais'])} | {_num(r['exact'])} | "
            f"{_num(r['elbo'])} | {_num(r['paper'])} | {_units(r['active_units'])} | "
            f"{_num(r['train_minutes'], '{:.0f} min')} | {r['megabytes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


_MARKERS = re.compile(r"(<!-- zoo-table -->\n)(.*?)(<!-- /zoo-table -->)", re.S)


def update_zoo_tables(*pages) -> list[Path]:
    """Write :func:`zoo_table` between the ``<!-- zoo-table -->`` and ``<!-- /zoo-table -->``
    markers of each Markdown file in ``pages`` (atomically); returns the files that changed.

    Raises:
        ValueError: a page without the markers (one line naming it).
    """
    table = zoo_table()
    changed = []
    for page in map(Path, pages):
        text = page.read_text()
        if not _MARKERS.search(text):
            raise ValueError(f"{page} has no <!-- zoo-table --> ... <!-- /zoo-table --> markers")
        new = _MARKERS.sub(lambda m: m.group(1) + table + m.group(3), text)
        if new != text:
            atomic_write_text(page, new)
            changed.append(page)
    return changed
