"""``pyrovamp reproduce table1 --recipe paper|best``: named, versioned recipes of ``pyrovamp train``
stages, each in its own folder with its ``recipe.json``; ``best`` runs its two stages as one
resumable command (stage 2 starts from stage 1's parameters once stage 1 has finished), and the
table names every cell's recipe. Tiny data: Digits, the first 64 points."""

import json
import shlex

import pytest
import torch

from pyrovamp.cli import main
from pyrovamp.workflow import RECIPES, Recipe, Stage
from pyrovamp.workflow.reproduce import read_cell, reproduce_table1
from pyrovamp.workflow.settings import new_run_config
from pyrovamp.workflow.table1 import _fmt_minutes

CELL = "digits_vae_vampprior"
SMOKE = ["--max-points", "64", "--num-samples", "4", "--no-progress"]

# config.json of the real run of stage 1 of the static-MNIST VAE + VampPrior cell
# (pyrovamp train --dataset static_mnist --prior vampprior --preset fast --dropout 0.1
#  --val-bound iwae --val-num-samples 20 --val-points 2000 --lr-decay 0.5), its data_root and
# max_minutes (settings of the call, not of the recipe) set to None
STAGE1_STATIC_MNIST_VAE = {
    "dataset": "static_mnist", "prior": "vampprior", "flow": None, "model": "vae",
    "preset": "fast", "max_points": None, "latent_dim": 40, "num_components": 500,
    "grid_side": None, "hidden_dim": 300, "num_hidden_layers": 2, "architecture": "gated",
    "dropout": 0.1, "learn_weights": None, "pseudo_inputs": "random",
    "pseudo_input_parameterization": "sigmoid", "weight_init": "default", "epochs": 2000,
    "batch_size": 200, "lr": 0.001, "optimizer": "adam", "loss": "trace", "num_particles": 1,
    "init_from": None, "warmup_epochs": 100, "patience": 50, "lr_decay": 0.5, "lr_patience": 10,
    "ema_decay": 0.999, "val_bound": "iwae", "val_points": 2000, "val_num_samples": 20,
    "num_samples": 5000, "data_root": None, "device": None, "accelerator": None, "devices": 1,
    "num_nodes": 1, "strategy": "auto", "precision": "auto", "logger": "csv", "test_every": None,
    "test_points": 1000, "test_num_samples": 1000, "seed": 0, "max_minutes": None,
    "logvar_bounds": [-6.0, 2.0],
}  # fmt: skip
STAGE2_CHANGES = {
    "loss": "iwae", "num_particles": 20, "lr": 2.5e-4, "warmup_epochs": 0, "patience": 10,
    "val_bound": "iwae", "val_num_samples": 100, "val_points": 1000, "lr_decay": 0.5,
    "lr_patience": 3,
}  # fmt: skip


def _args(out, *extra):
    return ["reproduce", "table1", "--out", str(out), "--datasets", "digits", "--models", "vae",
            "--priors", "vampprior", *extra]  # fmt: skip


def _row(table: str) -> str:
    rows = [line for line in table.splitlines() if line.startswith("| digits | vae | vampprior |")]
    assert len(rows) == 1, table
    return rows[0]


def _config_of_command(command: str) -> dict:
    """The config.json that the recorded ``pyrovamp train`` command gives (parsed as the command
    line parses it)."""
    from pyrovamp.cli.app import build_parser
    from pyrovamp.workflow.settings import RUN_DEFAULTS

    argv = shlex.split(command)
    assert argv[:2] == ["pyrovamp", "train"]
    args = build_parser().parse_args(argv[1:])
    options = {k: v for k, v in vars(args).items() if k in RUN_DEFAULTS}
    if isinstance(options.get("logger"), list) and len(options["logger"]) == 1:
        options["logger"] = options["logger"][0]
    return new_run_config(options)


def test_the_best_stages_write_exactly_the_settings_of_the_recorded_runs():
    cell = {"dataset": "static_mnist", "model": "vae", "prior": "vampprior"}
    best = RECIPES["best"]
    assert [s.name for s in best.stages] == ["elbo", "iwae"] and best.version == 1
    assert [s.init_from_previous for s in best.stages] == [False, True]
    stage1 = new_run_config({**cell, **best.stages[0].options})
    assert stage1 == STAGE1_STATIC_MNIST_VAE
    stage2 = new_run_config({**cell, **best.stages[1].options})
    assert stage2 == {**STAGE1_STATIC_MNIST_VAE, **STAGE2_CHANGES}
    paper = RECIPES["paper"]
    assert [s.options for s in paper.stages] == [{"preset": "paper", "test_every": 25}]
    # the folders: paper in the cell's own folder (the table's folders before recipes)
    assert paper.stage_folder("T/c", 1).as_posix() == "T/c" and paper.label == "paper v1"
    assert [best.stage_folder("T/c", i).as_posix() for i in (1, 2)] == [
        "T/c.best/1-elbo",
        "T/c.best/2-iwae",
    ]
    assert best.label == "best v1 (2 stages)" and best.models == ("vae", "hvae")
    # the command line offers every recipe
    from pyrovamp.cli.app import build_parser

    parser = build_parser()
    assert parser.parse_args(["reproduce", "table1", "--out", "x"]).recipe == "paper"
    for name in RECIPES:
        assert parser.parse_args(["reproduce", "table1", "--out", "x", "--recipe", name]).recipe
    # a recipe is checked when it is made
    with pytest.raises(ValueError, match="unknown settings"):
        Stage("s", {"dropuot": 0.1})
    with pytest.raises(ValueError, match=r"\['init_from'\] are set per cell"):
        Stage("s", {"init_from": "x"})
    with pytest.raises(ValueError, match="its first stage has no previous stage"):
        Recipe("r", 1, "d", (Stage("s", {}, init_from_previous=True),))
    with pytest.raises(ValueError, match="version must be an integer >= 1"):
        Recipe("r", 0, "d", (Stage("s", {}),))


