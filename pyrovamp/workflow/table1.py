"""The VampPrior paper's table beside pyrovamp's cells: the paper's values, what a cell's run
folder says about it (:func:`read_cell`) and ``table1.md`` (:func:`write_table`).

Tomczak & Welling (2018), "VAE with a VampPrior", AISTATS, sec. 4 and Table 2 (test
log-likelihood by importance sampling with S = 5000, nats per image; for Frey Faces the negative
log-likelihood per pixel). A cell -- data set x model x prior -- is the run folder
``DIR/<dataset>_<model>_<prior>`` (:func:`cell_name`), or with a recipe of several stages
(:mod:`pyrovamp.workflow.recipes`) one run folder per stage.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyrovamp.errors import CheckpointError
from pyrovamp.training import CHECKPOINT, MODEL, read_checkpoint
from pyrovamp.workflow.runs import PRESETS, atomic_write_text, saved_config
from pyrovamp.workflow.settings import TEST_NUM_SAMPLES, TEST_POINTS

__all__ = [
    "PAPER_TABLE",
    "PAPER_SOURCE",
    "CellState",
    "cell_name",
    "read_cell",
    "record_piece",
    "write_table",
    "preset_differences",
]

# The paper's values: (value, what). "ll": test log-likelihood, nats per image (IS, S=5000);
# "nll_per_pixel": negative log-likelihood per pixel (the paper's grey-image data sets).
PAPER_TABLE = {
    # static MNIST, Table 2 of the paper
    ("static_mnist", "vae", "standard"): (-88.56, "ll"),
    ("static_mnist", "vae", "vampprior"): (-85.57, "ll"),
    ("static_mnist", "hvae", "standard"): (-86.05, "ll"),
    ("static_mnist", "hvae", "vampprior"): (-83.19, "ll"),
    ("static_mnist", "convhvae", "standard"): (-82.41, "ll"),
    ("static_mnist", "convhvae", "vampprior"): (-81.09, "ll"),
    ("static_mnist", "pixelhvae", "standard"): (-80.14, "ll"),
    ("static_mnist", "pixelhvae", "vampprior"): (-79.78, "ll"),
    # dynamic MNIST: only the PixelHVAE + VampPrior value is quoted in the sources at hand
    ("dynamic_mnist", "pixelhvae", "vampprior"): (-78.45, "ll"),
    # Frey Faces, Table 2 (quoted in docs/results/static-mnist.md; the paper's unit -- nats or
    # bits per pixel -- is not stated in the sources at hand)
    ("frey_faces", "vae", "standard"): (4.63, "nll_per_pixel"),
    ("frey_faces", "vae", "vampprior"): (4.57, "nll_per_pixel"),
    ("frey_faces", "hvae", "standard"): (4.61, "nll_per_pixel"),
    ("frey_faces", "hvae", "vampprior"): (4.51, "nll_per_pixel"),
}
PAPER_SOURCE = (
    'J. M. Tomczak and M. Welling, "VAE with a VampPrior", AISTATS 2018, Table 2, '
    "as quoted in pyrovamp issue 11 (static MNIST, all four models; dynamic MNIST, "
    "PixelHVAE + VampPrior) and in docs/results/static-mnist.md (Frey Faces, NLL per pixel, unit "
    "not stated there). The other cells of the paper's table were not available to "
    "this code's authors and are left blank rather than quoted from memory."
)

# what a stage killed in its first epoch leaves (recipe.json: pyrovamp reproduce's own)
MAX_FIRST_EPOCH_LEFTOVERS = {"config.json", "logs", "recipe.json"}


def cell_name(dataset: str, model: str, prior: str) -> str:
    """The folder name of a cell: ``<dataset>_<model>_<prior>``."""
    return f"{dataset}_{model}_{prior}"


@dataclass
class CellState:
    """What a cell's run folder says about it.

    Attributes:
        state: ``"not started"``, ``"unfinished"`` (a checkpoint, no final evaluation),
            ``"trained"`` (training finished, test metrics missing), ``"finished"`` (test
            metrics written), ``"leftovers"`` (only what a run killed in its first epoch leaves),
            or ``"unreadable"``.
        epochs: epochs trained (from ``model.pt``, ``history.csv``, or ``checkpoint.ckpt`` where a
            piece was killed after the last ``model.pt``).
        train_seconds: training wall time over all pieces (seconds).
        stopped_early: early stopping fired.
        metrics: ``metrics.json`` (finished cells).
        config: ``config.json``.
        pieces: the pieces ``pyrovamp reproduce`` ran (``reproduce.json``): hardware, seconds.
        partial: ``metrics.json`` of an unfinished cell (estimates that ``pyrovamp evaluate
            RUN --method is|ais`` made of its current parameters: ``is_epochs``/``ais_epochs``
            say after how many epochs).
        curve: ``(epoch, test log-likelihood)`` pairs of the learning curve in ``history.csv``
            (``--test-every``; nats per image on the fixed test subset).
        recipe: the recipe that trains the cell, as the table names it (``"paper v1"``,
            ``"best v1 (2 stages)"``; ``""``: not known).
        stages: one dict per stage of the recipe (``index``, ``name``, ``folder`` relative to
            the table's folder, ``state``, ``epochs``, ``seconds`` of training,
            ``eval_seconds``, ``value``: its test log-likelihood once finished, ``command``: the
            ``pyrovamp train`` command from its ``recipe.json`` or ``None``). For several stages
            the other attributes describe the cell as a whole: ``state`` is ``"finished"`` once
            every stage is, else the state of the first stage that is not; ``metrics`` and
            ``config`` are the last finished stage's; ``epochs`` and ``train_seconds`` the sums.
        differences: the settings in which the cell differs from its recipe
            (:func:`preset_differences`); ``None``: from the paper preset.
    """

    state: str
    epochs: int = 0
    train_seconds: float = 0.0
    stopped_early: bool = False
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    pieces: list = field(default_factory=list)
    note: str = ""
    partial: dict = field(default_factory=dict)
    curve: list = field(default_factory=list)
    recipe: str = ""
    stages: list = field(default_factory=list)
    differences: list | None = None


def _read_json(path):
    """The JSON object in ``path``; ``None`` for a missing or damaged file or other JSON."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def read_cell(folder) -> CellState:
    """Read a cell's run folder (never raises for a damaged folder: it is reported instead)."""
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        return CellState("not started")
    pieces = (_read_json(folder / "reproduce.json") or {}).get("pieces", [])
    config = _read_json(folder / "config.json")
    if config is None and (folder / "config.json").exists():  # its row would lose its settings
        return CellState(
            "unreadable", pieces=pieces, note=f"{folder / 'config.json'} is not a JSON object"
        )
    config = config or {}
    epochs, seconds, finished, stopped = 0, 0.0, False, False
    if (folder / MODEL).is_file():
        try:
            meta = read_checkpoint(folder / MODEL, map_location="cpu")["pyrovamp"]
        except CheckpointError as e:
            return CellState("unreadable", config=config, pieces=pieces, note=str(e))
        epochs, seconds = int(meta.get("epochs") or 0), float(meta.get("train_seconds") or 0.0)
        finished, stopped = bool(meta.get("finished")), bool(meta.get("stopped_early"))
    rows = []
    if (folder / "history.csv").is_file():
        try:
            with open(folder / "history.csv", newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, csv.Error, UnicodeDecodeError):
            rows = []
    if not (folder / MODEL).is_file() and rows:
        epochs, seconds = len(rows), sum(float(r.get("seconds") or 0) for r in rows)
    ckpt = folder / CHECKPOINT
    if (
        not finished
        and ckpt.is_file()
        and (
            not (folder / MODEL).is_file()
            or ckpt.stat().st_mtime > (folder / MODEL).stat().st_mtime
        )
    ):
        # a piece killed after its last model.pt: the checkpoint holds the newer count
        try:
            meta = read_checkpoint(ckpt, map_location="cpu")["pyrovamp"]
            if len(meta.get("history") or ()) > epochs:
                epochs = len(meta["history"])
                seconds = float(meta.get("train_seconds") or seconds)
        except (CheckpointError, TypeError, ValueError):
            pass  # resuming will report the damaged checkpoint itself
    curve = []
    for r in rows:
        try:
            if r.get("test_log_likelihood"):
                curve.append((int(r["epoch"]), float(r["test_log_likelihood"])))
        except (TypeError, ValueError):
            continue
    metrics = _read_json(folder / "metrics.json") if finished else None
    partial = {} if finished else (_read_json(folder / "metrics.json") or {})
    if metrics is not None:
        state = "finished"
    elif finished:
        state = "trained"
    elif (folder / CHECKPOINT).is_file():
        state = "unfinished"
    elif {p.name for p in folder.iterdir()} <= MAX_FIRST_EPOCH_LEFTOVERS:
        state = "leftovers"
    else:
        return CellState(
            "unreadable",
            config=config,
            pieces=pieces,
            note=f"{folder} holds files but no {CHECKPOINT}",
        )
    return CellState(
        state, epochs, seconds, stopped, metrics or {}, config, pieces, partial=partial, curve=curve
    )


