"""copy.deepcopy and pickle of trained models give independent models that train -- with SVI and
pyro.optim, and with torch.optim over the ELBO's differentiable_loss (the Lightning trainer's
way), in Pyro's default and module-local parameter modes."""

import copy
import pickle

import pyro
import pytest
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from pyrovamp import HVAE, VAE, ConvHVAE
from pyrovamp.priors import PRIORS

MODELS = {
    "VAE": lambda prior: VAE(
        (8, 8), 2, prior=prior, hidden_dim=8, num_components=4, prior_hidden_dims=(8,)
    ),
    "HVAE": lambda prior: HVAE(
        (8, 8), 2, prior=prior, hidden_dim=8, num_components=4, prior_hidden_dims=(8,)
    ),
    "ConvHVAE": lambda prior: ConvHVAE(
        (4, 4), 2, prior=prior, hidden_dim=8, num_components=4, prior_hidden_dims=(8,)
    ),
}
ELBOS = [
    Trace_ELBO(),
    TraceMeanField_ELBO(),
    RenyiELBO(alpha=0.0, num_particles=2, vectorize_particles=True),
]
COPIES = {"deepcopy": copy.deepcopy, "pickle": lambda m: pickle.loads(pickle.dumps(m))}


def _x(model_name):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(6, 16 if model_name == "ConvHVAE" else 64, generator=g) < 0.4).float()


def _svi_step(m, x):
    SVI(m.model, m.guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO()).step(x)


def _torch_step(m, x, elbo):
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    opt.zero_grad()
    if hasattr(elbo, "differentiable_loss"):
        elbo.differentiable_loss(m.model, m.guide, x).backward()
    else:  # RenyiELBO has none: loss_and_grads backpropagates when it sees param sites
        elbo.loss_and_grads(m.model, m.guide, x)
    opt.step()


def _params(m):
    return [p.detach().clone() for p in m.parameters()]


def _all_changed(before, m):
    return all(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=False))


def _unchanged(before, m):
    return all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=False))


def _cases():
    """Every model x prior x kind of copy; the VAE in both of Pyro's parameter modes, the HVAEs in
    the default mode for deep copies and in module-local mode for pickled copies."""
    for model in MODELS:
        for prior in PRIORS:
            for how in COPIES:
                for local in (False, True):
                    if model != "VAE" and local != (how == "pickle"):
                        continue
                    mode = "module_local_params" if local else "global_params"
                    yield pytest.param(model, prior, how, local, id=f"{model}-{prior}-{how}-{mode}")


@pytest.mark.parametrize("model_name, prior, how, local", list(_cases()))
def test_copies_of_a_trained_model_are_independent_and_train(model_name, prior, how, local):
    x = _x(model_name)
    with pyro.settings.context(module_local_params=local):
        pyro.set_rng_seed(0)
        m = MODELS[model_name](prior)
        _svi_step(m, x)  # trained: registered with Pyro, a step of history on its tensors
        c = COPIES[how](m)
        assert c.pyro_name != m.pyro_name and c.prior.pyro_name != m.prior.pyro_name
        if getattr(c.prior, "encoder", None) is not None:
            assert c.prior.encoder is c.encoder  # the copy's VampPrior uses the copy's encoder
        elbo = ELBOS[PRIORS.index(prior) % 3]
        for step in (_svi_step, lambda mm, xx: _torch_step(mm, xx, elbo)):
            original, copied = _params(m), _params(c)
            step(c, x)
            assert _all_changed(copied, c), "the copy did not train"
            assert _unchanged(original, m), "training the copy changed the original"
        original, copied = _params(m), _params(c)
        _torch_step(m, x, Trace_ELBO())  # and the original still trains, alone
        assert _all_changed(original, m) and _unchanged(copied, c)
