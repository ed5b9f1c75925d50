"""``pyrovamp evaluate RUN --devices N``: importance sampling, the test ELBO and AIS sharded over
N CPU processes (gloo) give exactly one process's values -- the metrics and the per-point files --
for a run folder and a pretrained folder, from Python and from the command line; bad options
fail in one line before any work. Each sharded call starts two processes (a few seconds)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from pyrovamp.cli.app import main
from pyrovamp.infer import ais_log_likelihood, elbo, log_likelihood
from pyrovamp.workflow.experiment import _run_model, evaluate_run_folder
from pyrovamp.workflow.parallel import Estimate, Processes, resolve_hardware, sharded_estimates
from pyrovamp.workflow.runs import load_run
from pyrovamp.workflow.zoo import evaluate_pretrained, export_run

# a planner's IS block of 59 points with S=1000 for this model: 60 test points are 2 blocks
S = 1000
# 200 AIS chains: chunks of 59 points, two chunks as well
CHAINS, STEPS = 200, 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run: one epoch of a VampPrior VAE on 60 Digits points."""
    out = tmp_path_factory.mktemp("devices") / "run"
    args = ["train", "--prior", "vampprior", "--epochs", "1", "--max-points", "60"]
    assert main([*args, "--num-samples", "20", "--no-progress", "--out", str(out)]) == 0
    return out


def _copy(run, tmp_path, name):
    return shutil.copytree(run, tmp_path / name)


def _same_npz(a, b):
    a, b = np.load(a), np.load(b)
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def _without_time(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.endswith("seconds")}


def test_sharded_estimates_are_one_process_values_block_by_block(run):
    model, _, dataset, _ = load_run(run)
    x = dataset.test  # 60 points, blocks of 7: each of the two processes scores several blocks
    estimates = [
        Estimate("is", 3, num_samples=50, batch_size=7),
        Estimate("elbo", 4, num_samples=10, batch_size=7),
        Estimate("ais", 5, num_chains=4, num_steps=3, batch_size=7),
    ]
    threads, rng, env = torch.get_num_threads(), torch.get_rng_state(), dict(os.environ)
    processes = Processes(2, "cpu", functools.partial(_run_model, str(run), None))
    got_is, got_elbo, got_ais = sharded_estimates(processes, x, estimates)
    # the caller's state is left alone
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)
    assert dict(os.environ) == env

    ll, d = log_likelihood(model, x, 50, seed=3, batch_size=7, diagnostics=True)
    assert got_is["block_size"] == 7
    assert np.array_equal(got_is["log_likelihood"], ll.numpy())
    for k in ("log_likelihood_psis", "pareto_k", "ess"):
        assert np.array_equal(got_is[k], d[k]), k
    assert np.array_equal(got_elbo["elbo"], elbo(model, x, 10, seed=4, batch_size=7).numpy())
    ll, d = ais_log_likelihood(model, x, 4, 3, seed=5, batch_size=7, diagnostics=True)
    assert np.array_equal(got_ais["log_likelihood"], ll.numpy())
    for k in ("acceptance_rate", "independence_acceptance", "step_size", "ess"):
        assert np.array_equal(got_ais[k], d[k]), k


def test_a_run_folder_evaluated_by_two_processes_holds_one_process_numbers(run, tmp_path):
    one, two = _copy(run, tmp_path, "one"), _copy(run, tmp_path, "two")
    a = evaluate_run_folder(one, num_samples=S, progress=False)
    b = evaluate_run_folder(two, num_samples=S, progress=False, devices=2, accelerator="cpu")
    assert _without_time(a.metrics) == _without_time(b.metrics)
    _same_npz(one / "log_likelihood_is.npz", two / "log_likelihood_is.npz")
    assert int(np.load(two / "log_likelihood_is.npz")["block_size"]) < a.num_test_points
    for f in ("latent.png", "samples.png", "active_units.png"):  # the rest, written here
        assert (two / f).is_file()


def test_evaluate_run_method_ais_devices_2_from_the_command_line(run, tmp_path, capsys):
    one, two = _copy(run, tmp_path, "one"), _copy(run, tmp_path, "two")
    ais = ["--method", "ais", "--num-chains", str(CHAINS), "--num-steps", str(STEPS)]
    assert main(["evaluate", str(one), *ais, "--no-progress"]) == 0
    argv = ["evaluate", str(two), *ais, "--devices", "2", "--accelerator", "cpu", "--no-progress"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].split(" in ")[0] == lines[1].split(" in ")[0]
    _same_npz(one / "log_likelihood_ais.npz", two / "log_likelihood_ais.npz")
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert _without_time(m1) == _without_time(m2)