def record_piece(folder: Path, piece: dict) -> None:
    """Append ``piece`` (what one call ran on a cell: command, exit status, seconds, hardware)
    to the cell's ``reproduce.json`` (nothing when the folder is missing)."""
    if not folder.is_dir():
        return
    data = _read_json(folder / "reproduce.json") or {"pieces": []}
    data["pieces"].append(piece)
    atomic_write_text(folder / "reproduce.json", json.dumps(data, indent=2) + "\n")


def _fmt_minutes(seconds: float) -> str:
    m = seconds / 60.0
    if m < 1:
        return f"{seconds:.0f} s"
    if m < 120:
        return f"{m:.1f} min"
    return f"{m / 60:.1f} h"


def preset_differences(
    config: dict, preset: str = "paper", overrides: dict | None = None, label: str | None = None
) -> list[str]:
    """The protocol settings in which a cell's ``config.json`` differs from today's ``preset``
    (read as :func:`pyrovamp.workflow.runs.saved_config`: a setting newer than the run counts as
    what the run was trained with), e.g. ``["optimizer adam (paper preset: adamnormgrad)"]``; the
    model and prior of the cell itself, the test settings and the pseudo-input settings of a prior
    without pseudo-inputs are not differences.

    Args:
        config: the cell's ``config.json``.
        preset: the preset it should have been trained with (a key of
            :data:`pyrovamp.training.config.PRESETS`).
        overrides: settings that replace the preset's (a recipe stage's options,
            :class:`pyrovamp.workflow.recipes.Stage`); only the preset's settings are compared.
        label: what the expected values are called (default ``"<preset> preset"``).
    """
    cfg = saved_config(config)
    skip = {"model", "num_samples"}
    if cfg.get("prior") != "vampprior":
        skip.add("pseudo_input_parameterization")
    expected = {
        **PRESETS[preset],
        **{k: v for k, v in (overrides or {}).items() if k in PRESETS[preset]},
    }
    label = label or f"{preset} preset"
    out = []
    for k, want in expected.items():
        have = cfg.get(k)
        if k in skip or have is None:
            continue
        if isinstance(want, (list, tuple)):
            want, have = list(want), list(have) if isinstance(have, (list, tuple)) else have
        if have != want:
            out.append(f"{k} {have} ({label}: {want})")
    return out


