"""Training on Lightning: the objective (warm-up, mean-field KL), early stopping with the best
parameters, EMA, resume (in pieces and after kill -9), faults (divergence, corrupt checkpoints,
changed settings), the caller's random streams, the accelerator and the precision, loss objects,
optimiser classes and presets."""

import logging
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import types
import warnings

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyrovamp import VAE, train
from pyrovamp.errors import ArgumentTypeError
from pyrovamp.training import (
    BEST,
    CHECKPOINT,
    MODEL,
    CheckpointError,
    NonFiniteLossError,
    ScaleLatents,
    TrainConfig,
    beta_at,
    fit,
    load_model_weights,
    read_checkpoint,
)


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.5, 0.9])
    return (torch.rand(n, 6, generator=g) < p).float()


def _vae(prior="vampprior", **kw):
    pyro.set_rng_seed(0)
    return VAE((6,), 2, prior=prior, num_components=4, hidden_dim=16, **kw)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_the_command_lines_choices_are_the_engines():
    from pyrovamp import training
    from pyrovamp.training import config

    assert tuple(training.LOSSES) == config.LOSS_NAMES
    assert tuple(training.OPTIMIZERS) == config.OPTIMIZER_NAMES


def test_scale_latents_scales_only_latent_sites():
    vae = _vae("standard")
    with ScaleLatents(0.25):
        tr = poutine.trace(vae.model).get_trace(_data(4))
    assert tr.nodes["z"]["scale"] == 0.25 and tr.nodes["x"]["scale"] == 1.0


def test_warmup_schedule_is_applied_per_epoch():
    assert [beta_at(e, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert beta_at(0, 0) == 1.0
    hist = train(
        _vae(), _data(), epochs=5, warmup_epochs=4, batch_size=32, patience=None, progress=False
    )
    assert [r["beta"] for r in hist] == [0.25, 0.5, 0.75, 1.0, 1.0]


def _step_loss(module, x, seed=3):
    """The loss of one training step of ``module`` on ``x`` with torch seeded by ``seed``."""
    pyro.set_rng_seed(seed)
    return float(module.training_step(x, 0).detach())


def _traces(vae, x, seed=3):
    """The guide's and the replayed model's traces of the ELBO's draw under ``seed``."""
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        guide = poutine.trace(vae.guide).get_trace(x)
        return guide, poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)


def test_the_warmup_weight_scales_the_kl_term_of_the_training_loss_only():
    """The step's loss is -(log p(x|z) - beta (log q(z|x) - log p(z))) on the same draw of z:
    with beta -> 0 (Pyro's scale must be positive) the reconstruction term alone."""
    from pyrovamp.training.plan import SVIModule

    vae, x = _vae("standard"), _data(16)
    module = SVIModule(vae, TrainConfig(warmup_epochs=4))
    guide, model = _traces(vae, x)
    z = guide.nodes["z"]["value"]
    rec = float(model.nodes["x"]["fn"].log_prob(model.nodes["x"]["value"]).sum()) / 16
    kl = float(guide.nodes["z"]["fn"].log_prob(z).sum() - model.nodes["z"]["fn"].log_prob(z).sum())
    kl /= 16
    assert abs(kl) > 0.05  # the KL term is not negligible, so the weight shows
    for beta in (1e-9, 0.25, 1.0):
        module.beta = beta
        assert _step_loss(module, x) == pytest.approx(-(rec - beta * kl), rel=1e-5, abs=1e-6)


def test_the_meanfield_loss_is_the_elbo_with_the_analytic_kl():
    """``loss="meanfield"``: -(log p(x|z) - KL(q(z|x) || p(z))) with the closed-form KL of two
    diagonal Gaussians on the same draw of z; Trace_ELBO's Monte Carlo KL gives another value."""
    from pyrovamp.training.plan import SVIModule

    vae, x = _vae("standard"), _data(16)
    guide, model = _traces(vae, x)
    q = guide.nodes["z"]["fn"].base_dist
    rec = float(model.nodes["x"]["fn"].log_prob(model.nodes["x"]["value"]).sum()) / 16
    kl = float(0.5 * (q.scale**2 + q.loc**2 - 1 - 2 * q.scale.log()).sum()) / 16  # KL(q || N(0, I))
    meanfield = _step_loss(SVIModule(vae, TrainConfig(loss="meanfield")), x)
    assert meanfield == pytest.approx(-(rec - kl), rel=1e-5, abs=1e-6)
    trace = _step_loss(SVIModule(vae, TrainConfig(loss="trace")), x)
    assert abs(trace - meanfield) > 1e-3


def test_training_improves_validation_and_restores_the_best(tmp_path):
    vae = _vae()
    r = fit(
        vae,
        _data(),
        _data(48, seed=1),
        epochs=30,
        batch_size=16,
        lr=1e-2,
        patience=5,
        progress=False,
        checkpoint_dir=tmp_path,
    )
    vals = [h["val_elbo"] for h in r.history]
    assert max(vals) > vals[0] + 0.5
    assert r.best_val_elbo == pytest.approx(max(vals), abs=1e-5) and r.source == "best"
    best = read_checkpoint(tmp_path / BEST)["pyrovamp"]["scored_state"]
    for k, v in vae.state_dict().items():  # the model holds the best parameters, not the last
        assert torch.equal(v, best[k]), k
    last = read_checkpoint(tmp_path / CHECKPOINT)["state_dict"]
    if vals.index(max(vals)) != len(vals) - 1:
        assert not all(torch.equal(v, last["model." + k]) for k, v in vae.state_dict().items())
    assert not vae.training  # returned in evaluation mode
    # the model file written for evaluation holds the same parameters
    other = _vae()
    load_model_weights(other, tmp_path / MODEL)
    _same(vae, other)


def test_model_is_in_eval_mode_after_training_so_reconstruction_is_deterministic():
    vae = _vae(dropout=0.5)
    train(vae, _data(), epochs=2, batch_size=32, progress=False, patience=None)
    assert not vae.training
    x = _data(8, 3)
    assert torch.equal(vae.reconstruct(x), vae.reconstruct(x))


@pytest.mark.parametrize("loss", ["meanfield", "jit_trace", "iwae", "iwae_dreg"])
def test_other_losses_train(loss):
    vae = _vae("standard")
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    hist = train(
        vae,
        _data(),
        epochs=3,
        batch_size=32,
        loss=loss,
        patience=None,
        progress=False,
        num_particles=3 if loss.startswith("iwae") else 1,
    )
    assert len(hist) == 3 and all(math.isfinite(r["train_loss"]) for r in hist)
    assert any(not torch.equal(before[k], v) for k, v in vae.state_dict().items())


@pytest.mark.parametrize("ema_decay, optimizer", [(None, "adamax"), (0.9, "adamnormgrad")])
def test_resume_in_pieces_equals_one_uninterrupted_run(tmp_path, ema_decay, optimizer):
    cfg = dict(
        epochs=6,
        batch_size=32,
        lr=1e-2,
        warmup_epochs=3,
        patience=None,
        seed=7,
        progress=False,
        ema_decay=ema_decay,
        optimizer=optimizer,
    )
    full = _vae()
    train(full, _data(), _data(48, 1), checkpoint_dir=tmp_path / "a", **cfg)
    part = _vae()
    train(part, _data(), _data(48, 1), checkpoint_dir=tmp_path / "b", **{**cfg, "epochs": 2})
    again = _vae()  # a new process would build a fresh model and resume from the checkpoint
    hist = train(again, _data(), _data(48, 1), checkpoint_dir=tmp_path / "b", resume=True, **cfg)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4, 5, 6]
    _same(full, again)


