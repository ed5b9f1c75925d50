"""Priors as full Pyro citizens: support, autoguides, a hand-written guide, init strategies, NUTS,
Predictive, parameter registration in one line, in both of Pyro's parameter modes."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import make_prior
from pyro.infer import MCMC, NUTS, SVI, JitTrace_ELBO, Predictive, Trace_ELBO
from pyro.infer.autoguide import (
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
)
from pyro.infer.mcmc.util import initialize_model
from torch.distributions import biject_to, constraints

from pyrovamp import VAE
from pyrovamp.priors import PRIORS, REAL_VECTOR, MoGPrior

AUTOGUIDES = [AutoNormal, AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal]


@pytest.fixture(params=[False, True], ids=["global_params", "module_local_params"])
def param_mode(request):
    """Both of Pyro's parameter modes (pyrovamp changes neither)."""
    with pyro.settings.context(module_local_params=request.param):
        pyro.clear_param_store()
        yield request.param
    pyro.clear_param_store()


def _data(n=12):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g) * torch.tensor([1.5, 0.5]) + torch.tensor([1.0, -1.0])


def _user_model(prior):
    """A user's own model: the prior in one line, nothing else from pyrovamp."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior())
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    return model


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(before, module):
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p)}


@pytest.mark.parametrize("name", PRIORS)
def test_support_is_a_real_vector_that_biject_to_handles(name):
    d = make_prior(name)()
    assert isinstance(d.support, constraints.independent)
    assert (
        d.support.base_constraint is constraints.real and d.support.reinterpreted_batch_ndims == 1
    )
    t = biject_to(d.support)
    u = torch.randn(4, 2)
    assert torch.equal(t(u), u)
    expanded = d.expand([3])  # what a plate does to the site's distribution
    assert expanded.support.reinterpreted_batch_ndims == 1 and expanded.batch_shape == (3,)
    assert REAL_VECTOR.check(torch.randn(5, 2)).all()


def _train(model, guide, modules, x, local, steps=3):
    """SVI with ``pyro.optim`` in Pyro's default mode; in module-local mode (where Pyro's own
    ``PyroModule`` guides need it) a ``torch.optim`` optimiser over the modules' parameters and
    the ELBO's ``differentiable_loss``, as Pyro recommends for that mode."""
    if not local:
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        return [svi.step(x) for _ in range(steps)]
    guide(x)  # autoguides create their parameters on the first call
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=0.05)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = Trace_ELBO().differentiable_loss(model, guide, x)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("guide_cls", AUTOGUIDES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", PRIORS)
def test_autoguides_train_every_prior_in_a_user_model(name, guide_cls, param_mode):
    prior = make_prior(name)
    model = _user_model(prior)
    guide = guide_cls(model)
    x = _data()
    before = _snapshot(prior)
    losses = _train(model, guide, [guide, prior], x, param_mode)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert _changed(before, prior) == set(before)  # every prior parameter trained


@pytest.mark.parametrize("name", PRIORS)
def test_hand_written_guide_trains_the_prior_with_torch_optim_too(name, param_mode):
    prior = make_prior(name)
    model = _user_model(prior)
    loc = torch.zeros(12, 2, requires_grad=True)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 0.3).to_event(1))

    x = _data()
    before = _snapshot(prior)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    svi.step(x)
    assert _changed(before, prior) == set(before)
    # the same with torch.optim over the prior's parameters and the ELBO's differentiable loss
    before = _snapshot(prior)
    opt = torch.optim.Adam(list(prior.parameters()) + [loc], lr=0.05)
    for _ in range(2):
        opt.zero_grad()
        Trace_ELBO().differentiable_loss(model, guide, x).backward()
        opt.step()
    assert _changed(before, prior) == set(before)