def test_best_runs_its_stages_as_one_resumable_command(tmp_path, monkeypatch):
    import pyrovamp.workflow.experiment as experiment
    from pyrovamp.training import read_checkpoint

    started = []  # the parameters each training starts from
    fit = experiment.fit

    def spy(model, *args, **kwargs):
        started.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(experiment, "fit", spy)
    out = tmp_path / "table"
    s1, s2 = out / f"{CELL}.best" / "1-elbo", out / f"{CELL}.best" / "2-iwae"
    tiny = _args(out, "--recipe", "best", "--epochs", "2", "--max-minutes", "0.00001", *SMOKE)

    # call 1: stage 1 trains one epoch, then the time limit stops it; stage 2 waits
    assert main(tiny) == 0
    assert read_cell(s1).state == "unfinished" and read_cell(s1).epochs == 1
    assert not s2.exists() and not (out / CELL).exists()
    recorded = json.loads((s1 / "recipe.json").read_text())
    assert {k: recorded[k] for k in ("recipe", "version", "stage", "index")} == {
        "recipe": "best",
        "version": 1,
        "stage": "elbo",
        "index": 1,
    }
    config1 = json.loads((s1 / "config.json").read_text())
    assert _config_of_command(recorded["command"]) == {**config1, "max_minutes": None}
    assert config1["dropout"] == 0.1 and config1["val_bound"] == "iwae"
    row = _row((out / "table1.md").read_text())
    assert "| best v1 (2 stages): elbo unfinished (1 epochs), iwae not started |" in row
    assert "stage 1 of 2 (elbo): not converged (unfinished" in row

    # call 2: stage 1 resumed, finishes and is evaluated; the time is spent: stage 2 waits
    assert main(tiny) == 0
    st1 = read_cell(s1)
    assert st1.state == "finished" and st1.epochs == 2 and not s2.exists()
    value1 = st1.metrics["test_log_likelihood"]
    row = _row((out / "table1.md").read_text())
    assert f"| best v1 (2 stages): elbo {value1:.2f}, iwae not started |" in row
    assert f"| {value1:.2f} ± " in row and "after stage 1 (elbo)" in row
    assert "stage 2 of 2 (iwae): not started" in row
    assert len(started) == 2

    # call 3: stage 2 starts from stage 1's parameters and, with time, finishes
    assert main(_args(out, "--recipe", "best", "--epochs", "2", *SMOKE)) == 0
    config2 = json.loads((s2 / "config.json").read_text())
    assert config2["init_from"] == str(s1.resolve())
    assert {k: config2[k] for k in STAGE2_CHANGES} == STAGE2_CHANGES
    same = set(config1) - {*STAGE2_CHANGES, "init_from", "max_minutes"}  # the rest: stage 1's
    assert {k: config2[k] for k in same} == {k: config1[k] for k in same}
    assert len(started) == 3
    stage1_params = read_checkpoint(s1 / "model.pt")["pyrovamp"]["scored_state"]
    assert started[2].keys() == stage1_params.keys()
    assert all(torch.equal(started[2][k], stage1_params[k]) for k in stage1_params)
    assert not all(torch.equal(started[0][k], stage1_params[k]) for k in stage1_params)
    recorded2 = json.loads((s2 / "recipe.json").read_text())
    assert recorded2["stage"] == "iwae" and recorded2["index"] == 2
    assert f"--init-from {s1}" in recorded2["command"]
    assert _config_of_command(recorded2["command"]) == {**config2, "max_minutes": None}
    st2 = read_cell(s2)
    assert st2.state == "finished" and st2.epochs == 2
    value2 = st2.metrics["test_log_likelihood"]
    table = (out / "table1.md").read_text()
    row = _row(table)
    # the cell's value is the last stage's; each stage's own value beside the recipe
    assert f"| best v1 (2 stages): elbo {value1:.2f}, iwae {value2:.2f} |" in row
    assert f"| {value2:.2f} ± " in row and "after stage" not in row
    assert "| 2 + 2 = 4 |" in row and "stage 1 of" not in row and "stage 2 of" not in row
    total = _fmt_minutes(st1.train_seconds + st2.train_seconds)
    assert row.split(" | ")[9].startswith(f"{total} (elbo {_fmt_minutes(st1.train_seconds)} + ")
    for command in (recorded["command"], recorded2["command"]):
        assert f"`{command}`" in table

    # call 4: every stage finished: nothing is trained again
    stamps = [(s / "model.pt").stat().st_mtime_ns for s in (s1, s2)]
    assert main(tiny) == 0
    assert [(s / "model.pt").stat().st_mtime_ns for s in (s1, s2)] == stamps
    assert len(started) == 3


