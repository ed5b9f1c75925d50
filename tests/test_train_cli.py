"""``pyrovamp train``'s training options: the accelerator and precision it asks for by default,
``--device cuda:i``, and a divergence ending in one line."""

import re

import pytest
import torch

from pyrovamp.cli.app import build_parser, main
from pyrovamp.training import resolve_accelerator
from pyrovamp.workflow.settings import RUN_DEFAULTS, new_run_config, train_config


def _config(argv):
    """The ``TrainConfig`` that ``pyrovamp train ARGV`` would train a new run with."""
    args = build_parser().parse_args(["train", *argv])
    options = {k: v for k, v in vars(args).items() if k in RUN_DEFAULTS}
    return train_config(new_run_config(options))


def test_the_command_line_trains_where_the_hardware_is_by_default(monkeypatch):
    cpu_model = torch.nn.Linear(2, 2)
    cfg = _config([])
    assert (cfg.accelerator, cfg.device) == ("auto", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_accelerator(cfg, cpu_model) == ("gpu", 1)
    assert resolve_accelerator(_config(["--device", "cuda:1"]), cpu_model) == ("gpu", [1])
    assert resolve_accelerator(_config(["--device", "cuda"]), cpu_model) == ("gpu", 1)
    assert resolve_accelerator(_config(["--device", "cpu"]), cpu_model) == ("cpu", 1)
    assert resolve_accelerator(_config(["--accelerator", "cpu"]), cpu_model) == ("cpu", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_accelerator(cfg, cpu_model) == ("cpu", 1)


def test_precision_auto_is_a_choice_and_the_fast_preset_asks_for_it():
    assert _config(["--precision", "auto"]).precision == "auto"
    assert _config(["--dataset", "static_mnist", "--preset", "fast"]).precision == "auto"
    assert _config(["--dataset", "static_mnist", "--preset", "paper"]).precision == "32"
    assert _config([]).precision == "32"  # the book preset


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--device", "cuda:x"], "--device must be cpu, cuda or cuda:i, got 'cuda:x'"),
        (["--device", "tpu"], "--device must be cpu, cuda or cuda:i, got 'tpu'"),
        (["--precision", "bf17"], "argument --precision: invalid choice: 'bf17'"),
    ],
)
def test_a_bad_device_or_precision_is_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["train", *argv, "--out", str(tmp_path / "never")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message in err[0]


def test_a_divergence_ends_in_one_line_naming_the_epoch_step_and_advice(tmp_path, capsys):
    """Adam with lr 50 on a flow prior: the flow's values go NaN (with finite parameters, where
    a distribution checks its arguments, Pyro's validation refuses them first: "Error while
    computing log_prob at site 'z':"); whatever the symptom, the user reads one line."""
    out = tmp_path / "run"
    argv = ["train", "--prior", "flow", "--lr", "50", "--optimizer", "adam"]
    argv += ["--max-points", "100", "--batch-size", "20", "--epochs", "3", "--hidden-dim", "16"]
    argv += ["--num-samples", "5", "--accelerator", "cpu", "--no-progress", "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"training vae with the flow prior on digits -> {out}"
    assert len(err) == 2, err
    assert re.fullmatch(
        r"pyrovamp train: error: training diverged at epoch 1, step \d+ \([^()]+\); no "
        r"checkpoint was written yet; try a lower learning rate",
        err[1],
    ), err[1]