@pytest.mark.parametrize(
    "init",
    [init_to_median, init_to_mean, init_to_sample, init_to_feasible],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize("name", PRIORS)
def test_init_strategies(name, init):
    prior = make_prior(name)
    guide = AutoNormal(_user_model(prior), init_loc_fn=init)
    guide(_data())
    loc = guide.locs.z
    assert loc.shape == (12, 2) and bool(torch.isfinite(loc).all())


@pytest.mark.parametrize("name", PRIORS)
def test_nuts_scores_each_prior_by_its_own_log_density(name):
    """The potential energy NUTS/HMC follow is ``-(log p(z) + log p(x|z))`` with the prior's own
    ``log_prob`` (no Jacobian, as the support is all of R^L), and NUTS runs on it."""
    prior = make_prior(name)
    x = torch.tensor([0.5, -0.2])

    def model():
        z = pyro.sample("z", prior())
        pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    _, potential_fn, _, _ = initialize_model(model)
    z = torch.randn(2)
    expected = -(prior.log_prob(z) + dist.Normal(z, 0.5).to_event(1).log_prob(x))
    torch.testing.assert_close(potential_fn({"z": z}), expected)
    mcmc = MCMC(NUTS(model), num_samples=5, warmup_steps=5, disable_progbar=True)
    mcmc.run()
    draws = mcmc.get_samples()["z"]
    assert draws.shape == (5, 2) and bool(torch.isfinite(draws).all())


def test_nuts_draws_the_conjugate_posterior():
    """Standard prior ``z ~ N(0, I)``, ``x ~ N(z, I)``: the posterior is ``N(x / 2, I / 2)``.
    400 NUTS draws match its mean within a quarter of a posterior standard deviation and its
    standard deviation within 15%; a prior of scale 2 or none at all (``N(0.8 x, 0.8 I)``,
    ``N(x, I)``) would miss both."""
    pyro.set_rng_seed(0)
    prior = make_prior("standard")
    x = torch.tensor([1.0, -0.6])

    def model():
        z = pyro.sample("z", prior())
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    mcmc = MCMC(NUTS(model), num_samples=400, warmup_steps=200, disable_progbar=True)
    mcmc.run()
    z = mcmc.get_samples()["z"]
    mean, std = x / 2, torch.full((2,), 0.5**0.5)
    assert ((z.mean(0) - mean).abs() / std).max() < 0.25, z.mean(0)
    assert ((z.std(0) / std - 1).abs()).max() < 0.15, z.std(0)


@pytest.mark.parametrize("name", PRIORS)
def test_predictive_in_parallel(name):
    prior = make_prior(name)
    model = _user_model(prior)
    guide = AutoNormal(model)
    x = _data()
    guide(x)
    out = Predictive(model, guide=guide, num_samples=7, parallel=True, return_sites=["z", "x"])(x)
    assert out["z"].shape == (7, 12, 2) and out["x"].shape == (7, 12, 2)
    prior_only = Predictive(model, num_samples=5, parallel=True)(x)
    assert prior_only["z"].shape == (5, 12, 2)


@pytest.mark.filterwarnings(
    "ignore::torch.jit.TracerWarning", "ignore:.*torch.jit.trace.*:FutureWarning"
)
@pytest.mark.parametrize("elbo", [Trace_ELBO, JitTrace_ELBO], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", PRIORS)
def test_a_prior_registered_with_pyro_module_trains_under_every_elbo(name, elbo, param_mode):
    """``pyro.module("prior", prior)`` then ``pyro.sample("z", prior())``: one name per
    parameter (Pyro's JIT refuses a tensor under two names), so the JIT ELBO trains as the
    plain one, in both parameter modes."""
    prior = make_prior(name)
    x = _data()

    def model(x):
        pyro.module("prior", prior)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior())
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(x.shape[0], 2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 0.3).to_event(1))

    before = _snapshot(prior)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo(ignore_jit_warnings=True))
    losses = [svi.step(x) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert _changed(before, prior) == set(before)  # every prior parameter trained
    params = {n for n in pyro.get_param_store().keys() if "$$$" in n}
    assert params == {f"prior$$${n}" for n in before}  # under the user's names only


@pytest.mark.filterwarnings(
    "ignore::torch.jit.TracerWarning", "ignore:.*torch.jit.trace.*:FutureWarning"
)
def test_a_model_registered_with_pyro_module_trains_under_the_jit_elbo(param_mode):
    vae = VAE((6,), 2, prior="vampprior", num_components=3, hidden_dim=8)
    x = torch.randint(0, 2, (10, 6)).float()

    def model(x):
        pyro.module("vae", vae)
        return vae.model(x)

    def guide(x):
        pyro.module("vae", vae)
        return vae.guide(x)

    before = _snapshot(vae)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), JitTrace_ELBO(ignore_jit_warnings=True))
    losses = [svi.step(x) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert _changed(before, vae) == set(before)


def test_two_priors_of_one_class_never_share_parameters(param_mode):
    a, b = MoGPrior(2, 3), MoGPrior(2, 3)
    with torch.no_grad():
        b.means.copy_(a.means)  # same values, different modules
    assert a.pyro_name != b.pyro_name
    x = _data()
    model_a, model_b = _user_model(a), _user_model(b)
    guide_a, guide_b = AutoNormal(model_a), AutoNormal(model_b)
    before_a, before_b = _snapshot(a), _snapshot(b)
    _train(model_a, guide_a, [guide_a, a], x, param_mode)
    assert _changed(before_a, a) == set(before_a) and not _changed(before_b, b)
    before_a = _snapshot(a)
    _train(model_b, guide_b, [guide_b, b], x, param_mode)
    assert _changed(before_b, b) == set(before_b) and not _changed(before_a, a)


def test_prior_parameters_appear_in_the_trace_under_their_own_name(param_mode):
    prior = MoGPrior(2, 3)
    tr = pyro.poutine.trace(_user_model(prior)).get_trace(_data())
    params = {n: s["value"] for n, s in tr.nodes.items() if s["type"] == "param"}
    assert set(params) == {f"{prior.pyro_name}$$$means", f"{prior.pyro_name}$$$logvars"}
    assert params[f"{prior.pyro_name}$$$means"] is prior.means  # the module's own tensor
    # the global store is used in Pyro's default mode only
    assert (f"{prior.pyro_name}$$$means" in pyro.get_param_store()) == (not param_mode)


def test_a_stale_store_entry_is_replaced_by_the_modules_tensor():
    pyro.clear_param_store()
    prior = MoGPrior(2, 3)
    model = _user_model(prior)
    pyro.poutine.trace(model).get_trace(_data())  # registered
    # swap the module's Parameter objects: the store now holds stale tensors under its names
    prior.load_state_dict({k: v.clone() + 1.0 for k, v in prior.state_dict().items()}, assign=True)
    before = _snapshot(prior)
    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    svi.step(_data())
    assert _changed(before, prior) == set(before)
    assert pyro.get_param_store()[f"{prior.pyro_name}$$$means"] is prior.means


def test_registration_only_under_pyro_handlers():
    pyro.clear_param_store()
    prior = MoGPrior(2, 3)
    prior().log_prob(torch.zeros(2))  # a plain call: nothing registered
    assert not list(pyro.get_param_store().keys())