def test_resuming_for_fewer_epochs_than_done_is_one_line(tmp_path):
    """Lightning's traceback (below the epochs done) and one epoch more than asked (at one
    fewer) before."""
    cfg = dict(batch_size=32, patience=None, seed=7, progress=False, checkpoint_dir=tmp_path)
    train(_vae(), _data(), epochs=3, **cfg)
    for epochs in (1, 2):
        with pytest.raises(CheckpointError, match=f"for {epochs} epochs in all: it has trained 3"):
            train(_vae(), _data(), epochs=epochs, resume=True, **cfg)
    assert len(train(_vae(), _data(), epochs=3, resume=True, **cfg)) == 3


def test_a_moved_run_resumes_from_its_own_files_as_if_never_moved(tmp_path):
    """The run folder moved between pieces: the resumed run reads the best checkpoint and the
    best score from its new folder (Lightning's callback kept the old path and forgot the
    score) and ends as the uninterrupted run."""
    import shutil

    cfg = dict(epochs=6, batch_size=32, lr=0.1, warmup_epochs=0, patience=None, seed=7)
    cfg["progress"] = False
    full = _vae()
    hist = train(full, _data(), _data(48, 1), checkpoint_dir=tmp_path / "a", **cfg)
    vals = [r["val_elbo"] for r in hist]
    assert vals.index(max(vals)) < len(vals) - 1  # the best epoch is not the last one
    part = _vae()
    train(part, _data(), _data(48, 1), checkpoint_dir=tmp_path / "b", **{**cfg, "epochs": 2})
    shutil.move(tmp_path / "b", tmp_path / "c")
    # a process killed while writing left its temporary file; a live writer's file stays
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale, live = tmp_path / "c" / f".{BEST}.tmp{dead}", tmp_path / "c" / f".x.tmp{os.getpid()}"
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    again = _vae()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*dirpath has changed.*")
        train(again, _data(), _data(48, 1), checkpoint_dir=tmp_path / "c", resume=True, **cfg)
    _same(full, again)
    assert not stale.exists() and live.exists()
    state = torch.load(tmp_path / "c" / CHECKPOINT, weights_only=True)
    paths = [v["best_model_path"] for k, v in state["callbacks"].items() if "Checkpoint" in k]
    assert paths and all(p == "" or p.startswith(str(tmp_path / "c")) for p in paths), paths


def _plateau_lrs(vals, lr, factor, patience, warmup):
    """The learning rates of the epochs under decay-on-plateau of ``vals`` (the rule, written
    out: after the warm-up, ``factor`` once the best value is ``patience`` epochs old)."""
    lrs, best, bad = [], -math.inf, 0
    for epoch, v in enumerate(vals, start=1):
        lrs.append(lr)
        if epoch <= warmup:
            continue
        if v > best:
            best, bad = v, 0
        else:
            bad += 1
        if bad > patience:
            lr, bad = lr * factor, 0
    return lrs


def _mismatched(n=48):
    return 1.0 - _data(n, seed=1)  # validation that gets worse as the training data is fitted


def test_lr_decay_follows_the_validation_elbo_after_the_warmup():
    cfg = dict(
        epochs=12,
        batch_size=16,
        lr=1e-2,
        warmup_epochs=2,
        patience=None,
        progress=False,
        lr_decay=0.5,
        lr_patience=1,
    )
    hist = train(_vae(), _data(), _mismatched(), **cfg)
    vals, lrs = [r["val_elbo"] for r in hist], [r["lr"] for r in hist]
    assert lrs == pytest.approx(_plateau_lrs(vals, 1e-2, 0.5, 1, 2), rel=1e-12)
    assert min(lrs) <= 2.5e-3  # the validation ELBO worsens, so the rate decayed at least twice
    # during the warm-up the ELBO may worsen without decay; without lr_decay the rate is constant
    assert lrs[:4] == [1e-2] * 4
    flat = train(_vae(), _data(), _mismatched(), **{**cfg, "lr_decay": None})
    assert [r["lr"] for r in flat] == [1e-2] * 12
    with pytest.raises(ValueError, match="lr_decay needs validation_data"):
        train(_vae(), _data(), epochs=1, lr_decay=0.5, progress=False)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="lr_decay must be in"):
            train(_vae(), _data(), _mismatched(), epochs=1, lr_decay=bad, progress=False)


def _stop_epoch(vals, patience, warmup):
    """The epoch at which early stopping fires on ``vals`` (the rule, written out: the best
    value is tracked from the first epoch, epochs without improvement count after the warm-up
    only); ``None`` if it never fires."""
    best, wait = -math.inf, 0
    for epoch, v in enumerate(vals, start=1):
        if v > best:
            best, wait = v, 0
        elif epoch > warmup:
            wait += 1
        if epoch > warmup and wait >= patience:
            return epoch
    return None


def test_early_stopping_counts_patience_only_after_the_warmup(tmp_path):
    cfg = dict(epochs=40, batch_size=16, lr=1e-2, warmup_epochs=6, patience=2, progress=False)
    r = fit(_vae(), _data(), _mismatched(), checkpoint_dir=tmp_path / "a", **cfg)
    vals = [h["val_elbo"] for h in r.history]
    assert r.stopped_early and r.finished and len(vals) == _stop_epoch(vals, 2, 6) == 8
    assert _stop_epoch(vals, 2, 0) < 8  # counted from the first epoch it would stop earlier
    assert r.best_val_elbo == pytest.approx(max(vals), abs=1e-5) and r.source == "best"
    # a run that stopped early stays stopped when resumed with more epochs
    again = fit(
        _vae(),
        _data(),
        _mismatched(),
        checkpoint_dir=tmp_path / "a",
        resume=True,
        **{**cfg, "epochs": 50},
    )
    assert again.stopped_early and again.epochs == 8 and len(again.history) == 8


def _lightning_fit(model, config, callbacks):
    """``Trainer.fit`` of the plan on ``_data()`` with extra ``callbacks``, no files."""
    import lightning.pytorch as pl

    from pyrovamp.training.data import EpochData, SVIDataModule
    from pyrovamp.training.plan import SVIModule
    from pyrovamp.training.runner import quiet_lightning

    module = SVIModule(model, config)
    data = SVIDataModule(EpochData(_data(), seed=config.seed), None, config.batch_size, config.seed)
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=config.epochs,
            callbacks=callbacks,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
        )
        trainer.fit(module, datamodule=data)
    return module


