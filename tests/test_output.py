"""Output that fits where it goes: progress bars only where someone watches, one line per epoch
elsewhere; SIGTERM and SIGINT stop a run with a checkpoint and a resume line; the version from
one source; experiment trackers (MLflow, W&B) offline."""

import importlib.metadata
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import pyrovamp as pv
from pyrovamp import _progress
from pyrovamp.cli import main
from pyrovamp.errors import TrainingInterrupted
from pyrovamp.training import fit
from pyrovamp.training.checkpoint import read_checkpoint

TINY = ["--max-points", "120", "--num-samples", "4"]


def _default_sigint():
    """A child of a background job inherits SIGINT ignored: give it Python's default back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*argv):
    """``python -m pyrovamp ARGV`` in a child process, output through pipes (not a terminal)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pyrovamp", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def test_the_version_has_one_source_and_both_entry_points_print_it():
    assert pv.__version__ == importlib.metadata.version("pyrovamp")
    out, _ = _cli("--version").communicate(timeout=120)
    assert out.strip() == f"pyrovamp {pv.__version__}"


def test_a_run_without_a_terminal_writes_one_line_per_epoch_and_a_summary(tmp_path, capsys):
    """Output to a file or pipe (capsys is not a terminal): no progress bar redraws, one line
    per epoch, a few lines around them."""
    epochs = 8
    out = tmp_path / "run"
    assert main(["train", "--epochs", str(epochs), *TINY, "--out", str(out)]) == 0
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "\r" not in text
    lines = text.splitlines()
    per_epoch = [ln for ln in lines if re.match(rf"epoch \d+/{epochs}: train loss ", ln)]
    assert len(per_epoch) == epochs
    assert len(lines) <= epochs + 8, lines
    assert "val_elbo" in per_epoch[-1] and per_epoch[-1].endswith(" s")


def test_bars_show_on_a_terminal_and_not_in_a_file(monkeypatch):
    vae = pv.VAE((4,), 2, prior="standard", hidden_dim=8)
    x = torch.bernoulli(torch.full((40, 4), 0.5, dtype=torch.float64)).float()
    opts = dict(epochs=1, batch_size=20, logger="none", patience=None)
    monkeypatch.setattr(_progress, "interactive", lambda stream=None: False)
    assert fit(vae, x, **opts).trainer.progress_bar_callback is None
    monkeypatch.setattr(_progress, "interactive", lambda stream=None: True)
    assert fit(vae, x, **opts).trainer.progress_bar_callback is not None
    assert fit(vae, x, **{**opts, "progress": False}).trainer.progress_bar_callback is None
    with pytest.raises(TypeError, match="progress must be True, False or 'auto', got 'yes'"):
        fit(vae, x, **{**opts, "progress": "yes"})


def test_estimators_write_a_few_log_lines_instead_of_a_bar_when_nobody_watches(
    monkeypatch, capsys, caplog
):
    vae = pv.VAE((4,), 2, prior="standard", hidden_dim=8).eval()
    x = torch.bernoulli(torch.full((30, 4), 0.5))
    monkeypatch.setattr(_progress, "interactive", lambda stream=None: False)
    with caplog.at_level("INFO", logger="pyrovamp.progress"):
        quiet = pv.log_likelihood(vae, x, 7, seed=0, batch_size=3, progress="auto")
    assert capsys.readouterr().err == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "pyrovamp.progress"]
    assert 1 <= len(lines) <= 3 and lines[-1].startswith("IS log-likelihood (S=7): 100%")
    monkeypatch.setattr(_progress, "interactive", lambda stream=None: True)
    shown = pv.log_likelihood(vae, x, 7, seed=0, batch_size=3, progress="auto")
    assert "30/30" in capsys.readouterr().err
    torch.testing.assert_close(quiet, shown, rtol=0, atol=0)


