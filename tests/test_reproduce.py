"""``pyrovamp reproduce table1``: cells trained through ``pyrovamp train``, resumed in pieces,
skipped when finished, listed as needing a GPU on a CPU-only machine; ``table1.md`` rewritten."""

import json

import numpy as np
import pytest
import torch

from pyrovamp.cli import main
from pyrovamp.workflow.reproduce import PAPER_TABLE, read_cell

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


@pytest.fixture
def static_mnist(tmp_path, monkeypatch):
    """Files in the canonical static-MNIST format (one image per line, 784 values 0/1); small
    ones, so the canonical files' digests are not checked."""
    from pyrovamp.data import datasets

    monkeypatch.setattr(datasets, "SHA256", {})
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.05, 0.95, 784)
    for split, n in (("train", 80), ("valid", 70), ("test", 70)):
        rows = (rng.uniform(size=(n, 784)) < probs).astype(int)
        (root / f"binarized_mnist_{split}.amat").write_text(
            "\n".join(" ".join(map(str, r)) for r in rows) + "\n"
        )
    return root


def _row(table: str, cell: str) -> str:
    dataset, model, prior = cell.split("_")[:-2], cell.split("_")[-2], cell.split("_")[-1]
    start = f"| {'_'.join(dataset)} | {model} | {prior} |"
    rows = [line for line in table.splitlines() if line.startswith(start)]
    assert len(rows) == 1, (cell, table)
    return rows[0]


def test_cells_resume_in_pieces_then_are_skipped_and_the_table_is_rewritten(tmp_path, static_mnist):
    out = tmp_path / "table"
    args = [
        "reproduce",
        "table1",
        "--out",
        str(out),
        "--data-root",
        str(static_mnist),
        "--models",
        "vae",
        "hvae",
        "--priors",
        "standard",
        "--max-points",
        "64",
        "--num-samples",
        "4",
        "--epochs",
        "2",
        "--max-minutes",
        "0.00001",
        "--no-progress",
    ]
    cells = ["static_mnist_vae_standard", "static_mnist_hvae_standard"]
    # first call: one epoch per cell, then the time limit stops it; no test evaluation yet
    assert main(args) == 0
    table = (out / "table1.md").read_text()
    for cell in cells:
        st = read_cell(out / cell)
        assert st.state == "unfinished" and st.epochs == 1
        assert not (out / cell / "metrics.json").exists()
        row = _row(table, cell)
        assert "not converged (unfinished" in row and "| 1 |" in row
        assert json.loads((out / cell / "config.json").read_text())["preset"] == "paper"
        # the paper recipe: one stage in the cell's own folder, named in recipe.json and the row
        recipe = json.loads((out / cell / "recipe.json").read_text())
        assert (recipe["recipe"], recipe["version"], recipe["stage"]) == ("paper", 1, "paper")
        assert "--preset paper" in recipe["command"] and "--test-every 25" in recipe["command"]
        assert row.split(" | ")[3] == "paper v1"  # the recipe column
        assert f"- {cell} (paper v1, stage 1, paper): `{recipe['command']}`" in table
    assert "| -88.56 |" in _row(table, cells[0]) and "| -86.05 |" in _row(table, cells[1])
    first = (out / "table1.md").stat().st_mtime_ns

    # an unfinished cell evaluated as it stands (pyrovamp evaluate --method is / ais): the table
    # shows the estimates of its current parameters, with the epochs they were trained for
    from pyrovamp.workflow.reproduce import write_table

    assert main(["evaluate", str(out / cells[0]), "--method", "is", "--num-samples", "4"]) == 0
    assert (
        main(
            [
                "evaluate",
                str(out / cells[0]),
                "--method",
                "ais",
                "--num-chains",
                "2",
                "--num-steps",
                "3",
            ]
        )
        == 0
    )
    m = json.loads((out / cells[0] / "metrics.json").read_text())
    assert m["is_epochs"] == 1 and m["ais_epochs"] == 1
    key = ("static_mnist", "vae", "standard")
    (tmp_path / "t").mkdir()
    row = _row(
        write_table(tmp_path / "t", {key: read_cell(out / cells[0])}, {}).read_text(), cells[0]
    )
    assert f"{m['test_log_likelihood']:.2f}" in row and "after 1 epochs" in row
    assert f"{m['test_log_likelihood_ais']:.2f} (2 chains x 3 steps" in row
    assert "not converged (unfinished" in row
    (out / cells[0] / "metrics.json").write_text(json.dumps({**m, "is_epochs": 0, "ais_epochs": 0}))
    row = _row(
        write_table(tmp_path / "t", {key: read_cell(out / cells[0])}, {}).read_text(), cells[0]
    )  # estimates of an older state are not shown as the cell's
    assert f"{m['test_log_likelihood']:.2f}" not in row and "after" not in row
    (out / cells[0] / "metrics.json").unlink()
    # a cell folder from before recipes (no recipe.json) continues as a paper cell
    (out / cells[1] / "recipe.json").unlink()

    # second call: resumed (--resume), reaches the 2 epochs, evaluates
    assert main(args) == 0
    assert json.loads((out / cells[1] / "recipe.json").read_text())["recipe"] == "paper"
    table = (out / "table1.md").read_text()
    for cell in cells:
        st = read_cell(out / cell)
        assert st.state == "finished" and st.epochs == 2
        m = json.loads((out / cell / "metrics.json").read_text())
        assert m["epochs_trained"] == 2 and m["num_samples"] == 4 and m["num_test_points"] == 64
        row = _row(table, cell)
        assert f"{m['test_log_likelihood']:.2f}" in row and "S=4, 64 test images" in row
        paper = PAPER_TABLE[("static_mnist", cell.split("_")[2], "standard")][0]
        assert f"{m['test_log_likelihood'] - paper:+.2f}" in row
        assert "not converged (the epoch limit" in row  # early stopping has not fired
        pieces = json.loads((out / cell / "reproduce.json").read_text())["pieces"]
        assert [p["exit_status"] for p in pieces] == [0, 0] and "cores" in pieces[0]["hardware"]
        assert pieces[0]["hardware"] in row
    history = (out / cells[0] / "history.csv").read_text()
    assert history.count("\n") == 3  # header + 2 epochs: continued, not restarted

    # third call: both cells finished, nothing is trained again, the table is written anew
    stamps = {c: (out / c / "model.pt").stat().st_mtime_ns for c in cells}
    assert main(args) == 0
    assert {c: (out / c / "model.pt").stat().st_mtime_ns for c in cells} == stamps
    for cell in cells:  # no piece was run (not even one refused by pyrovamp train)
        pieces = json.loads((out / cell / "reproduce.json").read_text())["pieces"]
        assert len(pieces) == 2
    assert (out / "table1.md").stat().st_mtime_ns > first
    assert (out / "table1.md").read_text().count("S=4, 64 test images") == 2
    # a cell's settings that differ from the paper preset stand in its row
    assert "trained with epochs 2 (paper preset: 2000)" in _row(
        (out / "table1.md").read_text(), cells[0]
    )