def _stage_text(s: dict) -> str:
    """A stage in the recipe column: its value once finished, else how far it got."""
    if s["state"] == "finished" and s.get("value") is not None:
        return f"{s['name']} {float(s['value']):.2f}"
    if s["state"] == "finished":
        return f"{s['name']} finished"
    if s["state"] in ("not started", "leftovers"):
        return f"{s['name']} not started"
    if s["state"] == "unfinished":
        return f"{s['name']} unfinished ({s['epochs']} epochs)"
    return f"{s['name']} {s['state']}"


def _value(st: CellState, paper) -> tuple[str, str, str]:
    """The cell's pyrovamp (IS), AIS and pyrovamp - paper columns."""
    m = st.metrics
    ours = ais = diff = "–"
    if m:  # a finished run (for several stages: the last finished stage)
        n, s = m.get("num_test_points"), m.get("num_samples")
        where = f"S={s}, {n} test images"
        if st.config.get("max_points"):
            where += f", smoke test on the first {st.config['max_points']} points"
        done = [x for x in st.stages if x["state"] == "finished"]
        if len(st.stages) > 1 and done and done[-1] is not st.stages[-1]:
            where += f", after stage {done[-1]['index']} ({done[-1]['name']})"
        value = float(m["test_log_likelihood"])
        ours = f"{value:.2f} ± {float(m.get('test_log_likelihood_se', 0.0)):.2f} ({where})"
        if paper is not None and paper[1] == "ll":
            diff = f"{value - paper[0]:+.2f}"
        if "test_nll_per_pixel" in m:
            nll = float(m["test_nll_per_pixel"])
            ours += f"; NLL/pixel {nll:.3f}"
            if paper is not None and paper[1] == "nll_per_pixel":
                diff = f"{paper[0] - nll:+.3f} per pixel"
        for tag, where in (("refined", "training"), ("refined_on_test", "test")):
            if m.get(f"test_log_likelihood_{tag}") is not None:  # evaluate --refine-guide
                ours += (
                    f"; {float(m[f'test_log_likelihood_{tag}']):.2f} with the guide "
                    f"refined on the {where} set (S={m.get(f'{tag}_num_samples')}, "
                    f"{m.get(f'{tag}_refine_epochs')} epochs of "
                    f"IWAE-{m.get(f'{tag}_refine_num_samples')}, the model frozen)"
                )
        if m.get("test_log_likelihood_ais") is not None:
            ais = f"{float(m['test_log_likelihood_ais']):.2f}"
    elif st.state == "unfinished" and st.partial:
        # estimates of the current parameters of a run that has not converged yet
        p, now = st.partial, st.epochs
        if p.get("is_epochs") == now and p.get("test_log_likelihood") is not None:
            value = float(p["test_log_likelihood"])
            ours = (
                f"{value:.2f} ± {float(p.get('test_log_likelihood_se', 0.0)):.2f} "
                f"(S={p.get('num_samples')}, {p.get('num_test_points')} test images, "
                f"after {now} epochs)"
            )
            if paper is not None and paper[1] == "ll":
                diff = f"{value - paper[0]:+.2f}"
        if p.get("ais_epochs") == now and p.get("test_log_likelihood_ais") is not None:
            ais = (
                f"{float(p['test_log_likelihood_ais']):.2f} ({p.get('ais_num_chains')} "
                f"chains x {p.get('ais_num_steps')} steps, after {now} epochs)"
            )
    return ours, ais, diff