class _SignalAt(pv.VAE):
    """A VAE whose guide sends ``sig`` to this process at its ``at``-th call (a training step
    of a known epoch)."""

    sig = signal.SIGTERM
    at = -1
    calls = 0

    def guide(self, x=None, **kwargs):
        type(self).calls += 1
        if type(self).calls == self.at:
            os.kill(os.getpid(), self.sig)
        return super().guide(x, **kwargs)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_fit_after_the_step_with_the_checkpoint_to_resume(
    tmp_path, monkeypatch, sig
):
    """Two steps per epoch; the signal comes in epoch 3's first step: the run stops with the
    checkpoint of epoch 2, the model holding its (averaged) parameters, the caller's SIGINT
    handler back; resuming ends where the uninterrupted run ends."""
    monkeypatch.setattr(_SignalAt, "at", -1)
    x = torch.bernoulli(torch.full((40, 4), 0.3), generator=torch.Generator().manual_seed(1))
    opts = dict(epochs=5, batch_size=20, logger="none", progress=False, patience=None, seed=3)
    torch.manual_seed(0)
    whole = _SignalAt((4,), 2, prior="vampprior", num_components=3, hidden_dim=8)
    start = {k: v.clone() for k, v in whole.state_dict().items()}
    fit(whole, x, **opts)

    _SignalAt.sig, _SignalAt.at, _SignalAt.calls = sig, 5, 0
    cut = _SignalAt((4,), 2, prior="vampprior", num_components=3, hidden_dim=8)
    cut.load_state_dict(start)
    # Ctrl-C raises KeyboardInterrupt even where pytest was started with SIGINT ignored (a
    # background job); the handler before this test comes back at its end
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(TrainingInterrupted) as stop:
            fit(cut, x, checkpoint_dir=tmp_path, **opts)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the caller's
    finally:
        signal.signal(signal.SIGINT, previous)
    e = stop.value
    assert isinstance(e, KeyboardInterrupt)
    assert (e.signal, e.epoch, e.checkpoint) == (sig.name, 2, tmp_path / "checkpoint.ckpt")
    assert not cut.training
    saved = read_checkpoint(e.checkpoint)["pyrovamp"]["scored_state"]  # epoch 2's result
    for k, v in cut.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)

    fit(cut, x, checkpoint_dir=tmp_path, resume=True, **opts)
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(cut.state_dict()[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_command_stops_on_a_signal_with_a_resume_line_and_resumes(tmp_path, sig, capsys):
    out = tmp_path / "run"
    proc = _cli("train", "--epochs", "500", *TINY, "--out", str(out))
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.ckpt").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    last = err.strip().splitlines()[-1]
    m = re.fullmatch(
        rf"pyrovamp train: stopped at epoch (\d+) \({sig.name}\); resume with: "
        rf"pyrovamp train --resume --out (\S+)",
        last,
    )
    assert m and m.group(2) == str(out), last
    epoch = int(m.group(1))
    assert int(read_checkpoint(out / "checkpoint.ckpt")["epoch"]) + 1 == epoch
    assert not (out / "metrics.json").exists()

    assert main(["train", "--resume", "--out", str(out), "--epochs", str(epoch + 2)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_trained"] == epoch + 2
    assert "test log-likelihood" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="needs pyrovamp[mlflow]")
def test_mlflow_gets_the_metrics_config_and_figures_in_a_local_store(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # so that monkeypatch restores it afterwards
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(None)  # MLflow's own setting: its default store in this folder
    out = tmp_path / "run"
    argv = ["train", *TINY, "--logger", "csv", "mlflow", "--no-progress", "--out", str(out)]
    assert main([*argv, "--epochs", "2", "--max-minutes", "0.0001"]) == 0  # stops after 1 epoch
    assert main(["train", "--resume", "--out", str(out), "--epochs", "3"]) == 0
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the process's setting given back
    assert (out / "logs").is_dir()  # the CSV logger beside it
    client = MlflowClient(mlflow.get_tracking_uri())
    assert mlflow.get_tracking_uri().startswith(("sqlite:///" + str(tmp_path), "file:"))
    experiment = client.get_experiment_by_name("pyrovamp")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # the resumed piece continued the same MLflow run
    run = runs[0]
    assert json.loads((out / "trackers.json").read_text())["mlflow"]["run_id"] == run.info.run_id
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert len(steps) == 3 and steps == sorted(set(steps))  # epochs 1, 2 and 3, one run
    assert run.data.params["lr"] == "0.001"
    metrics = json.loads((out / "metrics.json").read_text())
    logged = run.data.metrics["test/test_log_likelihood"]
    assert logged == pytest.approx(metrics["test_log_likelihood"])
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "metrics.json", "history.csv", "loss.png"} <= files


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="needs pyrovamp[wandb]")
def test_wandb_runs_offline_unless_logged_in_and_keeps_the_run_files(tmp_path, monkeypatch):
    import wandb

    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.setenv(var, "")  # so that monkeypatch restores them afterwards
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    argv = ["train", "--epochs", "2", *TINY, "--logger", "wandb", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "WANDB_MODE" not in os.environ and wandb.run is None  # given back, run ended
    run_id = json.loads((out / "trackers.json").read_text())["wandb"]["id"]
    logs = sorted((out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(logs) == 1, sorted(p.name for p in (out / "wandb").iterdir())  # one run
    names = (b"train_loss", b"metrics.json", b"config.json", b"test/test_log_likelihood")
    deadline = time.monotonic() + 30  # W&B's service may still be writing its log file
    while not all(n in logs[0].read_bytes() for n in names) and time.monotonic() < deadline:
        time.sleep(0.5)
    data = logs[0].read_bytes()
    for name in names:
        assert name in data, name
    assert not (out / "logs").exists()  # only the loggers named

    mine = wandb.init(project="mine", mode="offline", dir=str(tmp_path))  # the user's own run
    try:
        pv.train(pv.VAE((4,), 2), torch.zeros(8, 4), epochs=1, logger="wandb", progress=False)
        assert wandb.run is mine  # logged into and left open
    finally:
        mine.finish()


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="needs pyrovamp[tensorboard]"
)
def test_tensorboard_writes_its_event_file_in_the_run_folder(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--epochs", "2", *TINY, "--logger", "tensorboard", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    events = sorted((out / "logs").rglob("events.out.tfevents.*"))
    assert events and any(b"train_loss" in e.read_bytes() for e in events)


def test_a_logger_that_is_not_installed_or_unknown_is_one_line(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        main(["train", "--logger", "neptune", "--out", str(tmp_path / "a")])
    assert "invalid choice: 'neptune'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="logger 'none' cannot go with others"):
        pv.train(pv.VAE((4,), 2), torch.zeros(4, 4), epochs=1, logger=["none", "csv"])
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a)
    )
    with pytest.raises(ValueError, match=r"pip install 'pyrovamp\[mlflow\]'"):
        pv.train(pv.VAE((4,), 2), torch.zeros(4, 4), epochs=1, logger="mlflow")
    out = tmp_path / "b"
    assert main(["train", "--logger", "csv", "mlflow", "--out", str(out)]) == 2  # before work
    assert "pip install 'pyrovamp[mlflow]'" in capsys.readouterr().err
    assert not out.exists()
    gone = ("tensorboard", "tensorboardX")  # Lightning's TensorBoardLogger takes either
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n in gone else real(n, *a)
    )
    assert main(["train", "--logger", "tensorboard", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("pip install 'pyrovamp[tensorboard]'") and len(err.splitlines()) == 1
    assert not out.exists()


def test_an_error_raised_while_lightning_handles_ctrl_c_counts_as_the_interrupt():
    """Lightning's shutdown on Ctrl-C calls the loggers' and callbacks' hooks; what they raise
    then (a file cut short by the interrupt) has the KeyboardInterrupt as its context: the run
    was interrupted (exit status 130 and the resume line), not broken."""
    from pyrovamp.training.runner import _interruption

    def raised(inner):
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                try:
                    raise SystemExit(1) if inner is None else inner
                except BaseException:
                    raise RuntimeError("the CSV logger's file was cut short") from None
        except RuntimeError as e:
            return e

    assert _interruption(raised(None), None) == "SIGINT"
    assert _interruption(raised(OSError("disk")), None) == "SIGINT"
    assert _interruption(RuntimeError("a bug"), None) is None
