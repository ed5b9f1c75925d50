import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyrovamp.cli import main


def _run(args):
    return subprocess.run(
        [sys.executable, "-m", "pyrovamp.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_train_writes_a_complete_run_folder_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--prior",
        "gtm",
        "--epochs",
        "2",
        "--num-samples",
        "20",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "IS log-likelihood" not in capsys.readouterr().err  # --no-progress: no bars
    files = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "metrics.json",
        "checkpoint.ckpt",
        "model.pt",
        "history.csv",
        "latent.png",
        "samples.png",
        "reconstructions.png",
        "loss.png",
    } <= files
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_log_likelihood"] < 0 and m["test_elbo"] <= m["test_log_likelihood"] + 1.0
    assert m["num_samples"] == 20 and m["epochs_trained"] == 2 and m["train_seconds"] > 0
    assert 0.0 <= m["share_k_above_threshold"] <= 1.0 and m["median_ess"] > 0
    assert m["khat_threshold"] == pytest.approx(1 - 1 / math.log10(20))
    assert m["test_log_likelihood_psis"] <= m["test_log_likelihood"] + 0.5
    per_image = np.load(out / "log_likelihood_is.npz")  # the values behind the mean, as --method is
    assert per_image["log_likelihood"].shape == (m["num_test_points"],)
    assert per_image["log_likelihood"].mean() == pytest.approx(m["test_log_likelihood"], abs=1e-9)
    assert per_image["pareto_k"].shape == per_image["ess"].shape == (m["num_test_points"],)
    cfg = json.loads((out / "config.json").read_text())
    assert (
        cfg["latent_dim"],
        cfg["num_components"],
        cfg["hidden_dim"],
        cfg["optimizer"],
        cfg["batch_size"],
        cfg["patience"],
    ) == (2, 16, 256, "adamax", 64, 50)

    assert (
        main(["train", "--resume", "--epochs", "3", "--num-samples", "20", "--out", str(out)]) == 0
    )
    # with progress bars, the final evaluation's over the 447 test points too
    assert "IS log-likelihood (S=20)" in capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs_trained"] == 3
    assert (out / "history.csv").read_text().count("\n") == 4  # header + 3 epochs
    # config.json records the new epochs, so that the next piece resumes without --epochs
    assert json.loads((out / "config.json").read_text()) == {**cfg, "epochs": 3}
    assert main(["train", "--resume", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs_trained"] == 3

    assert main(["evaluate", str(out), "--num-samples", "10"]) == 0
    assert "447/447" in capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_samples"] == 10
    per_image = np.load(out / "log_likelihood_is.npz")["log_likelihood"]
    assert per_image.mean() == pytest.approx(m["test_log_likelihood"], abs=1e-9)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--prior", "nope"], "invalid choice: 'nope'"),
        (["train", "--dataset", "cifar"], "unknown data set 'cifar'; expected one of digits"),
        (["train", "--latent-dim", "0"], "--latent-dim must be at least 1, got 0"),
        (
            ["train", "--dataset", "static_mnist", "--data-root", "/no/such/folder"],
            "is not a folder",
        ),
        (["train", "--prior", "gtm", "--num-components", "10"], "square number of components"),
        (["train", "--prior", "flow", "--latent-dim", "1"], "latent_dim >= 2"),
        (["train", "--prior", "flow", "--flow", "glow"], "invalid choice: 'glow'"),
        (["train", "--prior", "mog", "--flow", "nsf"], "--flow applies to --prior flow"),
        (
            ["train", "--prior", "gtm", "--pseudo-input-parameterization", "clamp"],
            "--pseudo-input-parameterization applies to --prior vampprior",
        ),
        (
            ["train", "--model", "convhvae", "--dropout", "0.2"],
            "--dropout applies to --model vae and hvae, not --model convhvae",
        ),
        (["train", "--model", "hvae", "--dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
        (["train", "--lr-decay", "1.5"], "--lr-decay must be in (0, 1), got 1.5"),
        (["train", "--lr-patience", "0"], "--lr-patience must be at least 1"),
        (["train", "--lr-patience", "5"], "--lr-patience applies with --lr-decay F"),
        (
            ["train", "--dataset", "static_mnist", "--val-bound", "iwae"],
            "--val-bound iwae needs --val-num-samples K >= 2 (the paper preset has 1)",
        ),
        (["train", "--loss", "iwae"], "--loss iwae needs --num-particles K >= 2, got 1"),
        (["train", "--loss", "iwae_dreg"], "--loss iwae_dreg needs --num-particles K >= 2, got 1"),
        (["train", "--num-particles", "0"], "--num-particles must be at least 1"),
        (["train", "--lr", "inf"], "--lr must be a finite positive number, got inf"),
        (["train", "--epochs", "two"], "--epochs must be an integer, got 'two'"),
        (["train", "--warmup-epochs", "-1"], "--warmup-epochs must be >= 0, got -1"),
        (["train", "--seed", "-1"], "--seed must be an integer >= 0, got -1"),
        (
            ["train", "--prior", "vampprior", "--grid-side", "3"],
            "--grid-side applies to --prior gtm and gtm-vampprior, not --prior vampprior",
        ),
        (
            ["train", "--init-from", "/no/such/run"],
            "--init-from /no/such/run: neither a finished run folder (no model.pt there), a "
            "pretrained folder (no model.safetensors and config.json), a model of the zoo",
        ),
        (["evaluate", "/no/such/run"], "not a run folder"),
        (["evaluate", "digits-vae-standard", "--out", ""], "--out must name a folder, got ''"),
        (
            ["evaluate", "digits-vae-standard", "--method", "ais", "--num-samples", "9"],
            "--num-samples applies to --method is",
        ),
        (["evaluate", "digits-vae-standard", "--num-chains", "2"], "--num-chains apply to"),
        (["compare", "a", "b", "--out", " "], "--out must name a folder, got ' '"),
        (["reproduce", "table1", "--out", ""], "--out must name a folder"),
        (["train", "--data-root", ""], "--data-root must name a folder"),
        (
            ["train", "--prior", "mog", "--pseudo-inputs", "data"],
            "--pseudo-inputs data applies to --prior vampprior, not --prior mog",
        ),
        (
            ["train", "--prior", "gtm", "--grid-side", "3", "--num-components", "16"],
            "--num-components 16 and --grid-side 3 disagree",
        ),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys, args, message):
    """In this process (a child process per case costs seconds of imports; the child-process
    path is tested by the resume tests below)."""
    out = tmp_path / "never"
    full = args + (["--out", str(out)] if args[0] == "train" else [])
    try:
        status = main(full)
    except SystemExit as e:  # argparse's usage errors
        status = e.code
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists()


def test_train_refuses_an_empty_out_instead_of_writing_into_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", "", "--epochs", "1"])
    assert e.value.code == 2 and "--out must name a folder, got ''" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--epochs", "1", "--max-points", "30"],
        ["reproduce", "table1", "--datasets", "digits"],
        ["compare", "RUN", "RUN2"],
    ],
)
def test_an_unusable_out_folder_is_one_line_naming_it(tmp_path, capsys, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    if command[0] == "compare":  # two (fake) run folders, so that --out is what fails
        runs = []
        for name in ("r1", "r2"):
            (tmp_path / name).mkdir()
            for f in ("config.json", "model.pt"):
                (tmp_path / name / f).write_text("{}")
            runs.append(str(tmp_path / name))
        command = ["compare"] + runs
    for out, message in (
        (blocker, "exists and is not a folder"),
        (blocker / "sub", "cannot create the folder"),
    ):
        assert main(command + ["--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--out {out}" in err[0] and message in err[0], err
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("flow", ["nsf", None])
def test_flow_choice_is_stored_and_rebuilt(tmp_path, flow):
    import zuko

    from pyrovamp.workflow.runs import load_run

    out = tmp_path / "run"
    args = [
        "train",
        "--prior",
        "flow",
        "--epochs",
        "1",
        "--max-points",
        "30",
        "--num-samples",
        "5",
        "--no-progress",
        "--out",
        str(out),
    ] + (["--flow", flow] if flow else [])
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["flow"] == (flow or "realnvp")
    model, *_ = load_run(out)
    assert isinstance(model.prior.flow, zuko.flows.NSF if flow else zuko.flows.RealNVP)


def test_an_existing_run_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.ckpt").write_bytes(b"precious")
    r = _run(["train", "--epochs", "1", "--out", str(out)])
    assert r.returncode == 2 and "not empty" in r.stderr
    assert (out / "checkpoint.ckpt").read_bytes() == b"precious"
    r = _run(["train", "--resume", "--out", str(tmp_path / "missing")])
    assert r.returncode == 2 and "cannot resume" in r.stderr


def test_static_mnist_missing_file_is_named(tmp_path):
    r = _run(
        [
            "train",
            "--dataset",
            "static_mnist",
            "--data-root",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert r.returncode == 2 and "binarized_mnist_train.amat" in r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", ["hvae", "convhvae"])
def test_hierarchical_models_train_from_the_command_line(tmp_path, model):
    out = tmp_path / model
    assert (
        main(
            [
                "train",
                "--model",
                model,
                "--prior",
                "vampprior",
                "--preset",
                "paper",
                "--latent-dim",
                "4",
                "--num-components",
                "8",
                "--hidden-dim",
                "32",
                "--epochs",
                "1",
                "--max-points",
                "64",
                "--num-samples",
                "8",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == model and set(m["active_units"]) == {"z1", "z2"}
    assert m["num_test_points"] == 64 and m["test_log_likelihood"] < 0
    cfg = json.loads((out / "config.json").read_text())
    assert (
        cfg["preset"],
        cfg["optimizer"],
        cfg["batch_size"],
        cfg["warmup_epochs"],
        cfg["weight_init"],
        cfg["pseudo_input_parameterization"],
    ) == ("paper", "adamnormgrad", 100, 100, "he", "clamp")  # the paper's code, end to end


def test_fast_preset_is_the_paper_model_with_a_larger_step_in_bf16_and_averaged_parameters(
    tmp_path,
):
    from pyrovamp.workflow.runs import PRESETS, resolve_config

    fast = resolve_config({"dataset": "static_mnist", "preset": "fast"})
    paper = resolve_config({"dataset": "static_mnist", "preset": "paper"})
    differ = {k for k in PRESETS["paper"] if fast[k] != paper[k]}
    # same networks, estimator and warm-up; the optimiser, initialisation and pseudo-inputs it was
    # measured with (Adam, PyTorch default, sigmoid)
    assert differ == {
        "batch_size",
        "lr",
        "precision",
        "ema_decay",
        "optimizer",
        "weight_init",
        "pseudo_input_parameterization",
    }
    # precision "auto": bf16-mixed where the device runs bfloat16 natively, else 32
    assert (fast["batch_size"], fast["lr"], fast["precision"], fast["ema_decay"]) == (
        200,
        1e-3,
        "auto",
        0.999,
    )
    assert paper["ema_decay"] is None
    assert fast["warmup_epochs"] == paper["warmup_epochs"] == 100
    assert paper["precision"] == "32"
    assert (
        resolve_config({"dataset": "static_mnist", "preset": "fast", "precision": "32"})[
            "precision"
        ]
        == "32"
    )  # an explicit choice wins
    assert (
        resolve_config({"dataset": "static_mnist", "preset": "fast", "ema_decay": 0})["ema_decay"]
        == 0
    )  # 0: off (None in the run's config)
    out = tmp_path / "fast"
    assert (
        main(
            [
                "train",
                "--prior",
                "standard",
                "--preset",
                "fast",
                "--latent-dim",
                "2",
                "--hidden-dim",
                "16",
                "--epochs",
                "2",
                "--num-samples",
                "8",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["preset"], cfg["precision"], cfg["batch_size"], cfg["ema_decay"]) == (
        "fast",
        "auto",
        200,
        0.999,
    )
    # metrics.json says what it trained in: "auto" resolved on this machine
    from pyrovamp.training import cpu_has_native_bf16

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == ("bf16-mixed" if cpu_has_native_bf16() else "32")
    assert (metrics["precision_requested"], metrics["accelerator"]) == ("auto", "cpu")


def test_validation_options_reach_training(tmp_path, monkeypatch):
    from pyrovamp.data import load_dataset, spread_subset
    from pyrovamp.workflow import experiment

    seen = {}
    real_fit = experiment.fit

    def spy(model, train_data, validation_data, config, **kw):
        seen.update(validation=validation_data, config=config)
        return real_fit(model, train_data, validation_data, config, **kw)

    monkeypatch.setattr(experiment, "fit", spy)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--epochs",
                "2",
                "--num-samples",
                "5",
                "--no-progress",
                "--val-bound",
                "iwae",
                "--val-num-samples",
                "4",
                "--val-points",
                "30",
                "--lr-decay",
                "0.5",
                "--lr-patience",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert torch.equal(seen["validation"], spread_subset(load_dataset("digits").validation, 30))
    c = seen["config"]
    assert (c.val_bound, c.val_num_samples, c.lr_decay, c.lr_patience, c.monitor) == (
        "iwae",
        4,
        0.5,
        3,
        "val_iwae",
    )
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["val_bound"], cfg["val_points"], cfg["lr_decay"]) == ("iwae", 30, 0.5)
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert {"lr", "val_iwae"} <= set(header)


def test_grey_images_report_nll_per_pixel(tmp_path, monkeypatch):
    import numpy as np
    from scipy.io import savemat

    from pyrovamp.data import datasets

    monkeypatch.setattr(datasets, "SHA256", {})  # a small file, not the canonical one

    ff = np.random.default_rng(0).integers(0, 256, (560, 60)).astype(np.uint8)
    savemat(tmp_path / "frey_rawface.mat", {"ff": ff})
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "frey_faces",
                "--data-root",
                str(tmp_path),
                "--prior",
                "standard",
                "--latent-dim",
                "3",
                "--hidden-dim",
                "16",
                "--epochs",
                "2",
                "--num-samples",
                "10",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["unit_per_pixel"] == "nats per pixel"
    assert m["test_nll_per_pixel"] == pytest.approx(m["test_nll"] / 560)


def test_resume_refuses_changed_settings_and_corrupt_checkpoints(tmp_path):
    out = tmp_path / "run"
    base = [
        "train",
        "--prior",
        "standard",
        "--max-points",
        "64",
        "--num-samples",
        "5",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(base + ["--epochs", "1"]) == 0
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    r = _run(base + ["--epochs", "2", "--resume", "--optimizer", "adam"])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "--optimizer adam differs" in lines[0]
    r = _run(base + ["--epochs", "2", "--resume", "--lr", "0.1"])
    assert r.returncode == 2 and "--lr 0.1 differs" in r.stderr
    (out / "checkpoint.ckpt").write_bytes(files["checkpoint.ckpt"][:1000])  # truncated
    r = _run(base + ["--epochs", "2", "--resume"])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "checkpoint.ckpt" in lines[0]
    assert "Traceback" not in r.stderr
    for name, data in files.items():  # nothing else in the run folder was touched
        if name != "checkpoint.ckpt":
            assert (out / name).read_bytes() == data, name


def test_resume_restarts_a_run_without_checkpoint_and_refuses_an_edited_config(tmp_path, capsys):
    """A run killed (or diverged) before its first checkpoint resumes from its config.json as a
    fresh run in the same folder, with the same result; a config.json edited to another model,
    or emptied, is refused in one line before any work."""
    base = ["train", "--prior", "vampprior", "--max-points", "64", "--num-samples", "5"]
    base += ["--epochs", "2", "--no-progress", "--out"]
    done, cut = tmp_path / "done", tmp_path / "cut"
    assert main(base + [str(done)]) == 0
    cut.mkdir()
    shutil.copy(done / "config.json", cut / "config.json")  # what a kill -9 after it leaves
    shutil.copytree(done / "logs", cut / "logs")
    assert main(base + [str(cut), "--resume"]) == 0
    m = [json.loads((d / "metrics.json").read_text()) for d in (done, cut)]
    assert m[0]["test_log_likelihood"] == m[1]["test_log_likelihood"]
    capsys.readouterr()
    config = json.loads((done / "config.json").read_text())
    for edit, message in (
        ({**config, "prior": "standard"}, "checkpoint.ckpt does not fit the model its config"),
        ({}, "config.json lacks the settings 'dataset', 'prior', 'latent_dim'"),
    ):
        (cut / "config.json").write_text(json.dumps(edit))
        before = (cut / "checkpoint.ckpt").read_bytes()
        assert main(["train", "--resume", "--out", str(cut), "--no-progress"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
        assert (cut / "checkpoint.ckpt").read_bytes() == before
    # fewer epochs than the run has done: one line before any work (Lightning's traceback before)
    (cut / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", "--out", str(cut), "--epochs", "1", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "for 1 epochs in all: it has trained 2; ask for at least 2 (--epochs)"
    ), lines


def test_evaluate_checks_the_folder_and_its_metrics_before_any_work(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["train", "--prior", "standard", "--max-points", "64", "--num-samples", "5"]
    assert main(args + ["--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    (out / "metrics.json").write_bytes(b"\xac\x00 not json")
    for argv in (["evaluate", str(out), "--no-progress"], ["train", "--resume", "--out", str(out)]):
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and f"{out / 'metrics.json'} is not a text file" in lines[0], lines
    (out / "metrics.json").write_bytes(files["metrics.json"])
    import os

    real_access = os.access
    monkeypatch.setattr(  # a read-only file system, as root sees it too
        os, "access", lambda p, mode: False if str(p) == str(out) else real_access(p, mode)
    )
    assert main(["evaluate", str(out), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "the folder is not writable" in lines[0], lines
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files


def test_max_minutes_stops_without_test_evaluation_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--prior",
        "standard",
        "--max-points",
        "64",
        "--epochs",
        "3",
        "--num-samples",
        "5",
        "--no-progress",
        "--out",
        str(out),
    ]
    r = _run(args + ["--max-minutes", "0.00001"])
    assert r.returncode == 0
    assert "stopped after 1 of 3 epochs" in r.stderr and "--resume" in r.stderr
    assert not (out / "metrics.json").exists() and (out / "checkpoint.ckpt").is_file()
    for _ in range(2):
        assert main(args + ["--resume"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs_trained"] == 3 and m["finished"]


def test_paper_preset_follows_the_papers_code_and_old_runs_keep_their_settings(tmp_path):
    """--preset paper: AdamNormGrad, He-initialised linear layers (not the prior's own networks),
    clamped pseudo-inputs; a run whose config.json predates these settings loads and resumes
    with the ones it was trained with (sigmoid pseudo-inputs)."""
    import torch

    from pyrovamp.data import load_dataset
    from pyrovamp.workflow.runs import build_model, load_run, resolve_config

    paper = resolve_config(
        {"dataset": "static_mnist", "preset": "paper", "model": "vae", "prior": "vampprior"}
    )
    assert (paper["optimizer"], paper["weight_init"], paper["pseudo_input_parameterization"]) == (
        "adamnormgrad",
        "he",
        "clamp",
    )
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model(paper, ds)
    assert model.prior.parameterization == "clamp"
    first = model.encoder.net[0].linear.weight
    assert first.std().item() == pytest.approx((2 / first.shape[1]) ** 0.5, rel=0.05)  # He
    gtm = {**paper, "prior": "gtm", "num_components": 16}
    torch.manual_seed(1)
    he = build_model(gtm, ds)
    torch.manual_seed(1)
    default = build_model({**gtm, "weight_init": "default"}, ds)
    for (n, p), q in zip(he.prior.named_parameters(), default.prior.parameters(), strict=True):
        assert torch.equal(p, q), n  # the prior's own network keeps its initialisation
    assert not torch.equal(he.decoder[0].linear.weight, default.decoder[0].linear.weight)
    with pytest.raises(ValueError, match="unknown weight_init 'xavier'"):
        build_model({**paper, "weight_init": "xavier"}, ds)
    # pseudo-inputs start as the paper's code starts them on each data set (units of the range)
    torch.manual_seed(0)
    frey = build_model({**paper, "dataset": "frey_faces"}, ds).prior.pseudo_inputs / 16.0
    assert frey.mean().item() == pytest.approx(0.5, abs=0.01)  # Frey Faces: N(0.5, 0.02)
    mnist = model.prior.pseudo_inputs / 16.0  # Digits' range is 0-16; MNIST's N(0.05, 0.01)
    assert mnist.mean().item() == pytest.approx(0.05, abs=0.01)
    assert mnist.std().item() == pytest.approx(0.01, rel=0.1)

    out = tmp_path / "old"
    assert (
        main(
            [
                "train",
                "--prior",
                "vampprior",
                "--preset",
                "paper",
                "--latent-dim",
                "2",
                "--hidden-dim",
                "8",
                "--num-components",
                "4",
                "--epochs",
                "1",
                "--num-samples",
                "4",
                "--pseudo-input-parameterization",
                "sigmoid",
                "--weight-init",
                "default",
                "--optimizer",
                "adam",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )  # as made before
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["pseudo_input_parameterization"], cfg["weight_init"]) == ("sigmoid", "default")
    for k in ("pseudo_input_parameterization", "weight_init"):  # as written before they existed
        del cfg[k]
    (out / "config.json").write_text(json.dumps(cfg))
    old = load_run(out)[0]
    assert old.prior.parameterization == "sigmoid"
    # the paper preset on the same old folder would not load: the settings must come from the run
    assert (
        main(
            [
                "train",
                "--resume",
                "--epochs",
                "2",
                "--num-samples",
                "4",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "metrics.json").read_text())["epochs_trained"] == 2


def test_init_from_fine_tunes_a_trained_run_with_the_iwae_loss(tmp_path, monkeypatch, capsys):
    from pyrovamp.training import read_checkpoint
    from pyrovamp.workflow import experiment

    first = tmp_path / "first"
    assert (
        main(["train", "--epochs", "2", "--num-samples", "5", "--no-progress", "--out", str(first)])
        == 0
    )
    trained = read_checkpoint(first / "model.pt")["pyrovamp"]["scored_state"]

    seen = {}
    real_fit = experiment.fit

    def spy(model, train_data, validation_data, config, **kw):
        seen.update(state={k: v.clone() for k, v in model.state_dict().items()}, config=config)
        return real_fit(model, train_data, validation_data, config, **kw)

    monkeypatch.setattr(experiment, "fit", spy)
    out = tmp_path / "tuned"
    assert (
        main(
            [
                "train",
                "--init-from",
                str(first),
                "--loss",
                "iwae",
                "--num-particles",
                "3",
                "--warmup-epochs",
                "0",
                "--epochs",
                "1",
                "--num-samples",
                "5",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    # training starts from the first run's parameters, not from a fresh initialisation
    assert seen["state"].keys() == trained.keys()
    assert all(torch.equal(seen["state"][k], trained[k]) for k in trained)
    assert (seen["config"].loss, seen["config"].num_particles) == ("iwae", 3)
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["init_from"], cfg["loss"], cfg["num_particles"]) == (
        str(first.resolve()),
        "iwae",
        3,
    )
    assert json.loads((out / "metrics.json").read_text())["epochs_trained"] == 1
    # a resumed fine-tuning continues from its checkpoint
    monkeypatch.chdir(tmp_path)  # the same --init-from, named relatively, is no change
    assert (
        main(
            [
                "train",
                "--resume",
                "--epochs",
                "2",
                "--num-samples",
                "5",
                "--no-progress",
                "--init-from",
                "first",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "metrics.json").read_text())["epochs_trained"] == 2
    assert (
        main(["train", "--resume", "--epochs", "3", "--init-from", str(out), "--out", str(out)])
        == 2
    )
    assert "--init-from" in capsys.readouterr().err

    # another model: one line naming the mismatched keys, and no run folder is made
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert (
        main(
            [
                "train",
                "--init-from",
                str(first),
                "--latent-dim",
                "3",
                "--no-progress",
                "--out",
                str(bad),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyrovamp train: error: --init-from: ") and len(err.splitlines()) == 1
    assert "does not fit this model: shape differs for encoder.net.4.weight" in err
    assert not bad.exists()


def test_init_from_a_pretrained_folder_or_a_zoo_name(tmp_path, monkeypatch):
    import pyrovamp as pv
    from pyrovamp.workflow import experiment

    seen = {}
    real_fit = experiment.fit

    def spy(model, train_data, validation_data, config, **kw):
        seen["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        return real_fit(model, train_data, validation_data, config, **kw)

    monkeypatch.setattr(experiment, "fit", spy)
    common = ["--epochs", "1", "--max-points", "40", "--num-samples", "3", "--no-progress"]
    zoo = pv.from_pretrained("digits-vae-standard")
    # a zoo name: training starts from the zoo's weights, and config.json records the name
    out = tmp_path / "from_zoo"
    args = ["train", "--prior", "standard", "--init-from", "digits-vae-standard", *common]
    assert main([*args, "--out", str(out)]) == 0
    assert all(torch.equal(seen["state"][k], v) for k, v in zoo.state_dict().items())
    assert json.loads((out / "config.json").read_text())["init_from"] == "digits-vae-standard"
    # resumed with the same name: no change
    resume = ["train", "--resume", "--epochs", "2", "--init-from", "digits-vae-standard"]
    assert main([*resume, "--no-progress", "--out", str(out)]) == 0
    # a pretrained folder (save_pretrained), recorded as its resolved path
    folder = tmp_path / "pre"
    zoo.save_pretrained(folder)
    out2 = tmp_path / "from_folder"
    args = ["train", "--prior", "standard", "--init-from", str(folder), *common]
    assert main([*args, "--out", str(out2)]) == 0
    assert all(torch.equal(seen["state"][k], v) for k, v in zoo.state_dict().items())
    assert json.loads((out2 / "config.json").read_text())["init_from"] == str(folder.resolve())


def test_init_from_a_bad_pretrained_source_is_one_line_naming_the_option(
    tmp_path, monkeypatch, capsys
):
    import shutil

    import pyrovamp as pv
    from pyrovamp.workflow.experiment import train_run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    common = ["--prior", "standard", "--epochs", "1", "--max-points", "40", "--no-progress"]
    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    shutil.copy(pv.PRETRAINED["digits-vae-standard"] / "model.safetensors", weights_only)
    truncated = tmp_path / "truncated"
    pv.from_pretrained("digits-vae-standard").save_pretrained(truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases = [
        (str(weights_only), "no model.safetensors and config.json"),
        (str(truncated), "is not a readable safetensors file"),
        ("someone/some-repo", "someone/some-repo"),
    ]
    for i, (source, message) in enumerate(cases):
        out = tmp_path / f"bad{i}"
        assert main(["train", *common, "--init-from", source, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("pyrovamp train: error: --init-from") and len(err.splitlines()) == 1
        assert message in err and not out.exists(), err
    # a zoo model into a run of another shape: the tensors that differ, and whose they are
    out = tmp_path / "other"
    args = ["train", *common, "--latent-dim", "3", "--init-from", "digits-vae-standard"]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another model than this run's" in err, err
    assert "size mismatch for encoder" in err and not out.exists()
    # the library face takes a path object as the command line takes a string
    with pytest.raises(ValueError, match="^--init-from .*: neither a finished run folder"):
        train_run({"init_from": weights_only, "max_points": 40}, tmp_path / "api")


def test_the_parser_is_light_and_the_library_never_imports_the_command_line():
    import ast
    from pathlib import Path

    import pyrovamp.workflow

    code = (
        "import sys, pyrovamp.cli; "
        "print([m for m in ('lightning', 'arviz', 'matplotlib') if m in sys.modules])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    for path in Path(pyrovamp.workflow.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("pyrovamp.cli"), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("pyrovamp.cli") for a in node.names), path


def test_train_run_and_evaluate_run_folder_are_the_library_face_of_the_commands(tmp_path):
    from pyrovamp.training.config import RESUMABLE
    from pyrovamp.workflow.experiment import evaluate_run_folder, train_run
    from pyrovamp.workflow.settings import RESUME_MAY_CHANGE, RUN_DEFAULTS

    # one list: the training settings a resume may change, and those of the run folder
    # (the command line's --no-progress stands for the training setting progress)
    assert set(RESUMABLE) - {"progress"} <= set(RESUME_MAY_CHANGE)
    assert set(RESUME_MAY_CHANGE) - {"no_progress"} <= set(RUN_DEFAULTS)
    out = tmp_path / "run"
    for options, message in (
        ({"prior": "mog", "flow": "nsf"}, "--flow applies to --prior flow"),
        ({"epochz": 1}, r"unknown settings \['epochz'\]"),
        ({"lr_decay": 2.0}, r"--lr-decay must be in \(0, 1\), got 2.0"),
    ):
        with pytest.raises(ValueError, match=message):
            train_run(options, out)
    with pytest.raises(ValueError, match="cannot resume"):
        train_run({}, out, resume=True)
    assert not out.exists()  # every check before any work
    done = train_run(
        {"prior": "standard", "epochs": 1, "max_points": 30, "num_samples": 4}, out, progress=False
    )
    assert done.out == out and done.result.epochs == 1
    stored = json.loads((out / "metrics.json").read_text())
    assert done.metrics["test_log_likelihood"] == stored["test_log_likelihood"]
    assert json.loads((out / "config.json").read_text())["test_points"] == 1000  # the defaults
    with pytest.raises(ValueError, match="--optimizer adam differs"):
        train_run({"optimizer": "adam"}, out, resume=True)
    with pytest.raises(ValueError, match="--num-samples applies to --method is"):
        evaluate_run_folder(out, method="ais", num_samples=3)
    ev = evaluate_run_folder(out, method="is", num_samples=3, progress=False)
    assert ev.metrics is None and ev.refined is None and ev.num_test_points == 30
    assert ev.estimators["num_samples"] == 3 and ev.estimators["is_epochs"] == 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished run (one epoch on 30 Digits points), for tests that only evaluate it."""
    out = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", "--prior", "standard", "--epochs", "1", "--max-points", "30"]
    assert main([*args, "--num-samples", "4", "--no-progress", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "config, message",
    [
        ({"prior": "standard", "latent_dim": 2}, r"config\.json lacks the setting 'dataset'"),
        ({"dataset": "digits"}, r"config\.json lacks the settings 'prior', 'latent_dim'"),
        ([{"dataset": "digits"}], r"config\.json must hold a JSON object, got an array"),
        ("digits", r"config\.json must hold a JSON object, got a string"),
    ],
)
def test_evaluate_on_a_damaged_config_is_one_line(tmp_path, capsys, config, message):
    import re

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))
    (run / "model.pt").write_bytes(b"")
    assert main(["evaluate", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyrovamp evaluate: error: ") and err.count("\n") == 1, err
    assert re.search(message, err) and str(run / "config.json") in err, err


def test_a_non_finite_test_metric_is_one_line_with_status_1(tiny_run, capsys, monkeypatch):
    from pyrovamp.workflow import experiment

    before = (tiny_run / "metrics.json").read_text()
    real = experiment.evaluate_run

    def nan_elbo(*args, **kwargs):
        return {**real(*args, **kwargs), "test_elbo": float("nan")}

    monkeypatch.setattr(experiment, "evaluate_run", nan_elbo)
    assert main(["evaluate", str(tiny_run), "--num-samples", "3", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite test metrics ['test_elbo']" in err, err
    assert err.startswith("pyrovamp evaluate: error: ") and "Traceback" not in err
    assert (tiny_run / "metrics.json").read_text() == before  # nothing written


def test_evaluate_keeps_what_a_concurrent_evaluation_merges_meanwhile(tiny_run, monkeypatch):
    """``pyrovamp evaluate RUN`` (all metrics anew) while ``pyrovamp evaluate RUN --method ais``
    finishes: the AIS keys merged during the first one's evaluation stay in metrics.json."""
    from pyrovamp.workflow import experiment
    from pyrovamp.workflow.estimates import merge_metrics

    real = experiment.evaluate_run

    def with_a_concurrent_merge(*args, **kwargs):
        metrics = real(*args, **kwargs)
        merge_metrics(tiny_run / "metrics.json", {"test_log_likelihood_ais": -1.5, "ais_epochs": 1})
        return metrics

    monkeypatch.setattr(experiment, "evaluate_run", with_a_concurrent_merge)
    assert main(["evaluate", str(tiny_run), "--num-samples", "3", "--no-progress"]) == 0
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["test_log_likelihood_ais"] == -1.5 and m["num_samples"] == 3
    assert m["test_log_likelihood"] < 0 and m["epochs_trained"] == 1


def test_a_resume_records_the_runs_changes_only_and_a_refused_one_writes_nothing(tmp_path):
    """config.json takes a resumed piece's --epochs (the next piece resumes with it), not its
    machine's options or time budget; a piece refused by the checkpoint's own settings leaves the
    file as it was; a run trained without parameter averaging (--ema-decay 0) resumes as such."""
    out = tmp_path / "run"
    args = ["train", "--epochs", "1", "--max-points", "60", "--num-samples", "5", "--no-progress"]
    assert main([*args, "--ema-decay", "0", "--out", str(out)]) == 0
    first = json.loads((out / "config.json").read_text())
    assert first["ema_decay"] is None
    piece = ["train", "--resume", "--no-progress", "--out", str(out)]
    assert main([*piece, "--epochs", "2", "--max-minutes", "30", "--accelerator", "cpu"]) == 0
    second = json.loads((out / "config.json").read_text())
    assert second == {**first, "epochs": 2}
    assert list(second) == list(first)  # in the file's order
    ckpt = out / "checkpoint.ckpt"
    state = torch.load(ckpt, weights_only=True)
    state["pyrovamp"]["config"]["lr"] = 0.5  # the checkpoint says another learning rate
    torch.save(state, ckpt)
    before = (out / "config.json").read_bytes()
    assert main([*piece, "--epochs", "3"]) == 2
    assert (out / "config.json").read_bytes() == before


def test_a_run_stopped_before_model_pt_is_told_to_resume_not_called_no_run(
    tiny_run, tmp_path, capsys
):
    # a run interrupted in its first piece has checkpoint.ckpt but no model.pt: before, evaluate
    # and compare said "is not a run folder"
    import shutil

    run = tmp_path / "stopped"
    shutil.copytree(tiny_run, run)
    (run / "model.pt").unlink()
    assert (run / "checkpoint.ckpt").is_file()
    said = f"{run} has no model.pt yet: its training stopped before the end of its first piece; "
    assert main(["evaluate", str(run), "--no-progress"]) == 2
    assert said in capsys.readouterr().err
    assert main(["compare", str(tiny_run), str(run), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert said in err and f"pyrovamp train --resume --out {run}" in err
    assert not (tmp_path / "c").exists()


def test_compare_checks_data_root_and_train_refuses_an_empty_dataset(tiny_run, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    argv = ["compare", str(tiny_run), "digits-vae-standard", "--out", str(tmp_path / "c")]
    assert main([*argv, "--data-root", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"pyrovamp compare: error: --data-root {missing} is not a folder"
    )
    assert not (tmp_path / "c").exists()
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "", "--out", str(tmp_path / "r")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --dataset: dataset must name a data set or a path, got ''" in err
    assert not (tmp_path / "r").exists()
