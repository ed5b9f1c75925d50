import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyrovamp import VAE, Trainer, train
from pyrovamp.inference import ScaleLatents, TrainConfig


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.5, 0.9])
    return (torch.rand(n, 6, generator=g) < p).float()


def _vae(prior="vampprior"):
    pyro.set_rng_seed(0)
    return VAE((6,), 2, prior=prior, num_components=4, hidden_dim=16)


def test_scale_latents_scales_only_latent_sites():
    vae = _vae("standard")
    x = _data(4)
    with ScaleLatents(0.25):
        tr = poutine.trace(vae.model).get_trace(x)
    assert tr.nodes["z"]["scale"] == 0.25 and tr.nodes["x"]["scale"] == 1.0


def test_warmup_schedule():
    t = Trainer(_vae(), TrainConfig(warmup_epochs=4, progress=False))
    assert [t.beta_at(e) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert Trainer(_vae(), progress=False).beta_at(0) == 1.0


def test_training_improves_validation_elbo_and_restores_the_best():
    vae = _vae()
    t = Trainer(vae, epochs=30, batch_size=16, lr=1e-2, patience=5, progress=False)
    hist = t.fit(_data(), _data(48, seed=1))
    vals = [r["val_elbo"] for r in hist]
    assert max(vals) > vals[0] + 0.5
    assert t.best_val == max(vals)
    for k, v in vae.state_dict().items():  # the best parameters are the model's
        assert torch.equal(v, t.best_state[k])


@pytest.mark.parametrize("loss", ["meanfield", "jit_trace", "iwae"])
def test_other_losses_train(loss):
    vae = _vae("standard")
    hist = Trainer(vae, epochs=3, batch_size=32, loss=loss, patience=None, progress=False,
                   num_particles=3 if loss == "iwae" else 1).fit(_data())
    assert len(hist) == 3 and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in hist)


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_in_pieces_equals_one_uninterrupted_run(tmp_path, ema_decay):
    cfg = dict(epochs=6, batch_size=32, lr=1e-2, warmup_epochs=3, patience=None, seed=7,
               progress=False, checkpoint_every_s=0.0, ema_decay=ema_decay)
    full = _vae()
    train(full, _data(), _data(48, 1), checkpoint_path=tmp_path / "a.pt", **cfg)

    part = _vae()
    train(part, _data(), _data(48, 1), checkpoint_path=tmp_path / "b.pt", **{**cfg, "epochs": 2})
    again = _vae()  # a new process would build a fresh model and resume from the checkpoint
    hist = train(again, _data(), _data(48, 1), checkpoint_path=tmp_path / "b.pt", resume=True, **cfg)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4, 5, 6]
    for (k, v), w in zip(full.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k


def test_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    t = Trainer(_vae(), epochs=1, progress=False, checkpoint_path=path)
    t.fit(_data())
    good = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        t.save_checkpoint(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_ema_model_is_the_average_and_becomes_the_result():
    vae = _vae()
    t = Trainer(vae, epochs=4, batch_size=32, lr=1e-2, ema_decay=0.5, patience=None, progress=False)
    t.fit(_data())
    assert t.ema.n_averaged.item() == 4 * 3
    for k, v in vae.state_dict().items():
        assert torch.equal(v, t.ema.module.state_dict()[k]), k
    assert not all(torch.equal(v, t._last_state[k]) for k, v in vae.state_dict().items())


def test_bad_settings_are_refused_before_work():
    with pytest.raises(ValueError, match="ema_decay"):
        Trainer(_vae(), ema_decay=1.5)
    with pytest.raises(ValueError, match="num_particles >= 2"):
        Trainer(_vae(), loss="iwae")
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        Trainer(_vae(), optimizer="sgd")
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(_vae(), batch_size=0)
    with pytest.raises(ValueError, match="unknown training option"):
        train(_vae(), _data(), epochs=1, colour="red")
    with pytest.raises(ValueError, match="binary"):
        Trainer(_vae(), progress=False).fit(torch.full((4, 6), 0.5))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(_vae(), progress=False).fit(_data(), resume=True)


def test_resume_with_dynamic_binarisation_and_max_minutes(tmp_path):
    grey = torch.rand(64, 6, generator=torch.Generator().manual_seed(3))

    def sampler():
        return torch.bernoulli(grey)

    cfg = dict(epochs=5, batch_size=32, lr=1e-2, patience=None, seed=11, progress=False,
               checkpoint_every_s=0.0)
    full = _vae()
    train(full, sampler, _data(32, 1), checkpoint_path=tmp_path / "a.pt", **cfg)
    piece = _vae()
    t = Trainer(piece, TrainConfig(**cfg, max_minutes=1e-9), checkpoint_path=tmp_path / "b.pt")
    t.fit(sampler, _data(32, 1))
    assert t.epoch == 1 and not t.finished  # stopped cleanly after one epoch
    while True:
        again = _vae()
        t = Trainer(again, TrainConfig(**cfg, max_minutes=1e-9), checkpoint_path=tmp_path / "b.pt")
        t.fit(sampler, _data(32, 1), resume=True)
        if t.finished:
            break
    assert t.epoch == 5
    for (k, v), w in zip(full.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k