def test_a_pretrained_folder_scored_by_two_processes_is_scored_as_by_one(run, tmp_path, capsys):
    folder = export_run(run, tmp_path / "pretrained", name="tiny")
    # IS from the command line: --out keeps the per-image values
    for devices, out in ((1, "one"), (2, "two")):
        argv = ["evaluate", str(folder), "--num-samples", str(S), "--devices", str(devices)]
        assert main([*argv, "--out", str(tmp_path / out), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].split(" in ")[0] == lines[1].split(" in ")[0]
    name = "log_likelihood_is.npz"
    _same_npz(tmp_path / "one" / name, tmp_path / "two" / name)
    # AIS from a script without an `if __name__ == "__main__":` guard: the processes do not run
    # the script again
    options = dict(method="ais", num_chains=CHAINS, num_steps=STEPS, progress=False)
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, pathlib, sys
        from pyrovamp.workflow.zoo import evaluate_pretrained
        with open(sys.argv[1], "a") as f:
            f.write("ran\\n")
        m = evaluate_pretrained({str(folder)!r}, **{options!r}, devices=2)
        pathlib.Path(sys.argv[2]).write_text(json.dumps(m))
        """)
    )
    ran, got = tmp_path / "ran.txt", tmp_path / "ais.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(script), str(ran), str(got)], env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert ran.read_text() == "ran\n" and not r.stderr.strip(), r.stderr  # once, and quiet
    one = evaluate_pretrained(folder, **options)
    assert _without_time(json.loads(got.read_text())) == _without_time(one)


def test_a_worker_error_is_raised_in_the_caller(tmp_path):
    processes = Processes(2, "cpu", functools.partial(_run_model, str(tmp_path / "none"), None))
    with pytest.raises(FileNotFoundError, match="is not a run folder") as e:
        sharded_estimates(processes, torch.zeros(3, 64), [Estimate("is", 0, num_samples=2)])
    assert any("in evaluation process" in n for n in getattr(e.value, "__notes__", []))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"devices": 0}, r"--devices must be a positive integer, got 0"),
        ({"devices": 2, "refine_guide": 1}, r"--refine-guide runs in one process"),
        ({"devices": 2, "bdmc": 3}, r"--bdmc runs in one process"),
        ({"devices": 2, "method": "exact"}, r"--method exact \(quadrature\) runs in one process"),
        ({"devices": 2, "accelerator": "gpu", "device": "cpu"}, r"--accelerator gpu and --device"),
        ({"devices": 2, "accelerator": "tpu"}, r"--accelerator must be one of"),
    ],
)
def test_bad_options_fail_in_one_line_before_any_work(run, tmp_path, options, message):
    folder = _copy(run, tmp_path, "run")
    before = (folder / "metrics.json").read_bytes()
    with pytest.raises(ValueError, match=message) as e:
        evaluate_run_folder(folder, progress=False, **options)
    assert "\n" not in str(e.value)
    assert (folder / "metrics.json").read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_gpu_processes_without_cuda_fail_in_one_line(run, tmp_path):
    with pytest.raises(ValueError, match=r"^--accelerator gpu was asked for but torch\.cuda"):
        evaluate_run_folder(run, devices=2, accelerator="gpu")
    with pytest.raises(ValueError, match=r"^--accelerator gpu was asked for"):
        evaluate_pretrained(tmp_path, devices=2, accelerator="gpu")


def test_the_command_line_refuses_bad_devices(run, capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(run), "--devices", "0"])
    assert e.value.code == 2 and "--devices must be at least 1, got 0" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--method", "exact", "--devices", "2"]) == 2
    err = capsys.readouterr().err
    assert "--method exact (quadrature) runs in one process" in err and err.count("\n") == 1


def test_one_gpu_by_its_index_is_checked_against_the_machine(monkeypatch):
    """``--device cuda:i`` (as ``pyrovamp train`` takes it): the GPU must exist, and it names one
    process's device (device decisions by patching the device query: no GPU needed)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_hardware(1, None, "cuda:1") == (1, "gpu", "cuda:1")
    assert resolve_hardware(1, "gpu", "cuda:0") == (1, "gpu", "cuda:0")
    for args, message in (
        ((1, None, "cuda:2"), r"^--device cuda:2: this machine has 2 CUDA devices$"),
        ((2, None, "cuda:1"), r"^--device cuda:1 names one GPU; --devices 2 runs one process"),
        ((1, "cpu", "cuda:1"), r"^--accelerator cpu and --device cuda:1 name different hardware"),
        ((1, None, "cuda:x"), r"^--device must be cpu, cuda or cuda:i, got 'cuda:x'$"),
        ((1, None, "tpu"), r"^--device must be cpu, cuda or cuda:i, got 'tpu'$"),
        ((1, None, "cuda:\u00b2"), r"^--device must be cpu, cuda or cuda:i, got 'cuda:\u00b2'$"),
    ):
        with pytest.raises(ValueError, match=message):
            resolve_hardware(*args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_evaluate_and_compare_take_cuda_i_and_refuse_it_without_cuda(run, tmp_path, capsys):
    for argv in (
        ["evaluate", str(run), "--device", "cuda:1"],
        [
            "compare",
            str(run),
            str(_copy(run, tmp_path, "other")),
            "--out",
            str(tmp_path / "c"),
            "--device",
            "cuda:1",
        ],  # fmt: skip
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--device cuda:1 was asked for but torch.cuda.is_available() is False" in err
        assert err.count("\n") == 1
    assert not (tmp_path / "c").exists()
    with pytest.raises(SystemExit) as e:
        main(["compare", str(run), str(run), "--out", str(tmp_path / "c"), "--device", "cuda:x"])
    assert e.value.code == 2
    assert "--device must be cpu, cuda or cuda:i, got 'cuda:x'" in capsys.readouterr().err