def test_preset_differences_name_what_a_cell_was_trained_with():
    from pyrovamp.workflow.reproduce import preset_differences
    from pyrovamp.workflow.runs import PRESETS

    paper = {**PRESETS["paper"], "prior": "vampprior", "model": "hvae", "dataset": "static_mnist"}
    assert preset_differences(paper) == []
    old = {
        k: v
        for k, v in paper.items()  # a config.json written before these settings existed
        if k not in ("weight_init", "pseudo_input_parameterization")
    }
    old["optimizer"], old["logvar_bounds"] = "adam", [-6.0, 2.0]  # JSON lists equal tuples
    assert preset_differences(old) == [
        "optimizer adam (paper preset: adamnormgrad)",
        "weight_init default (paper preset: he)",
        "pseudo_input_parameterization sigmoid (paper preset: clamp)",
    ]
    assert preset_differences({**old, "prior": "standard"}) == [  # no pseudo-inputs to speak of
        "optimizer adam (paper preset: adamnormgrad)",
        "weight_init default (paper preset: he)",
    ]


@cpu_only
def test_convolutional_cells_need_a_gpu_on_a_cpu_only_machine(tmp_path, static_mnist, capsys):
    out = tmp_path / "table"
    assert (
        main(
            [
                "reproduce",
                "table1",
                "--out",
                str(out),
                "--data-root",
                f"static_mnist={static_mnist}",
                "--models",
                "convhvae",
                "pixelhvae",
                "--priors",
                "vampprior",
                "--no-progress",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == f"table -> {out / 'table1.md'}\n"  # the result, on stdout
    table = (out / "table1.md").read_text()
    for model, paper in (("convhvae", "-81.09"), ("pixelhvae", "-79.78")):
        assert not (out / f"static_mnist_{model}_vampprior").exists()  # nothing was trained
        row = _row(table, f"static_mnist_{model}_vampprior")
        assert "needs a GPU" in row and f"| {paper} |" in row
        command = (
            f"pyrovamp reproduce table1 --out {out} --datasets static_mnist --models {model} "
            f"--priors vampprior --accelerator gpu --devices 1 --data-root {static_mnist}"
        )
        assert f"static_mnist_{model}_vampprior: `{command}`" in table


@cpu_only
def test_a_convolutional_cell_runs_as_a_smoke_test_with_max_points(tmp_path, static_mnist):
    out = tmp_path / "table"
    assert (
        main(
            [
                "reproduce",
                "table1",
                "--out",
                str(out),
                "--data-root",
                str(static_mnist),
                "--models",
                "convhvae",
                "--priors",
                "standard",
                "--max-points",
                "32",
                "--num-samples",
                "3",
                "--epochs",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    m = json.loads((out / "static_mnist_convhvae_standard" / "metrics.json").read_text())
    assert m["model"] == "convhvae" and m["epochs_trained"] == 1
    table = (out / "table1.md").read_text()
    assert "needs a GPU" not in table and "--max-points 32" in table
    assert f"{m['test_log_likelihood']:.2f}" in _row(table, "static_mnist_convhvae_standard")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--models", "nope"], "invalid choice: 'nope'"),
        (["--data-root", "/no/such/folder"], "is not a folder"),
        (
            ["--data-root", "static-mnist=/tmp"],
            "--data-root static-mnist=/tmp: unknown data set 'static-mnist'; expected one of",
        ),
        (
            ["--data-root", "frey_faces=/tmp"],
            "--data-root frey_faces=/tmp: frey_faces is not among the data sets of the table",
        ),
    ]
    + (
        [(["--accelerator", "gpu"], "torch.cuda.is_available() is False")]
        if not torch.cuda.is_available()
        else []
    ),
)
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "table"
    try:
        status = main(["reproduce", "table1", "--out", str(out), "--models", "vae"] + extra)
    except SystemExit as e:  # argparse's errors
        status = e.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


def test_a_missing_data_file_of_a_later_cell_is_named_before_the_first_cell_trains(
    tmp_path, static_mnist, capsys, monkeypatch
):
    """The omniglot cell comes after the static-MNIST one; its missing file stops the command
    before anything trains (offline: the download fails as it does without internet)."""
    from pyrovamp.data import readers

    def offline(url, *args, **kwargs):
        raise OSError(f"no network for {url}")

    monkeypatch.setattr(readers, "_fetch", offline)
    empty = tmp_path / "omniglot"
    empty.mkdir()
    out = tmp_path / "table"
    args = ["reproduce", "table1", "--out", str(out), "--models", "vae", "--priors", "standard"]
    args += ["--datasets", "static_mnist", "omniglot", "--max-points", "16", "--epochs", "1"]
    args += ["--data-root", f"static_mnist={static_mnist}", "--data-root", f"omniglot={empty}"]
    status = main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1, lines
    assert f"omniglot: missing {empty / 'chardata.mat'}" in lines[0], lines
    assert not out.exists()


def test_learning_curve_every_n_epochs_reaches_history_loss_png_and_the_table(
    tmp_path, static_mnist
):
    import csv

    from pyrovamp.workflow.reproduce import write_table

    out = tmp_path / "table" / "static_mnist_vae_standard"
    args = [
        "train",
        "--dataset",
        "static_mnist",
        "--data-root",
        str(static_mnist),
        "--model",
        "vae",
        "--prior",
        "standard",
        "--preset",
        "paper",
        "--max-points",
        "64",
        "--num-samples",
        "4",
        "--epochs",
        "3",
        "--max-minutes",
        "0.00001",
        "--no-progress",
        "--test-every",
        "1",
        "--test-points",
        "10",
        "--test-num-samples",
        "4",
        "--out",
        str(out),
    ]
    assert main(args) == 0  # one epoch, then the time limit: an unfinished run
    assert (out / "loss.png").stat().st_size > 0  # the curve so far, before the run finishes
    # resumed with another test interval (allowed: it does not change training)
    assert main(["train", "--resume", "--out", str(out), "--test-every", "2", "--no-progress"]) == 0
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    filled = [bool(r["test_log_likelihood"]) for r in rows]
    assert filled == [True, True, False]  # epoch 1 (every 1), epoch 2 (every 2), not epoch 3
    st = read_cell(out)
    assert st.curve == [
        (int(r["epoch"]), float(r["test_log_likelihood"])) for r in rows if r["test_log_likelihood"]
    ]
    table = write_table(
        tmp_path / "table", {("static_mnist", "vae", "standard"): st}, {}
    ).read_text()
    line = next(x for x in table.splitlines() if x.startswith("- static_mnist_vae_standard"))
    assert f"1: {st.curve[0][1]:.2f}, 2: {st.curve[1][1]:.2f}" in line
    assert "(static_mnist_vae_standard/loss.png" in line and "10 test images, S=4" in line


def test_a_piece_killed_after_its_checkpoint_counts_the_checkpoints_epochs(tmp_path, static_mnist):
    """A piece killed between its last checkpoint and its model.pt: the cell's epochs come from
    the newer checkpoint.ckpt (what --resume continues from), not the older model.pt."""
    import os
    import shutil

    out = tmp_path / "static_mnist_vae_standard"
    args = [
        "train",
        "--dataset",
        "static_mnist",
        "--data-root",
        str(static_mnist),
        "--model",
        "vae",
        "--prior",
        "standard",
        "--preset",
        "paper",
        "--max-points",
        "64",
        "--num-samples",
        "4",
        "--epochs",
        "5",
        "--max-minutes",
        "0.00001",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0  # piece 1: one epoch
    kept = {n: (out / n).read_bytes() for n in ("model.pt", "history.csv")}
    assert (
        main(["train", "--resume", "--out", str(out), "--max-minutes", "0.00001", "--no-progress"])
        == 0
    )  # piece 2: a second epoch
    assert read_cell(out).epochs == 2
    for n, b in kept.items():  # as if piece 2 had been killed before writing them
        (out / n).write_bytes(b)
    t = (out / "model.pt").stat().st_mtime
    os.utime(out / "checkpoint.ckpt", (t + 5, t + 5))
    st = read_cell(out)
    assert st.state == "unfinished" and st.epochs == 2 and st.train_seconds > 0
    # a damaged newer checkpoint is left for --resume to report; the count falls back to model.pt
    shutil.copy(out / "history.csv", out / "checkpoint.ckpt")
    os.utime(out / "checkpoint.ckpt", (t + 5, t + 5))
    assert read_cell(out).epochs == 1


def test_a_failing_cell_is_reported_and_the_others_go_on(tmp_path, capsys, monkeypatch):
    from pyrovamp.data import datasets

    monkeypatch.setattr(datasets, "SHA256", {})  # the files are there: the cell fails reading them
    bad = tmp_path / "bad"
    bad.mkdir()
    for split in ("train", "valid", "test"):  # not 784 values per line
        (bad / f"binarized_mnist_{split}.amat").write_text("0 1 0\n")
    out = tmp_path / "table"
    assert (
        main(
            [
                "reproduce",
                "table1",
                "--out",
                str(out),
                "--datasets",
                "static_mnist",
                "digits",
                "--data-root",
                f"static_mnist={bad}",
                "--models",
                "vae",
                "--priors",
                "standard",
                "--max-points",
                "16",
                "--epochs",
                "1",
                "--num-samples",
                "2",
                "--no-progress",
            ]
        )
        == 1  # after every cell ran and the table was written
    )
    captured = capsys.readouterr()
    err = captured.err
    assert "pyrovamp train: error: " in err and "failed with exit status 2" in err
    assert err.strip().splitlines()[-1] == (
        "pyrovamp reproduce: error: 1 cell failed (static_mnist_vae_standard; see the messages "
        f"above); the table: {out / 'table1.md'}"
    )
    assert captured.out == ""  # the table's path is the result of a run without failures
    table = (out / "table1.md").read_text()
    assert "the last piece failed (exit status 2" in _row(table, "static_mnist_vae_standard")
    assert read_cell(out / "digits_vae_standard").state == "finished"


@pytest.mark.parametrize("damaged", ["model.pt", "config.json"])
def test_a_finished_cell_damaged_afterwards_fails_the_call_not_passes_as_skipped(
    tmp_path, capsys, damaged
):
    # before: exit 0 with "left alone" (model.pt), or "finished, skipped" with the row's smoke-test
    # label gone (config.json): a 200-point number beside the paper's as if it were the cell's
    out = tmp_path / "table"
    args = ["reproduce", "table1", "--out", str(out), "--datasets", "digits", "--models", "vae",
            "--priors", "standard", "--max-points", "16", "--epochs", "1", "--num-samples", "2",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    cell = out / "digits_vae_standard"
    assert read_cell(cell).state == "finished"
    capsys.readouterr()
    (cell / damaged).write_text("garbage")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{cell / damaged}" in err and "left alone" in err
    assert err.strip().splitlines()[-1].startswith("pyrovamp reproduce: error: 1 cell failed")
    assert (cell / damaged).read_text() == "garbage"  # the folder as it was


def test_reproduce_table1_names_an_argument_of_the_wrong_type(tmp_path):
    from pyrovamp.errors import ArgumentTypeError
    from pyrovamp.workflow.reproduce import reproduce_table1

    out = tmp_path / "table"
    for kwargs, message in (
        ({"datasets": "static_mnist"}, "datasets must be a list"),
        ({"devices": 1.5}, "devices must be a positive integer"),
        ({"max_points": "16"}, "max_points must be a positive integer or None"),
        ({"data_roots": ["/data"]}, "data_roots must be a dict"),
    ):
        with pytest.raises(ArgumentTypeError, match=message):
            reproduce_table1(out, **kwargs)
    with pytest.raises(ValueError, match="epochs must be a positive integer or None, got 0"):
        reproduce_table1(out, epochs=0)
    assert not out.exists()  # every check before any work
