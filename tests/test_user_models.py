"""pyrovamp's estimators on a user's own Pyro model and guide: a model they cannot score per data
point is refused in one line naming the site, before a number comes back -- never a value that
silently depends on the batch -- and so is data they cannot score; the diagnostics and the priors
keep to torch's and numpy's habits (no warnings, torch's dtype promotion)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyrovamp as pv

L, D = 2, 6


def _nets(seed=0):
    torch.manual_seed(seed)
    return pv.MoGPrior(L, 3), nn.Linear(L, D), nn.Linear(D, 2 * L)


def _x(n=5):
    return torch.bernoulli(torch.full((n, D), 0.5), generator=torch.Generator().manual_seed(1))


def _pair(model_kind="plate", guide_kind="plate"):
    prior, dec, enc = _nets()

    def model(x):
        if model_kind == "no plate":  # the whole batch as one event
            z = pyro.sample("z", prior().expand([x.shape[0]]).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(2), obs=x)
            return
        if model_kind == "global":  # a latent shared by every point
            tau = pyro.sample("tau", dist.LogNormal(0.0, 1.0))
        else:
            tau = 1.0
        dim = -2 if model_kind == "dim -2" else -1
        with pyro.plate("data", x.shape[0], dim=dim):
            z = pyro.sample("z", prior())
            obs = x.unsqueeze(-2) if dim == -2 else x
            pyro.sample("x", dist.Bernoulli(logits=dec(z) * tau).to_event(1), obs=obs)

    def guide(x):
        loc, log_scale = enc(x).chunk(2, -1)
        if guide_kind == "no plate":
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(2))
            return
        if guide_kind == "none":
            return
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return SimpleNamespace(model=model, guide=guide)


def test_a_well_formed_user_model_scores_each_point_on_its_own():
    pair = _pair()
    x = _x()
    ll = pv.log_likelihood(pair, x, 200, seed=0)
    alone = torch.stack([pv.log_likelihood(pair, x[i : i + 1], 200, seed=0)[0] for i in range(5)])
    assert ll.shape == (5,) and (ll < 0).all()
    # not the batch's: the first point's value does not move with the batch (IS noise only)
    assert torch.allclose(ll, alone, atol=0.3)


@pytest.mark.parametrize("estimate", ["log_likelihood", "elbo"])
def test_a_model_without_a_data_plate_is_refused_not_scored_as_the_whole_batch(estimate):
    # before: every point got the log-density of the whole batch (-472 for 10 points, -235 for 5)
    pair = _pair("no plate", "no plate")
    fn = getattr(pv, estimate)
    with pytest.raises(ValueError) as e:
        fn(pair, _x(), 10) if estimate == "log_likelihood" else fn(pair, _x())
    msg = str(e.value)
    assert "\n" not in msg and "site 'z'" in msg and "outside the data plate" in msg


def test_a_latent_the_guide_does_not_sample_is_refused():
    # before: the model drew it from its prior and its log p counted without a proposal density
    with pytest.raises(ValueError, match=r"^latent site 'z' of the model is not sampled by the "):
        pv.log_likelihood(_pair(guide_kind="none"), _x(), 10)
    with pytest.raises(ValueError, match=r"^latent site 'tau' of the model is not sampled by "):
        pv.log_likelihood(_pair("global"), _x(), 10)
    pair = _pair()
    enc = nn.Linear(D, 2 * L)

    def extra_guide(x):  # an auxiliary draw the model does not have: its log q would count
        loc, log_scale = enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))
            pyro.sample("a", dist.Normal(loc[..., 0], 1.0))

    with pytest.raises(ValueError, match=r"^guide site 'a' is not a latent site of the model"):
        pv.log_likelihood(SimpleNamespace(model=pair.model, guide=extra_guide), _x(), 10)


def test_a_data_plate_at_dim_minus_2_gets_one_line_not_pyros_plate_collision():
    with pytest.raises(ValueError) as e:
        pv.log_likelihood(_pair("dim -2"), _x(), 10)
    msg = str(e.value)
    assert "\n" not in msg and "every site must sit in one plate over the data points" in msg
    assert "collide at dim=-2" in msg


def test_a_user_model_is_refused_nan_data_in_one_line():
    x = _x()
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^x holds NaN or infinite values$"):
        pv.log_likelihood(_pair(), x, 10)


def test_active_units_checks_its_arguments_first():
    vae = pv.VAE((D,), latent_dim=L)
    x = _x()
    for kwargs, match in [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": -1}, "batch_size must be a positive integer, got -1"),
        ({"num_samples": 0}, "num_samples must be a positive integer, got 0"),
        ({"threshold": -1.0}, r"threshold must be a number >= 0, got -1.0"),
        ({"threshold": float("nan")}, r"threshold must be a number >= 0, got nan"),
    ]:
        with pytest.raises(ValueError, match=match):
            pv.active_units(vae, x, **kwargs)
    with pytest.raises(TypeError, match="batch_size must be a positive integer, got 2.5"):
        pv.active_units(vae, x, batch_size=2.5)
    with pytest.raises(TypeError, match=r"active_units needs a model with posterior_means"):
        pv.active_units(None, x)
    assert pv.active_units(vae, x, batch_size=2) == pv.active_units(vae, x)
    assert pv.active_units(vae, x, threshold=0.0) == {"z": L}  # every unit that varies at all


def test_options_that_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="init_scale must be a positive number, got -1.0"):
        pv.MoGPrior(2, 3, init_scale=-1.0)
    model = pv.VAE((D,), latent_dim=L)
    with pytest.raises(ValueError, match=r"grid_size \(1024\) must be at most max_grid_size"):
        pv.exact_log_likelihood(model, _x(), grid_size=1024, max_grid_size=512)


def test_diagnostics_of_a_point_with_no_finite_weight_warn_nothing():
    lw = np.random.default_rng(0).normal(size=(50, 3))
    lw[:, 1] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = pv.importance_diagnostics(lw)
    assert d["log_likelihood"][1] == -np.inf and d["ess"][1] == 0.0
    assert np.isfinite(d["log_likelihood"][[0, 2]]).all() and (d["ess"][[0, 2]] > 1).all()
    # most weights 0, some not: finite estimates (the PSIS one was NaN), close to the plain one
    lw[:30, 2] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = pv.importance_diagnostics(lw)
    assert np.isfinite(d["log_likelihood_psis"][2]) and np.isfinite(d["ess"][2])
    assert abs(d["log_likelihood_psis"][2] - d["log_likelihood"][2]) < 0.5


@pytest.mark.parametrize("name", ["standard", "mog", "gtm", "flow"])
def test_a_float32_z_on_a_float64_prior_is_scored_in_float64(name):
    prior = pv.make_prior(name, L).double()
    z = torch.randn(4, L)
    assert prior.log_prob(z).dtype == torch.float64
    assert prior().log_prob(z).dtype == torch.float64
    assert torch.equal(prior.log_prob(z), prior.log_prob(z.double()))


@pytest.mark.parametrize("name", ["standard", "mog", "flow"])
def test_a_prior_given_to_pyro_sample_uncalled_says_to_call_it(name):
    # pyro.sample("z", prior) for pyro.sample("z", prior()): before, a 'support' AttributeError
    # deep in an autoguide, or the decoder handed a distribution as z
    prior = pv.make_prior(name, L)
    dec = nn.Linear(L, 1)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(dec(z).squeeze(-1), 1.0), obs=x)

    x = torch.randn(4)
    said = 'a prior goes into pyro.sample called, pyro.sample("z", prior())'
    runs = {
        "autoguide": lambda: pyro.infer.SVI(
            model,
            pyro.infer.autoguide.AutoNormal(model),
            pyro.optim.Adam({"lr": 0.01}),
            pyro.infer.Trace_ELBO(),
        ).step(x),
        "predictive": lambda: pyro.infer.Predictive(model, num_samples=2)(x),
        "a plain run": lambda: model(x),
        "outside any handler": lambda: pyro.sample("z", prior),
    }
    for run in runs.values():
        with pytest.raises((TypeError, AttributeError)) as e:
            run()
        assert said in str(e.value) and "\n" not in str(e.value)
    # called, it is a distribution, and the module keeps its own attributes
    assert pyro.sample("z", prior()).shape == (L,)
    assert not hasattr(prior, "support") and prior.sample((3,)).shape == (3, L)


@pytest.mark.parametrize("name", ["standard", "mog", "gtm", "flow"])
def test_jit_traced_elbo_gets_no_tracer_warning_from_pyrovamp(name):
    # the shape checks of the priors ran as Python booleans on traced shapes
    prior = pv.make_prior(name, L)
    dec, enc = nn.Linear(L, D), nn.Linear(D, 2 * L)

    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior())
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    pyro.clear_param_store()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.JitTrace_ELBO())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [svi.step(_x(8)) for _ in range(2)]
    assert np.isfinite(losses).all()
    ours = [w for w in caught if "pyrovamp" in w.filename]
    assert not ours, [(w.filename, w.lineno, str(w.message)[:60]) for w in ours]


def test_guides_pyro_users_write_are_scored_not_refused():
    """The guides the refusals above must let through: an autoguide's auxiliary draws (part of
    its density), and a guide of the one point it was fitted on (the memory planner's two-point
    probe must not refuse it)."""
    pair = _pair()
    x = _x()
    guide = pyro.infer.autoguide.AutoNormal(pair.model)
    guide(x)  # fitted to these points: one parameter per point
    ll = pv.log_likelihood(SimpleNamespace(model=pair.model, guide=guide), x, 20, seed=0)
    assert ll.shape == (5,) and torch.isfinite(ll).all()
    one = pv.log_likelihood(SimpleNamespace(model=pair.model, guide=guide), x, 20, seed=0)
    assert torch.equal(one, ll)
    prior, dec, _ = _nets()
    loc = torch.zeros(1, L)

    def guide_of_one(x):
        with pyro.plate("data", 1):
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))

    value = pv.log_likelihood(SimpleNamespace(model=pair.model, guide=guide_of_one), x[:1], 20)
    assert value.shape == (1,) and torch.isfinite(value).all()


def test_a_shape_bug_of_the_users_own_is_reported_as_pyros_not_blamed_on_the_samples_plate():
    pair = _pair()
    enc = nn.Linear(D, 2 * L)

    def wrong_guide(x):  # encodes three of the five points: the user's own bug
        loc, log_scale = enc(x[:3]).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    with pytest.raises(ValueError, match=r"^Shape mismatch inside plate\('data'\)"):
        pv.log_likelihood(SimpleNamespace(model=pair.model, guide=wrong_guide), _x(), 10)


def test_a_prior_called_in_compiled_code_and_a_subclass_attribute_error_stay_theirs():
    prior = pv.make_prior("mog", L)
    z = torch.randn(3, L)
    compiled = torch.compile(lambda z: prior().log_prob(z), backend="eager", fullgraph=True)
    assert torch.allclose(compiled(z), prior.log_prob(z))

    class Broken(pv.StandardPrior):
        @property
        def mean(self):
            return self.missing_buffer  # a bug inside the subclass's own property

    with pytest.raises(AttributeError, match="missing_buffer"):
        getattr(Broken(L), "mean")  # noqa: B009