def _status(st: CellState, gpu: bool) -> str:
    """The status column: converged or not, what to do next, for several stages which stage."""
    if gpu:
        status = "needs a GPU (command below)"
    elif st.state == "finished":
        status = (
            "converged (early stopping fired)"
            if st.stopped_early
            else "not converged (the epoch limit ended training before early stopping)"
        )
    elif st.state in ("unfinished", "trained"):
        status = (
            "not converged (unfinished: run the same command again to continue)"
            if st.state == "unfinished"
            else "trained; test evaluation missing (run the same command again)"
        )
    elif st.state == "unreadable":
        status = f"error: {st.note}"
    elif len(st.stages) > 1 and any(x["state"] == "finished" for x in st.stages):
        status = "not started (run the same command again)"
    else:
        status = "not started"
    now = next((x for x in st.stages if x["state"] != "finished"), None)
    if len(st.stages) > 1 and now is not None and not gpu:
        status = f"stage {now['index']} of {len(st.stages)} ({now['name']}): {status}"
    if st.note and st.state != "unreadable":
        status += f"; {st.note}"
    differ = st.differences
    if differ is None and st.config and st.state not in ("not started", "leftovers"):
        differ = preset_differences(st.config)
    if differ:
        status += "; trained with " + ", ".join(differ)
    return status


