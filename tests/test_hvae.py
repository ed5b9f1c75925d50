"""The two-level HVAE: sites, ELBO and importance sampling, active units."""

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyrovamp import HVAE, VAE, active_units, elbo, log_likelihood
from pyrovamp.priors import PRIORS


def _x(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 12, generator=g) < torch.linspace(0.1, 0.9, 12)).float()


def _hvae(prior="vampprior", **kw):
    pyro.set_rng_seed(0)
    return HVAE((12,), 3, prior=prior, hidden_dim=16, num_components=4, z1_dim=2, **kw)


@pytest.mark.parametrize("prior", PRIORS)
def test_sites_and_shapes(prior):
    m = _hvae(prior)
    x = _x(5)
    g = poutine.trace(m.guide).get_trace(x)
    tr = poutine.trace(poutine.replay(m.model, trace=g)).get_trace(x)
    assert g.nodes["z2"]["value"].shape == (5, 3) and g.nodes["z1"]["value"].shape == (5, 2)
    assert tr.nodes["x"]["is_observed"] and set(tr.stochastic_nodes) - {"data"} == {"z1", "z2"}
    assert m.sample(4).shape == (4, 12) and m.reconstruct(x).shape == (5, 12)
    if prior == "vampprior":
        assert m.prior.encoder is m.encoder  # components are q(z2|u_k)


def test_importance_sampling_is_above_the_elbo_and_tightens():
    m = _hvae()  # untrained: the guide is far from the posterior, so the bound is loose
    x = _x(256, seed=1)
    e = float(elbo(m, x, 200, seed=0).mean())
    lls = [float(log_likelihood(m, x, s, seed=0).mean()) for s in (1, 10, 100, 1000)]
    assert lls[0] == pytest.approx(e, abs=0.3)
    assert all(b > a for a, b in zip(lls, lls[1:], strict=False)), lls
    assert lls[-1] > e + 0.05


def test_active_units_counts_units_that_vary_with_the_data():
    m = VAE((12,), 4, prior="standard", hidden_dim=8)
    with torch.no_grad():  # make the encoder's mean depend on x through units 0 and 2 only
        last = m.encoder.net[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.weight[0, :] = 3.0
        last.weight[2, :] = -0.02  # varies, but below the threshold
    au = active_units(m, _x(200))
    assert au == {"z": 1}
    h = _hvae()  # z2: 3 units, z1: 2 units
    with torch.no_grad():  # E[z2|x] varies through unit 1 only; E[z1|x] through both units
        q2 = h.encoder.net[-1]
        q2.weight[:3].zero_()
        q2.bias[:3].zero_()
        q2.weight[1, :] = 2.0
        q2.weight[2, :] = 0.01  # varies, but below the threshold
        q1 = h.encoder_z1.net.joint[-1]
        q1.weight[:2].zero_()
        q1.bias[:2].zero_()
        q1.weight[0, :] = 2.0
        q1.weight[1, :] = -1.5
    assert active_units(h, _x(200)) == {"z2": 1, "z1": 2}
    assert active_units(h, _x(200), threshold=1e-8) == {"z2": 2, "z1": 2}
    with pytest.raises(ValueError, match="at least 2"):
        active_units(h, _x(1))


def test_hvae_bad_input():
    m = _hvae()
    with pytest.raises(ValueError, match="binary"):  # values: where data enter
        m.reconstruct(torch.full((2, 12), 0.3))
    with pytest.raises(ValueError, match=r"shape \(N, 12\)"):  # shapes: also in model/guide
        m.model(torch.zeros(2, 11))
    with pytest.raises(ValueError, match=r"shape \(N, 12\)"):
        m.guide(torch.zeros(2, 11))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 12\)"):
        m.encode_z1(torch.zeros(2, 11), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="z1_dim"):
        HVAE((12,), 3, prior="standard", z1_dim=0)


def test_decoder_dropout_acts_in_training_only_and_the_config_reaches_it():
    from pyrovamp.data import load_dataset
    from pyrovamp.workflow.runs import build_model, resolve_config, saved_config

    m = _hvae(dropout=0.5)
    z1, z2 = torch.randn(64, 2), torch.randn(64, 3)
    m.train()
    assert not torch.equal(m.decoder(z1, z2), m.decoder(z1, z2))  # units are dropped at random
    m.eval()  # ELBO and log-likelihood estimates use the whole network
    assert torch.equal(m.decoder(z1, z2), m.decoder(z1, z2))
    plain = _hvae()
    plain.load_state_dict(m.state_dict())  # dropout has no parameters: same keys
    plain.eval()
    assert torch.equal(plain.decoder(z1, z2), m.decoder(z1, z2))
    with pytest.raises(ValueError, match="dropout must be in"):
        _hvae(dropout=1.0)
    cfg = resolve_config(
        {
            "dataset": "digits",
            "preset": "fast",
            "model": "hvae",
            "prior": "standard",
            "dropout": 0.3,
            "latent_dim": 2,
        }
    )
    assert build_model(cfg, load_dataset("digits")).decoder.dropout == 0.3
    with pytest.raises(ValueError, match="dropout is for the MLP models"):
        build_model({**cfg, "model": "convhvae"}, load_dataset("digits"))
    # the book preset's dropout (Digits' default) is for the MLP decoders: not given to the conv
    # models, and their run folders that recorded it read back without it
    book = resolve_config({"dataset": "digits", "model": "pixelhvae", "prior": "standard"})
    assert book["preset"] == "book" and book["dropout"] == 0.0
    assert resolve_config({"dataset": "digits", "model": "hvae"})["dropout"] == 0.2
    assert saved_config({**book, "dropout": 0.2})["dropout"] == 0.0