def test_adam_norm_grad_normalises_the_gradients_of_lightnings_closure():
    """Under Lightning (``optimizer.step(closure)``) the update sees each block's gradient of
    the closure's backward pass divided by its norm, and the step hooks run once per step."""
    import lightning.pytorch as pl

    from pyrovamp.training import TrainConfig

    seen = {"steps": 0, "checked": 0}

    class Probe(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            trainer.optimizers[0].register_step_post_hook(self.after_step)

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # after backward
            self.raw = [
                None if p.grad is None else p.grad.clone()
                for p in optimizer.param_groups[0]["params"]
            ]

        def after_step(self, optimizer, args, kwargs):
            seen["steps"] += 1
            group = optimizer.param_groups[0]
            for p, c, raw in zip(group["params"], group["norm_chunks"], self.raw, strict=True):
                if raw is not None:
                    blocks = raw.reshape(c, -1)
                    expected = blocks / (
                        torch.linalg.vector_norm(blocks, dim=1, keepdim=True) + 1e-7
                    )
                    assert torch.allclose(p.grad, expected.view_as(p.grad), rtol=1e-6, atol=0)
                    seen["checked"] += 1

    _lightning_fit(
        _vae(), TrainConfig(epochs=2, batch_size=32, optimizer="adamnormgrad"), [Probe()]
    )
    assert seen["steps"] == 2 * 3 and seen["checked"] > 0


def test_parameter_ema_is_the_exponential_average_of_the_steps():
    """The average after step t is ``d * avg + (1 - d) * theta_t``, starting at the parameters
    of the first step; the live model keeps its own parameters."""
    import lightning.pytorch as pl

    from pyrovamp.training import ParameterEMA, TrainConfig

    steps = []

    class Recorder(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            steps.append([p.detach().clone() for p in pl_module.model.parameters()])

    ema = ParameterEMA(0.7)
    module = _lightning_fit(_vae(), TrainConfig(epochs=2, batch_size=32), [ema, Recorder()])
    expected = steps[0]
    for theta in steps[1:]:
        expected = [0.7 * e + 0.3 * t for e, t in zip(expected, theta, strict=True)]
    averaged = list(ema.averaged_model(module).parameters())
    assert len(steps) == 6 and len(averaged) == len(expected)
    for a, e, live in zip(averaged, expected, module.model.parameters(), strict=True):
        assert torch.allclose(a, e, atol=1e-6) and not torch.equal(a, live)


def test_iwae_validation_chooses_the_parameters_by_the_bound(tmp_path):
    r = fit(
        _vae(),
        _data(),
        _data(48, seed=1),
        epochs=12,
        batch_size=16,
        lr=1e-2,
        patience=None,
        progress=False,
        checkpoint_dir=tmp_path,
        val_bound="iwae",
        val_num_samples=8,
    )
    bound = [h["val_iwae"] for h in r.history]
    elbo = [h["val_elbo"] for h in r.history]
    # the bound is above the ELBO (Burda et al. 2016, theorem 1), and it is what is monitored
    assert sum(bound) / len(bound) > sum(elbo) / len(elbo)
    assert (
        r.best_val_elbo == pytest.approx(max(bound), abs=1e-5) != pytest.approx(max(elbo), abs=1e-5)
    )
    best = read_checkpoint(tmp_path / BEST)["pyrovamp"]["history"][-1]
    assert best["val_iwae"] == max(bound)
    with pytest.raises(ValueError, match="val_bound must be one of elbo, iwae"):
        fit(_vae(), _data(), _data(48, seed=1), epochs=1, val_bound="iw", progress=False)
    with pytest.raises(ValueError, match="needs val_num_samples >= 2"):
        fit(
            _vae(),
            _data(),
            _data(48, seed=1),
            epochs=1,
            val_bound="iwae",
            val_num_samples=1,
            progress=False,
        )


def test_resume_keeps_the_lr_decay_state(tmp_path):
    cfg = dict(
        epochs=10,
        batch_size=16,
        lr=1e-2,
        warmup_epochs=2,
        patience=None,
        seed=3,
        progress=False,
        lr_decay=0.5,
        lr_patience=1,
    )
    full = _vae()
    ref = train(full, _data(), _mismatched(), checkpoint_dir=tmp_path / "a", **cfg)
    part = _vae()
    train(part, _data(), _mismatched(), checkpoint_dir=tmp_path / "b", **{**cfg, "epochs": 6})
    again = _vae()
    hist = train(again, _data(), _mismatched(), checkpoint_dir=tmp_path / "b", resume=True, **cfg)
    assert [r["lr"] for r in hist] == [r["lr"] for r in ref] and min(r["lr"] for r in ref) < 1e-2
    _same(full, again)
    # a run made before these settings existed trained without decay, on the ELBO
    state = read_checkpoint(tmp_path / "b" / CHECKPOINT)
    for k in ("lr_decay", "lr_patience", "val_bound"):
        del state["pyrovamp"]["config"][k]
    torch.save(state, tmp_path / "b" / CHECKPOINT)
    with pytest.raises(CheckpointError, match="lr_decay was None in this run and is now 0.5"):
        train(
            _vae(),
            _data(),
            _mismatched(),
            checkpoint_dir=tmp_path / "b",
            resume=True,
            **{**cfg, "epochs": 11},
        )


def test_ema_averages_parameters_and_keeps_integer_buffers():
    from pyrovamp.priors import FlowPrior

    pyro.set_rng_seed(0)
    prior = FlowPrior(40)
    vae = VAE((6,), 40, prior=prior, hidden_dim=16)
    ints = {k: v.clone() for k, v in vae.state_dict().items() if not v.is_floating_point()}
    r = fit(
        vae, _data(), epochs=3, batch_size=32, lr=1e-2, ema_decay=0.5, patience=None, progress=False
    )
    assert r.source == "averaged"
    for k, v in ints.items():
        assert torch.equal(vae.state_dict()[k], v), k
    z = torch.randn(5, 40)
    assert torch.isfinite(vae.prior().log_prob(z)).all()
    live = _vae("standard")
    # the averaged parameters are not the last ones
    r2 = fit(
        live,
        _data(),
        epochs=2,
        batch_size=32,
        lr=1e-2,
        ema_decay=0.5,
        patience=None,
        progress=False,
    )
    live_last = _vae("standard")
    fit(live_last, _data(), epochs=2, batch_size=32, lr=1e-2, patience=None, progress=False)
    assert r2.source == "averaged"
    assert not all(
        torch.equal(a, b) for a, b in zip(live.parameters(), live_last.parameters(), strict=True)
    )


def test_bad_settings_are_refused_before_work(tmp_path):
    with pytest.raises(ValueError, match="ema_decay"):
        train(_vae(), _data(), ema_decay=1.5)
    with pytest.raises(ValueError, match="num_particles >= 2"):
        train(_vae(), _data(), loss="iwae")
    with pytest.raises(ValueError, match="loss='iwae_dreg' needs num_particles >= 2"):
        train(_vae(), _data(), loss="iwae_dreg")
    with pytest.raises(
        ValueError, match="unknown optimizer 'sgd'; expected one of adam, adamax, adamnormgrad"
    ):
        train(_vae(), _data(), optimizer="sgd")
    with pytest.raises(ValueError, match="batch_size"):
        train(_vae(), _data(), batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        train(_vae(), _data(), precision="8")
    with pytest.raises(ValueError, match=r"^seed must be an integer >= 0, got -1$"):
        train(_vae(), _data(), seed=-1)
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        train(_vae(), _data(), batch_size=63, devices=2)
    with pytest.raises(ValueError, match="unknown training option"):
        train(_vae(), _data(), epochs=1, colour="red")
    with pytest.raises(ValueError, match="binary"):
        train(_vae(), torch.full((4, 6), 0.5), progress=False)
    with pytest.raises(CheckpointError, match="no such file"):
        train(_vae(), _data(), checkpoint_dir=tmp_path, resume=True, progress=False)
    assert list(tmp_path.iterdir()) == []
    train(_vae(), _data(), epochs=1, progress=False, checkpoint_dir=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match="already holds a run's checkpoint"):
        train(_vae(), _data(), epochs=1, progress=False, checkpoint_dir=tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_resume_with_a_changed_setting_is_refused(tmp_path):
    train(_vae(), _data(), epochs=1, batch_size=32, progress=False, checkpoint_dir=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(
        CheckpointError, match="optimizer was 'adamax' in this run and is now 'adam'"
    ):
        train(
            _vae(),
            _data(),
            epochs=2,
            batch_size=32,
            optimizer="adam",
            progress=False,
            checkpoint_dir=tmp_path,
            resume=True,
        )
    with pytest.raises(CheckpointError, match="lr"):
        train(
            _vae(),
            _data(),
            epochs=2,
            batch_size=32,
            lr=0.5,
            progress=False,
            checkpoint_dir=tmp_path,
            resume=True,
        )
    # epochs and max_minutes may change
    hist = train(
        _vae(),
        _data(),
        epochs=2,
        batch_size=32,
        progress=False,
        max_minutes=5,
        checkpoint_dir=tmp_path,
        resume=True,
    )
    assert len(hist) == 2
    assert set(before) <= {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "pickle", "nan"])
def test_corrupt_checkpoints_give_one_line_naming_the_file(tmp_path, damage):
    train(_vae(), _data(), epochs=1, batch_size=32, progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / CHECKPOINT
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 10)
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    elif damage == "nan":  # a readable file whose parameters hold a NaN: refused, not resumed
        for f in (path, tmp_path / MODEL):
            obj = torch.load(f, weights_only=True)
            state = obj["state_dict"] if f == path else obj["pyrovamp"]["scored_state"]
            name = next(k for k, v in state.items() if v.is_floating_point())
            state[name].view(-1)[0] = float("nan")
            torch.save(obj, f)
        with pytest.raises(CheckpointError, match=f"{MODEL}: tensor .* holds NaN or infinite"):
            load_model_weights(_vae(), tmp_path / MODEL)
    else:  # a pickle that would run code when loaded without weights_only
        import pickle

        class Evil:
            def __reduce__(self):
                return (os.system, ("touch " + str(tmp_path / "pwned"),))

        path.write_bytes(pickle.dumps({"pyrovamp": Evil()}))
    with pytest.raises(CheckpointError) as e:
        train(
            _vae(),
            _data(),
            epochs=2,
            batch_size=32,
            progress=False,
            checkpoint_dir=tmp_path,
            resume=True,
        )
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    assert not (tmp_path / "pwned").exists()
    if damage == "nan":
        assert "holds NaN or infinite values" in msg
        return
    if damage == "pickle":  # what the file holds, not torch's advice to load it unsafely
        assert "is unsafe to load" in msg and "Unsupported" in msg, msg
        assert "weights_only` set to `False" not in msg and "\x1b" not in msg, msg
    with pytest.raises(CheckpointError, match="does not fit this model|holds a"):
        load_model_weights(VAE((6,), 3, prior="standard"), tmp_path / MODEL)


@pytest.mark.parametrize("poison", ["loss", "parameters", "distribution"])
def test_a_nan_stops_training_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, poison):
    vae = _vae()
    calls = {"n": 0}
    real = vae.model

    def poisoned(x):  # from the 9th step on (epoch 3, 4 steps per epoch) things go NaN
        calls["n"] += torch.is_grad_enabled()  # training steps, not validation
        if calls["n"] >= 9 and poison == "parameters":
            with torch.no_grad():
                vae.decoder[0].weight[0, 0] = float("inf")
        out = real(x)
        if calls["n"] >= 9 and poison == "distribution":
            # finite parameters, a NaN argument: Pyro's validation refuses it before any loss
            nan = vae.decoder[0].weight.sum().detach() * 0.0 * math.inf
            pyro.sample("refuses", pyro.distributions.Normal(0.0, 1.0, validate_args=True), obs=nan)
        if calls["n"] >= 9 and poison == "loss":
            with pyro.validation_enabled(False):
                pyro.factor("poison", torch.tensor(float("nan")))
        return out

    vae.model = poisoned
    with pytest.raises(NonFiniteLossError) as e, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        train(
            vae,
            _data(),
            _data(48, 1),
            epochs=10,
            batch_size=24,
            patience=None,
            progress=False,
            checkpoint_dir=tmp_path,
        )
    # the one line says it: not Pyro's warning at every step of the epoch before it
    assert not [w for w in seen if "Encountered" in str(w.message)]
    msg = str(e.value)
    assert msg.startswith("training diverged at epoch 3, step 9 (") and "\n" not in msg
    assert msg.endswith(
        f"; the last good checkpoint is {tmp_path / CHECKPOINT}; try a lower learning rate"
    )
    if poison == "distribution":
        cause = e.value.__cause__
        assert isinstance(cause, ValueError) and "at site 'refuses'" in str(cause)
        assert "(a non-finite value at site 'refuses')" in msg
    ck = read_checkpoint(tmp_path / CHECKPOINT)
    assert ck["epoch"] == 1  # 0-based: the last good epoch was the second one
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    assert all(
        math.isfinite(r["train_loss"]) and math.isfinite(r["val_elbo"])
        for r in ck["pyrovamp"]["history"]
    )
    assert all(torch.isfinite(p).all() for p in vae.parameters())  # back at the last good state
    assert not (tmp_path / MODEL).exists()


def test_a_genuine_value_error_in_the_model_is_raised_as_it_is():
    vae = _vae()
    real, calls = vae.model, {"n": 0}

    def faulty(x):
        calls["n"] += torch.is_grad_enabled()
        if calls["n"] >= 3:
            raise ValueError("a bug in the user's model")
        return real(x)

    vae.model = faulty
    with pytest.raises(ValueError, match="a bug in the user's model") as e:
        train(vae, _data(), epochs=2, batch_size=32, patience=None, progress=False)
    assert not isinstance(e.value, NonFiniteLossError)


def test_a_divergence_in_the_first_epoch_leaves_the_initial_parameters():
    from pyrovamp.priors import FlowPrior

    pyro.set_rng_seed(0)
    vae = VAE((6,), 2, prior=FlowPrior(2), hidden_dim=16)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    with pytest.raises(NonFiniteLossError) as e:
        train(vae, _data(), epochs=3, batch_size=16, lr=50.0, optimizer="adam", progress=False)
    assert str(e.value).startswith("training diverged at epoch 1, step ")
    assert str(e.value).endswith("no checkpoint was written yet; try a lower learning rate")
    _same_state(vae.state_dict(), before)


def _same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _streams():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _assert_same_streams(a, b):
    assert torch.equal(a[0], b[0])
    assert a[1][0] == b[1][0] and np.array_equal(a[1][1], b[1][1]) and a[1][2:] == b[1][2:]
    assert a[2] == b[2]


def test_training_leaves_the_callers_random_streams_as_they_were(tmp_path):
    """A new run and a resumed one draw from their own streams: the caller's torch, NumPy and
    random states are unchanged, so two user seeds still give two different draws afterwards,
    while the trained parameters depend on the run's seed only."""
    cfg = dict(epochs=2, batch_size=32, patience=None, progress=False, seed=5, ema_decay=None)
    draws, params = {}, {}
    for user_seed in (1, 2):
        vae = _vae("standard")
        torch.manual_seed(user_seed), np.random.seed(user_seed), random.seed(user_seed)
        before = _streams()
        train(vae, _data(), **cfg)
        _assert_same_streams(_streams(), before)
        draws[user_seed] = (float(torch.rand(())), float(np.random.rand()), random.random())
        params[user_seed] = {k: v.clone() for k, v in vae.state_dict().items()}
    assert all(a != b for a, b in zip(draws[1], draws[2], strict=True))
    _same_state(params[1], params[2])
    # a resumed run restores the run's saved streams inside, and gives the caller's back
    train(_vae("standard"), _data(), checkpoint_dir=tmp_path, **{**cfg, "epochs": 1})
    again = _vae("standard")
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    before = _streams()
    train(again, _data(), checkpoint_dir=tmp_path, resume=True, **cfg)
    _assert_same_streams(_streams(), before)
    _same_state(again.state_dict(), params[1])  # and it ends as the uninterrupted run


class _OnGPU(torch.nn.Module):
    """A stand-in for a model whose parameters are on ``cuda:1`` (no GPU needed)."""

    def parameters(self, recurse=True):
        yield types.SimpleNamespace(device=torch.device("cuda", 1))


def test_the_auto_accelerator_follows_the_model_and_the_hardware(monkeypatch, caplog):
    from pyrovamp.training import resolve_accelerator, runner

    assert TrainConfig().accelerator == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="pyrovamp"):
        assert resolve_accelerator(TrainConfig(), _vae()) == ("cpu", 1)
    assert [r.getMessage() for r in caplog.records] == [
        "accelerator auto: training on cpu, since there is no CUDA device"
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pyrovamp"):
        assert resolve_accelerator(TrainConfig(), _OnGPU()) == ("gpu", [1])  # the model's GPU
    assert len(caplog.records) == 1 and "cuda:1" in caplog.records[0].getMessage()
    assert resolve_accelerator(TrainConfig(), _vae()) == ("gpu", 1)  # Lightning moves it
    assert resolve_accelerator(TrainConfig(accelerator="cpu"), _OnGPU()) == ("cpu", 1)
    assert resolve_accelerator(TrainConfig(device="cuda:1"), _vae()) == ("gpu", [1])
    assert resolve_accelerator(TrainConfig(device="cpu"), _OnGPU()) == ("cpu", 1)
    # fit asks once, for the model it trains
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    asked = []

    def spy(config, model=None, **kw):
        asked.append(model)
        return resolve_accelerator(config, model, **kw)

    monkeypatch.setattr(runner, "resolve_accelerator", spy)
    vae = _vae()
    r = fit(vae, _data(), epochs=1, batch_size=32, patience=None, progress=False)
    assert asked == [vae] and r.accelerator == "cpu"


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_where_the_device_computes_it_natively(monkeypatch, caplog, native):
    from pyrovamp.training import hardware, resolve_precision
    from pyrovamp.training.config import PRECISIONS, PRESETS

    assert "auto" in PRECISIONS and PRESETS["fast"]["precision"] == "auto"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    want = "bf16-mixed" if native else "32"
    with caplog.at_level(logging.INFO, logger="pyrovamp"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("auto", "cpu") == want
        assert resolve_precision("32", "cpu") == "32"
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and msgs[0].startswith(f"precision auto: {want}, since this CPU ")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    assert resolve_precision("auto", "gpu") == want
    # an explicit bf16-mixed runs as asked; where the CPU has no native bfloat16, with one warning
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = fit(
            _vae(),
            _data(),
            epochs=1,
            batch_size=32,
            precision="bf16-mixed",
            patience=None,
            progress=False,
        )
    said = [str(w.message) for w in caught if "bfloat16" in str(w.message)]
    assert r.precision == "bf16-mixed" and len(said) == (0 if native else 1)


def test_native_bf16_is_read_from_torch_or_from_the_cpu_flags(monkeypatch):
    from pyrovamp.training import hardware

    caps = {"avx2": True, "avx512_bf16": False, "amx_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps, raising=False)
    assert hardware.cpu_has_native_bf16() is False
    caps["amx_bf16"] = True
    assert hardware.cpu_has_native_bf16() is True
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)  # an older torch
    monkeypatch.setattr(hardware.sys, "platform", "linux")
    for flags, native in (("fpu avx2 avx512f", False), ("fpu avx2 avx512_bf16", True)):
        cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n"
        monkeypatch.setattr(
            hardware, "Path", lambda p, text=cpuinfo: types.SimpleNamespace(read_text=lambda: text)
        )
        assert hardware.cpu_has_native_bf16() is native


def test_a_run_in_auto_precision_keeps_auto_and_resumes(tmp_path, monkeypatch):
    from pyrovamp.training import hardware

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    cfg = dict(batch_size=32, patience=None, progress=False, precision="auto")
    r = fit(_vae(), _data(), epochs=1, checkpoint_dir=tmp_path, **cfg)
    assert r.precision == "32"
    assert read_checkpoint(tmp_path / CHECKPOINT)["pyrovamp"]["config"]["precision"] == "auto"
    r = fit(_vae(), _data(), epochs=2, checkpoint_dir=tmp_path, resume=True, **cfg)
    assert r.epochs == 2 and r.precision == "32"
    with pytest.raises(CheckpointError, match="precision was 'auto' in this run"):
        fit(
            _vae(),
            _data(),
            epochs=3,
            checkpoint_dir=tmp_path,
            resume=True,
            **{**cfg, "precision": "32"},
        )


def test_a_loss_object_and_an_optimiser_class_train_and_are_recorded(tmp_path):
    loss = pyro.infer.TraceMeanField_ELBO(max_plate_nesting=1)
    cfg = dict(
        batch_size=32,
        patience=None,
        progress=False,
        loss=loss,
        optimizer=torch.optim.AdamW,
        optimizer_kwargs={"weight_decay": 1e-2, "betas": (0.8, 0.99)},
    )
    vae = _vae("standard")
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    r = fit(vae, _data(), epochs=1, checkpoint_dir=tmp_path, **cfg)
    assert r.trainer.lightning_module.loss_fn is loss
    opt = r.trainer.optimizers[0]
    assert type(opt) is torch.optim.AdamW
    assert opt.param_groups[0]["weight_decay"] == 1e-2 and opt.param_groups[0]["lr"] == 1e-3
    assert opt.param_groups[0]["betas"] == (0.8, 0.99)
    assert any(not torch.equal(before[k], v) for k, v in vae.state_dict().items())
    saved = read_checkpoint(tmp_path / CHECKPOINT)["pyrovamp"]["config"]
    assert saved["loss"] == "pyro.infer.TraceMeanField_ELBO"
    assert saved["optimizer"] == "torch.optim.AdamW"
    assert saved["optimizer_kwargs"] == {"weight_decay": 1e-2, "betas": [0.8, 0.99]}
    assert read_checkpoint(tmp_path / MODEL)["pyrovamp"]["config"] == saved
    # resumed with objects of the same kinds; a loss name or another optimiser is refused
    fresh = pyro.infer.TraceMeanField_ELBO(max_plate_nesting=1)
    r = fit(
        _vae("standard"),
        _data(),
        epochs=2,
        checkpoint_dir=tmp_path,
        resume=True,
        **{**cfg, "loss": fresh},
    )
    assert r.epochs == 2
    for change, what in (
        ({"loss": "meanfield"}, "loss was 'pyro.infer.TraceMeanField_ELBO'"),
        ({"optimizer": torch.optim.Adam}, "optimizer was 'torch.optim.AdamW'"),
        ({"optimizer_kwargs": {"weight_decay": 0.1}}, "optimizer_kwargs was"),
    ):
        with pytest.raises(CheckpointError, match=what):
            fit(
                _vae("standard"),
                _data(),
                epochs=3,
                checkpoint_dir=tmp_path,
                resume=True,
                **{**cfg, **change},
            )


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (
            {"optimizer": 42},
            ArgumentTypeError,
            "optimizer must be one of adam, adamax, adamnormgrad or a torch.optim.Optimizer sub",
        ),
        (
            {"optimizer": torch.optim.AdamW(torch.nn.Linear(1, 1).parameters())},
            ArgumentTypeError,
            "optimizer must be",
        ),
        ({"loss": 42}, ArgumentTypeError, "loss must be one of trace, "),
        ({"loss": pyro.infer.Trace_ELBO}, ArgumentTypeError, r"call it: Trace_ELBO\(...\)"),
        ({"optimizer_kwargs": {"lr": 0.1}}, ValueError, "optimizer_kwargs must not hold 'lr'"),
        ({"optimizer_kwargs": [1]}, ArgumentTypeError, "optimizer_kwargs must be a dict"),
        (
            {"optimizer": torch.optim.AdamW, "optimizer_kwargs": {"colour": 1}},
            ArgumentTypeError,
            "refused by torch.optim.AdamW",
        ),
        (
            {"optimizer": torch.optim.AdamW, "optimizer_kwargs": {"betas": (2.0, 0.9)}},
            ValueError,
            "refused by torch.optim.AdamW",
        ),
    ],
)
def test_a_bad_loss_or_optimiser_is_one_line_before_any_work(tmp_path, bad, error, message):
    with pytest.raises(error, match=message) as e:
        train(_vae(), _data(), checkpoint_dir=tmp_path, progress=False, **bad)
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []


def test_the_defaults_are_the_book_preset_and_train_takes_a_preset(monkeypatch):
    from pyrovamp.training import runner
    from pyrovamp.training.config import BOOK_TRAINING, PRESETS, preset_training

    defaults = TrainConfig()
    book = preset_training("book")
    assert set(BOOK_TRAINING) <= set(book)
    for name, value in book.items():  # every training setting of the book preset
        assert getattr(defaults, name) == value, name
    assert {k: PRESETS["book"][k] for k in book} == book
    seen = []

    def spy(model, train_data, validation_data=None, config=None, **kw):
        seen.append(config)
        return types.SimpleNamespace(history=[])

    monkeypatch.setattr(runner, "fit", spy)
    train(_vae(), _data(), preset="fast", epochs=3)
    fast = seen[-1]
    assert (fast.batch_size, fast.lr, fast.optimizer, fast.precision, fast.ema_decay) == (
        200,
        1e-3,
        "adam",
        "auto",
        0.999,
    )
    assert (fast.warmup_epochs, fast.patience, fast.epochs) == (100, 50, 3)  # options win
    train(_vae(), _data(), preset="paper")
    assert (seen[-1].optimizer, seen[-1].lr, seen[-1].epochs) == ("adamnormgrad", 5e-4, 2000)
    train(_vae(), _data(), preset="book")
    assert seen[-1] == defaults
    with pytest.raises(ValueError, match="preset must be one of book, paper, fast, got 'nope'"):
        train(_vae(), _data(), preset="nope")


def test_resume_with_dynamic_binarisation_and_max_minutes(tmp_path):
    grey = torch.rand(64, 6, generator=torch.Generator().manual_seed(3))

    def sampler(generator=None):
        return torch.bernoulli(grey, generator=generator)

    cfg = dict(epochs=5, batch_size=32, lr=1e-2, patience=None, seed=11, progress=False)
    full = _vae()
    train(full, sampler, _data(32, 1), checkpoint_dir=tmp_path / "a", **cfg)
    r = fit(
        _vae(),
        sampler,
        _data(32, 1),
        TrainConfig(**cfg, max_minutes=1e-9),
        checkpoint_dir=tmp_path / "b",
    )
    assert r.epochs == 1 and not r.finished  # stopped cleanly after one epoch
    pieces = 1
    while not r.finished:
        again = _vae()
        r = fit(
            again,
            sampler,
            _data(32, 1),
            TrainConfig(**cfg, max_minutes=1e-9),
            checkpoint_dir=tmp_path / "b",
            resume=True,
        )
        pieces += 1
    assert r.epochs == 5 and pieces == 5
    _same(full, again)


def test_a_piece_with_max_minutes_resumes_without_it_and_without_warnings(tmp_path):
    import warnings

    cfg = dict(epochs=2, batch_size=32, patience=None, seed=1, progress=False)
    r = fit(
        _vae(), _data(), _data(32, 1), TrainConfig(**cfg, max_minutes=1e-9), checkpoint_dir=tmp_path
    )
    assert r.epochs == 1 and not r.finished
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = fit(
            _vae(), _data(), _data(32, 1), TrainConfig(**cfg), checkpoint_dir=tmp_path, resume=True
        )
    assert r.epochs == 2 and r.finished
    assert not [str(w.message) for w in caught if "callbacks" in str(w.message)]


def test_bf16_mixed_precision_autocasts_the_step_and_matches_float32(monkeypatch):
    from pyrovamp.training import hardware

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)  # no warning on any CPU
    seen = []

    def record(module, inputs, output):
        if torch.is_grad_enabled():  # the training step, not validation
            seen.append(output.dtype)

    cfg = dict(epochs=1, batch_size=32, patience=None, progress=False, ema_decay=None)
    vae = _vae()
    vae.decoder[0].register_forward_hook(record)
    h16 = train(vae, _data(), _data(48, 1), precision="bf16-mixed", **cfg)
    assert len(seen) == 3 and set(seen) == {torch.bfloat16}  # autocast ran the networks
    seen.clear()
    vae = _vae()
    vae.decoder[0].register_forward_hook(record)
    h32 = train(vae, _data(), _data(48, 1), precision="32", **cfg)
    assert len(seen) == 3 and set(seen) == {torch.float32}
    for key in ("train_loss", "val_elbo"):
        assert h16[0][key] != h32[0][key]
        assert h16[0][key] == pytest.approx(h32[0][key], rel=0.02), key


_SCRIPT = textwrap.dedent("""
    import sys, torch, pyro
    torch.set_num_threads(1)
    from pyrovamp import VAE, train
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.5, 0.9])
    x = (torch.rand(600, 6, generator=g) < p).float()
    v = (torch.rand(100, 6, generator=g) < p).float()
    pyro.set_rng_seed(0)
    vae = VAE((6,), 2, prior="vampprior", num_components=4, hidden_dim=16)
    train(vae, x, v, epochs=int(sys.argv[2]), batch_size=8, lr=3e-3, warmup_epochs=5, patience=None,
          ema_decay=0.9, progress=False, checkpoint_dir=sys.argv[1], resume=sys.argv[3] == "1")
    torch.save(vae.state_dict(), sys.argv[1] + "/final.pt")
""")


def test_kill_minus_9_and_resume_equals_the_uninterrupted_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    epochs = "30"
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(
        [sys.executable, str(script), str(full), epochs, "0"], check=True, env=env, timeout=300
    )
    proc = subprocess.Popen([sys.executable, str(script), str(cut), epochs, "0"], env=env)
    ckpt = cut / CHECKPOINT
    deadline = time.time() + 120
    while time.time() < deadline and not (
        ckpt.is_file() and ckpt.stat().st_mtime > 0 and _epochs_in(ckpt) >= 3
    ):
        time.sleep(0.05)
    time.sleep(0.37)  # land somewhere inside a later epoch (or a checkpoint write)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "final.pt").exists(), "the run finished before it could be killed"
    subprocess.run(
        [sys.executable, str(script), str(cut), epochs, "1"], check=True, env=env, timeout=300
    )
    a = torch.load(full / "final.pt", weights_only=True)
    b = torch.load(cut / "final.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _epochs_in(path):
    try:
        return read_checkpoint(path)["epoch"]
    except CheckpointError:
        return -1


def test_test_every_records_the_learning_curve_of_the_scored_parameters(tmp_path):
    from pyrovamp import log_likelihood
    from pyrovamp._random import derive_seed
    from pyrovamp.training.config import TEST_STREAM

    test = _data(20, seed=5)
    hist = train(
        _vae(),
        _data(),
        epochs=4,
        batch_size=32,
        lr=1e-2,
        patience=None,
        seed=3,
        progress=False,
        test_every=2,
        test_num_samples=8,
        test_data=test,
        checkpoint_dir=tmp_path / "a",
    )
    assert [("test_log_likelihood" in r) for r in hist] == [False, True, False, True]
    assert all(r["test_seconds"] > 0 for r in hist if "test_log_likelihood" in r)
    # the last point is the IS estimate of the returned (last) parameters with the fixed seed
    vae = _vae()
    load_model_weights(vae, tmp_path / "a" / MODEL)
    expected = float(log_likelihood(vae, test, 8, seed=derive_seed(3, TEST_STREAM)).mean())
    assert hist[-1]["test_log_likelihood"] == pytest.approx(expected, abs=1e-6)
    assert hist[1]["test_log_likelihood"] != hist[3]["test_log_likelihood"]
    # measuring the curve changes nothing about training (same parameters as without it)
    plain = _vae()
    train(plain, _data(), epochs=4, batch_size=32, lr=1e-2, patience=None, seed=3, progress=False)
    _same(vae, plain)


def test_test_every_needs_test_data_and_a_positive_integer():
    with pytest.raises(ValueError, match="test_every needs test_data"):
        train(_vae(), _data(), epochs=1, test_every=1, progress=False)
    with pytest.raises(ValueError, match="test_every must be a positive integer"):
        train(_vae(), _data(), epochs=1, test_every=0, test_data=_data(4), progress=False)
    with pytest.raises(ValueError, match="binary"):
        train(
            _vae(),
            _data(),
            epochs=1,
            test_every=1,
            test_data=torch.full((4, 6), 0.5),
            progress=False,
        )


def test_adam_norm_grad_is_adam_on_gradients_divided_by_their_norm():
    """The paper's AdamNormGrad (vae_vampprior utils/optimizer.py): g <- g / (||g|| + 1e-7) per
    tensor, then Adam; with a closure (as Lightning calls it) the closure's gradients are used."""
    from pyrovamp.training import OPTIMIZERS, AdamNormGrad

    assert OPTIMIZERS["adamnormgrad"] is AdamNormGrad
    torch.manual_seed(0)
    a, b = torch.randn(5, requires_grad=True), torch.randn(3, 2, requires_grad=True)
    ref = [a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()]
    opt, ref_opt = AdamNormGrad([a, b], lr=0.1), torch.optim.Adam(ref, lr=0.1)
    steps = []
    opt.register_step_post_hook(lambda *_: steps.append(1))
    for scale in (1.0, 100.0, 0.01):  # gradients of very different sizes step by step

        def closure(scale=scale):
            opt.zero_grad()
            loss = scale * ((a**2).sum() + (b**3).sum())
            loss.backward()
            return loss

        with torch.no_grad():
            before = scale * ((a**2).sum() + (b**3).sum()).item()
        assert opt.step(closure).item() == pytest.approx(before)  # the closure's loss
        ref_opt.zero_grad()
        (scale * ((ref[0] ** 2).sum() + (ref[1] ** 3).sum())).backward()
        for p in ref:
            p.grad /= p.grad.norm() + 1e-7
        ref_opt.step()
        assert torch.allclose(a, ref[0]) and torch.allclose(b, ref[1])
    assert len(steps) == 3  # the step hooks run once per step (Adam's own step is hooked too)


def test_adam_norm_grad_normalises_fused_layers_block_by_block_as_the_papers_separate_layers():
    """A gated layer computed as one Linear (pyrovamp) and trained by AdamNormGrad with the
    model's norm_chunks follows exactly the paper's two Linear layers (h, g), each normalised on
    its own; normalised as a whole (no norm_chunks) it does not."""
    from pyrovamp.nn import GatedDense, parameter_chunks
    from pyrovamp.training import AdamNormGrad

    torch.manual_seed(0)
    x = torch.randn(16, 3)
    h, g = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    with torch.no_grad():
        g.weight.mul_(30.0)  # the halves' gradients differ in size
    fused, whole = GatedDense(3, 4), GatedDense(3, 4)
    for layer in (fused, whole):
        with torch.no_grad():
            layer.linear.weight.copy_(torch.cat([h.weight, g.weight]))
            layer.linear.bias.copy_(torch.cat([h.bias, g.bias]))
    assert parameter_chunks(fused) == [2, 2]
    paper = AdamNormGrad([h.weight, h.bias, g.weight, g.bias], lr=0.05)
    ours = AdamNormGrad(
        [{"params": list(fused.parameters()), "norm_chunks": parameter_chunks(fused)}], lr=0.05
    )
    plain = AdamNormGrad(whole.parameters(), lr=0.05)
    for _ in range(4):
        for opt, loss in (
            (paper, lambda: (h(x) * torch.sigmoid(g(x))).sin().sum()),
            (ours, lambda: fused(x).sin().sum()),
            (plain, lambda: whole(x).sin().sum()),
        ):
            opt.zero_grad()
            loss().backward()
            opt.step()
    expected = torch.cat([h.weight, g.weight])
    assert torch.allclose(fused.linear.weight, expected, atol=1e-6)
    assert torch.allclose(fused.linear.bias, torch.cat([h.bias, g.bias]), atol=1e-6)
    assert not torch.allclose(whole.linear.weight, expected, atol=1e-3)


def test_parameter_chunks_mark_the_papers_separate_layers():
    """Gated layers and the mean / log-variance heads are two blocks each; a Bernoulli decoder's
    output layer and the pseudo-inputs one; a discretised logistic's output layer two (the
    paper's p_x_mean and p_x_logvar); bad norm_chunks are refused before any step."""
    from pyrovamp import HVAE
    from pyrovamp.nn import mark_fused, parameter_chunks
    from pyrovamp.training import AdamNormGrad

    m = HVAE((16,), 3, hidden_dim=8, num_components=4)
    chunks = dict(zip((n for n, _ in m.named_parameters()), parameter_chunks(m), strict=True))
    assert len(chunks) == len(list(m.parameters()))
    assert chunks["encoder.net.0.linear.weight"] == 2 and chunks["encoder.net.2.weight"] == 2
    assert chunks["encoder_z1.net.joint.1.bias"] == 2 and chunks["p_z1.net.joint.1.weight"] == 2
    assert chunks["decoder.joint.1.weight"] == 1 and chunks["prior.pseudo_inputs_logit"] == 1
    grey = VAE(
        (16,),
        3,
        likelihood="discretized_logistic",
        architecture="mlp",
        hidden_dim=8,
        prior="standard",
    )
    grey_chunks = dict(
        zip((n for n, _ in grey.named_parameters()), parameter_chunks(grey), strict=True)
    )
    last = sorted(n for n in grey_chunks if n.startswith("decoder."))[-1]
    assert grey_chunks[last] == 2 and grey_chunks["decoder.0.weight"] == 1
    w = torch.nn.Parameter(torch.zeros(6, 2))
    with pytest.raises(ValueError, match="norm_chunks"):
        AdamNormGrad([{"params": [w], "norm_chunks": [4]}])
    with pytest.raises(ValueError, match="norm_chunks"):
        AdamNormGrad([{"params": [w], "norm_chunks": [2, 2]}])
    with pytest.raises(ValueError, match="chunks must be a positive integer"):
        mark_fused(torch.nn.Linear(2, 5), 2)


def test_training_loop_gives_adam_norm_grad_the_models_blocks():
    """The Lightning module builds AdamNormGrad with the model's norm_chunks (and other
    optimisers with the plain parameters)."""
    from pyrovamp.nn import parameter_chunks
    from pyrovamp.training import AdamNormGrad, SVIModule, TrainConfig

    model = _vae()
    opt = SVIModule(model, TrainConfig(optimizer="adamnormgrad")).configure_optimizers()
    assert isinstance(opt, AdamNormGrad)
    assert opt.param_groups[0]["norm_chunks"] == parameter_chunks(model)
    assert 2 in opt.param_groups[0]["norm_chunks"]
    opt = SVIModule(model, TrainConfig(optimizer="adam")).configure_optimizers()
    assert "norm_chunks" not in opt.param_groups[0]


def test_a_model_file_that_does_not_fit_names_the_keys_in_one_line(tmp_path):
    from pyrovamp import HVAE

    trained = HVAE((8,), 3, prior="standard", hidden_dim=16, dropout=0.1)
    state = trained.state_dict()
    # a file whose decoder's last layer sits under another index, as a layout change would leave
    state = {k.replace("decoder.joint.1.", "decoder.joint.2."): v for k, v in state.items()}
    from pyrovamp.training.checkpoint import FORMAT

    torch.save(
        {"pyrovamp": {"scored_state": state, "model_class": "HVAE", "format": FORMAT}},
        tmp_path / MODEL,
    )
    with pytest.raises(CheckpointError) as e:
        load_model_weights(HVAE((8,), 3, prior="standard", hidden_dim=16), tmp_path / MODEL)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(
        "does not fit this model: missing decoder.joint.1.weight, decoder.joint.1.bias; "
        "unexpected decoder.joint.2.weight, decoder.joint.2.bias"
    )
    wide = HVAE((8,), 3, prior="standard", hidden_dim=20).state_dict()
    torch.save(
        {"pyrovamp": {"scored_state": wide, "model_class": "HVAE", "format": FORMAT}},
        tmp_path / MODEL,
    )
    with pytest.raises(CheckpointError, match=r"shape differs for \S+, \S+, \S+ and \d+ more"):
        load_model_weights(HVAE((8,), 3, prior="standard", hidden_dim=16), tmp_path / MODEL)