def test_a_stage_that_finishes_leaves_the_time_left_to_the_next_one(tmp_path, monkeypatch):
    import pyrovamp.workflow.reproduce as reproduce

    budgets = []
    train_run = reproduce.train_run

    def spy(options, out, **kwargs):
        budgets.append(options["max_minutes"])
        return train_run(options, out, **kwargs)

    monkeypatch.setattr(reproduce, "train_run", spy)
    lines = []
    reproduce_table1(
        tmp_path / "t",
        ("digits",),
        ("vae",),
        ("standard",),
        recipe="best",
        max_minutes=30,
        max_points=32,
        num_samples=2,
        epochs=1,
        log=lines.append,
    )
    s2 = tmp_path / "t" / "digits_vae_standard.best" / "2-iwae"
    assert read_cell(s2).state == "finished"  # both stages in one call
    assert budgets[0] == 30 and 0 < budgets[1] < 30
    assert sum("started" in line for line in lines) == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--recipe", "fastest"], "invalid choice: 'fastest'"),
        (["--recipe", "best", "--models", "vae", "convhvae"], "not designed for convhvae"),
    ],
)
def test_bad_recipes_are_one_line_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "table"
    try:
        status = main(["reproduce", "table1", "--out", str(out), *extra])
    except SystemExit as e:  # argparse's errors
        status = e.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and message in lines[0], lines
    assert not out.exists()
    with pytest.raises(ValueError, match="recipe must be one of paper, best, got 'fastest'"):
        reproduce_table1(out, recipe="fastest")
    assert not out.exists()


@pytest.mark.parametrize(
    "recipe, folder, written",
    [
        ("best", f"{CELL}.best/2-iwae", {"recipe": "best", "version": 2, "stage": "iwae"}),
        ("best", f"{CELL}.best/1-elbo", {"recipe": "paper", "version": 1, "stage": "paper"}),
        ("paper", CELL, {"recipe": "best", "version": 1, "stage": "elbo"}),
    ],
)
def test_a_stage_folder_of_another_recipe_or_version_is_refused(
    tmp_path, capsys, recipe, folder, written
):
    out = tmp_path / "table"
    (out / folder).mkdir(parents=True)
    (out / folder / "recipe.json").write_text(json.dumps({**written, "index": 1}))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(_args(out, "--recipe", recipe, "--epochs", "1", *SMOKE)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{out / folder} was trained by recipe" in lines[0], lines
    assert f"recipe {written['recipe']} v{written['version']}" in lines[0]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing trained


def test_a_stopped_stage_names_its_recipe_and_starts_again(tmp_path, monkeypatch, capsys):
    """A SIGTERM/Ctrl-C in a stage's first epoch: the command stops as it does without recipes;
    the folder already names its recipe and is started anew by the next call."""
    import pyrovamp.workflow.reproduce as reproduce

    def stopped(options, out, **kwargs):
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps(new_run_config(options)))
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "train_run", stopped)
    out = tmp_path / "table"
    assert main(_args(out, "--recipe", "best", "--epochs", "1", *SMOKE)) == 130
    assert "run the same pyrovamp reproduce command to continue" in capsys.readouterr().err
    s1 = out / f"{CELL}.best" / "1-elbo"
    assert json.loads((s1 / "recipe.json").read_text())["recipe"] == "best"
    assert read_cell(s1).state == "leftovers"  # killed in its first epoch: started anew
    assert not (s1.parent / "2-iwae").exists()


def test_a_failed_stage_stops_its_cell_and_the_next_stage_waits(tmp_path, monkeypatch):
    """Without a time limit a cell's stages run on in one call, but only while each finishes: a
    stage that fails (bad data, a non-finite loss) is reported and the next one does not start."""
    import pyrovamp.workflow.reproduce as reproduce

    calls = []

    def failing(options, out, **kwargs):
        calls.append(out)
        raise ValueError("--data-root: no data here")

    monkeypatch.setattr(reproduce, "train_run", failing)
    out = tmp_path / "table"
    assert main(_args(out, "--recipe", "best", "--epochs", "1", *SMOKE)) == 1  # a cell failed
    assert calls == [out / f"{CELL}.best" / "1-elbo"]
    row = _row((out / "table1.md").read_text())
    assert "stage 1 of 2 (elbo): not started; the last piece failed (exit status 2" in row