def write_table(out, cells, needs_gpu, notes=()) -> Path:
    """Write ``out/table1.md`` from ``cells`` (``(dataset, model, prior) -> CellState``);
    ``needs_gpu`` maps the cells that were not run on this CPU-only machine to their command.

    A row names the cell's recipe (:attr:`CellState.recipe`); for a recipe of several stages its
    value is the last finished stage's, the recipe column lists each stage's value, the epochs
    and training time are given per stage and summed, and the status says which stage is next.
    The ``pyrovamp train`` command of every stage (its ``recipe.json``) is listed below the
    table."""
    out = Path(out)
    lines = [
        "# The VampPrior paper's table: pyrovamp beside the paper",
        "",
        f"Written by `pyrovamp reproduce table1` on {time.strftime('%Y-%m-%d %H:%M')}. "
        "Test log-likelihood in nats per image (higher is better), by importance sampling "
        "with S samples per test image (the paper: S = 5000 on the whole test set); for grey "
        "images (Frey Faces) the negative log-likelihood per pixel (lower is better). Each "
        "cell is trained by the recipe its row names (`--recipe`): `paper`, one run folder "
        "in this directory trained with the paper preset (`pyrovamp train --preset paper`); "
        "a recipe of several stages, one run folder per stage, each stage's own test value "
        "beside the recipe's name and the cell's value that of its last finished stage (the "
        "commands are listed below the table).",
        "",
        f"Paper values: {PAPER_SOURCE}",
        "",
        "| data set | model | prior | recipe | pyrovamp (IS) | AIS | paper | pyrovamp - paper "
        "| epochs | wall time (training) | hardware | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, model, prior), st in cells.items():
        paper = PAPER_TABLE.get((dataset, model, prior))
        m = st.metrics
        ours, ais, diff = _value(st, paper)
        paper_txt = (
            "–"
            if paper is None
            else (f"NLL/pixel {paper[0]:.2f}" if paper[1] == "nll_per_pixel" else f"{paper[0]:.2f}")
        )
        hw = sorted({p.get("hardware") for p in st.pieces if p.get("hardware")})
        hw_txt = (
            "; ".join(hw)
            if hw
            else (
                "–"
                if st.state in ("not started", "leftovers")
                else f"not recorded (device {m.get('device', '?')})"
            )
        )
        status = _status(st, (dataset, model, prior) in needs_gpu)
        recipe = st.recipe or "–"
        multi = len(st.stages) > 1
        if multi:
            recipe += ": " + ", ".join(_stage_text(x) for x in st.stages)
            epochs = " + ".join(str(x["epochs"]) if x["epochs"] else "–" for x in st.stages)
            epochs += f" = {st.epochs}" if st.epochs else ""
        else:
            epochs = str(st.epochs) if st.epochs else "–"
        t = _fmt_minutes(st.train_seconds) if st.train_seconds else "–"
        if multi and st.train_seconds:
            per = [
                f"{x['name']} {_fmt_minutes(x['seconds']) if x['seconds'] else '–'}"
                for x in st.stages
            ]
            t += f" ({' + '.join(per)})"
        if multi:
            evals = [x["eval_seconds"] for x in st.stages if x.get("eval_seconds") is not None]
        else:
            evals = [m["eval_seconds"]] if m.get("eval_seconds") is not None else []
        if evals:
            t += f" (+ {_fmt_minutes(sum(float(e) for e in evals))} test evaluation)"
        lines.append(
            f"| {dataset} | {model} | {prior} | {recipe} | {ours} | {ais} | {paper_txt} | {diff} "
            f"| {epochs} | {t} | {hw_txt} | {status} |"
        )
    if needs_gpu:
        lines += [
            "",
            "Cells not run here: the convolutional and PixelCNN models need a GPU "
            "(one convHVAE epoch on static MNIST takes over 20 minutes on a 2-core CPU). "
            "On a machine with a GPU, each runs with:",
            "",
        ]
        for (dataset, model, prior), cmd in needs_gpu.items():
            lines.append(f"- {cell_name(dataset, model, prior)}: `{cmd}`")
    staged = [(key, st) for key, st in cells.items() if st.stages]
    if staged:
        lines += [
            "",
            "## The stages and their commands",
            "",
            "The `pyrovamp train` command that started each stage (from its `recipe.json`; "
            "a stage whose folder has none was started before recipes were recorded, or not "
            "yet); `pyrovamp reproduce` adds `--max-minutes` and resumes with `--resume`:",
            "",
        ]
        for _, st in staged:
            for x in st.stages:
                cmd = f"`{x['command']}`" if x.get("command") else "no recipe.json"
                lines.append(
                    f"- {x['folder']} ({st.recipe}, stage {x['index']}, {x['name']}): {cmd}"
                )
    curves = [(key, st) for key, st in cells.items() if st.curve]
    if curves:
        lines += [
            "",
            "## Learning curves",
            "",
            "The validation ELBO of every epoch and the test log-likelihood on a fixed "
            "subset every few epochs (IS; `--test-every`, `--test-points`, "
            "`--test-num-samples` of `pyrovamp train`: test images spread over the whole "
            "test file, the same importance-sampling seed at every point) are in each "
            "cell's `history.csv` and drawn in its `loss.png`. Test log-likelihood on the "
            "subset, nats per image, by epoch:",
            "",
        ]
        for key, st in curves:
            c = st.config
            what = (
                f"{c.get('test_points') or TEST_POINTS} test images, "
                f"S={c.get('test_num_samples') or TEST_NUM_SAMPLES}"
            )
            pts = ", ".join(f"{e}: {v:.2f}" for e, v in st.curve)
            lines.append(
                f"- {cell_name(*key)} ([loss.png]({cell_name(*key)}/loss.png); {what}): {pts}"
            )
    for note in notes:
        lines += ["", note]
    path = out / "table1.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
