"""Long estimates that survive an interruption (:mod:`pyrovamp.workflow.resumable`): an
importance-sampling or AIS estimate killed after some pieces is continued by the same call and
gives the uninterrupted values bit for bit; values saved by another estimate, another model or a
broken file are never used; ``pyrovamp evaluate RUN --method ais`` continues where a killed one
stopped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyrovamp import VAE
from pyrovamp.cli.app import main
from pyrovamp.infer import ais_log_likelihood, log_likelihood
from pyrovamp.workflow import resumable
from pyrovamp.workflow.parallel import Estimate
from pyrovamp.workflow.resumable import estimate_in_pieces, partial_path

IS = Estimate("is", seed=3, num_samples=50, batch_size=4)  # 18 points: blocks of 4, pieces of 8
AIS = Estimate("ais", seed=3, num_chains=3, num_steps=4, batch_size=4)


class Killed(Exception):
    """What the interrupted run dies of."""


def _model():
    torch.manual_seed(0)
    return VAE((2, 3), 3, prior="vampprior", num_components=4, likelihood="bernoulli",
               hidden_dim=8).eval()  # fmt: skip


def _data(n=18):
    return (torch.rand(n, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()


def _kill_after(monkeypatch, pieces: int):
    """Make the run die (as a killed job would) when it starts piece ``pieces + 1``."""
    real, calls = resumable.score_shard, []

    def scoring(*args, **kwargs):
        calls.append(args[4])  # first_block
        if len(calls) > pieces:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(resumable, "score_shard", scoring)
    return calls


def _same(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])), k


@pytest.fixture(autouse=True)
def _small_pieces(monkeypatch):
    monkeypatch.setattr(resumable, "IS_PIECE_POINTS", 8)


@pytest.mark.parametrize("e", [IS, AIS], ids=["is", "ais"])
def test_an_interrupted_estimate_goes_on_and_equals_the_uninterrupted_one(tmp_path, monkeypatch, e):
    model, x = _model(), _data()
    whole = estimate_in_pieces(model, x, e)  # nothing saved anywhere
    calls = _kill_after(monkeypatch, 2)
    with pytest.raises(Killed):
        estimate_in_pieces(model, x, e, tmp_path)
    saved = np.load(partial_path(tmp_path, e.method))
    # two pieces of whole blocks were done and kept: IS pieces of 8 points, AIS of one block
    assert saved["log_likelihood"].shape == ((16,) if e.method == "is" else (8,))
    assert calls == ([0, 2, 4] if e.method == "is" else [0, 1, 2])  # first blocks
    monkeypatch.undo()
    monkeypatch.setattr(resumable, "IS_PIECE_POINTS", 8)
    calls = _kill_after(monkeypatch, 100)
    resumed = estimate_in_pieces(model, x, e, tmp_path)
    assert calls[0] == (4 if e.method == "is" else 2)  # the saved points are not scored again
    _same(resumed, whole)
    assert not partial_path(tmp_path, e.method).exists()


def test_the_pieces_are_the_estimators_own_values():
    """One call of the estimator on all points, with the same blocks and seed."""
    model, x = _model(), _data()
    got = estimate_in_pieces(model, x, IS)
    ll, d = log_likelihood(model, x, 50, seed=3, batch_size=4, diagnostics=True)
    assert torch.equal(torch.from_numpy(got["log_likelihood"]), ll)
    assert np.array_equal(got["pareto_k"], d["pareto_k"]) and got["block_size"] == 4
    got = estimate_in_pieces(model, x, AIS)
    ll, d = ais_log_likelihood(model, x, 3, 4, seed=3, batch_size=4, diagnostics=True)
    assert torch.equal(torch.from_numpy(got["log_likelihood"]), ll)
    assert np.array_equal(got["ess"], d["ess"])


@pytest.mark.parametrize("change", ["seed", "model", "data"])
def test_values_saved_by_another_estimate_are_not_used(tmp_path, monkeypatch, change):
    model, x = _model(), _data()
    _kill_after(monkeypatch, 2)
    with pytest.raises(Killed):
        estimate_in_pieces(model, x, IS, tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(resumable, "IS_PIECE_POINTS", 8)
    e = IS
    if change == "seed":
        e = Estimate("is", seed=4, num_samples=50, batch_size=4)
    elif change == "model":
        with torch.no_grad():
            next(model.decoder.parameters()).add_(0.5)  # parameters trained further
    else:
        x = x.flip(0)
    calls = _kill_after(monkeypatch, 100)
    got = estimate_in_pieces(model, x, e, tmp_path)
    assert calls[0] == 0
    _same(got, estimate_in_pieces(model, x, e))


def test_a_broken_saved_file_is_not_used(tmp_path, caplog):
    model, x = _model(), _data()
    partial_path(tmp_path, "is").write_bytes(b"PK\x03\x04 not an npz")
    got = estimate_in_pieces(model, x, IS, tmp_path)
    _same(got, estimate_in_pieces(model, x, IS))
    assert "unreadable" in caplog.text


def test_pyrovamp_evaluate_ais_continues_a_killed_evaluation(tmp_path, monkeypatch, capsys):
    """The command line: ``pyrovamp evaluate RUN --method ais`` stopped by Ctrl-C (or SIGTERM)
    leaves its values in the run folder and says how to go on; the same command continues and
    writes what an uninterrupted one writes."""
    import shutil

    out = tmp_path / "run"
    args = ["train", "--prior", "vampprior", "--epochs", "1", "--max-points", "24"]
    assert main([*args, "--num-samples", "10", "--no-progress", "--out", str(out)]) == 0
    clean = shutil.copytree(out, tmp_path / "clean")
    ais = ["--method", "ais", "--num-chains", "2", "--num-steps", "3", "--no-progress"]
    monkeypatch.setattr(resumable, "_block", lambda model, x, e: 5)  # AIS pieces of 5 points
    assert main(["evaluate", str(clean), *ais]) == 0
    real = resumable.score_shard
    calls = []

    def interrupted(*a, **k):
        calls.append(a[4])
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(resumable, "score_shard", interrupted)
    assert main(["evaluate", str(out), *ais]) == 130
    assert "same pyrovamp evaluate command" in capsys.readouterr().err
    assert np.load(partial_path(out, "ais"))["log_likelihood"].shape == (10,)
    monkeypatch.setattr(resumable, "score_shard", real)
    assert main(["evaluate", str(out), *ais]) == 0
    a, b = np.load(out / "log_likelihood_ais.npz"), np.load(clean / "log_likelihood_ais.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert np.array_equal(a[k], b[k]), k
    assert not partial_path(out, "ais").exists()


def test_an_interrupted_pretrained_evaluation_says_whether_it_can_continue(
    tmp_path, monkeypatch, capsys
):
    """``pyrovamp evaluate NAME`` keeps its pieces only with ``--out``: without it, the line
    stopping it says nothing was kept (and how to keep them), not that the command continues."""
    from pyrovamp.workflow import zoo

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo, "evaluate_method", stopped)
    argv = ["evaluate", "digits-vae-standard", "--num-samples", "10", "--no-progress"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "nothing was kept (IS and AIS keep their pieces" in err and "--out DIR" in err
    assert err.count("\n") == 1
    assert main([*argv, "--out", str(tmp_path / "scores")]) == 130
    assert "the same pyrovamp evaluate command continues" in capsys.readouterr().err
