"""Quadrature for models with at most two latent dimensions, against closed forms."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import FactorAnalysis

from pyrovamp import VAE, exact_log_likelihood, log_likelihood
from pyrovamp.infer.exact import total_latent_dim


def LinearGaussian(D=5, L=2, seed=0, shift=0.3, scale=0.5):
    """The shared factor-analysis model with this file's guide: shifted, too narrow, uncorrelated
    (it only tells the quadrature where to look)."""
    return FactorAnalysis(D=D, L=L, seed=seed, shift=shift, scale=scale)


def _data(m, n=30, seed=1):
    torch.manual_seed(seed)
    return m.marginal().sample((n,))


@pytest.mark.parametrize("L", [1, 2])
def test_factor_analysis_matches_the_closed_form_to_1e_4_nats(L):
    fa = LinearGaussian(L=L)
    x = _data(fa)
    ll, info = exact_log_likelihood(fa, x, diagnostics=True)
    err = torch.as_tensor(info["error_estimate"])
    truth = fa.marginal().log_prob(x)
    assert ll.shape == (30,) and ll.dtype == torch.float64 and err.shape == (30,)
    assert (ll - truth).abs().max() < 1e-4
    assert bool((err < 0.01).all()) and bool((err >= 0).all())


class TwoSites:
    """Two one-dimensional latent sites, like a tiny HVAE: z2 ~ N(0, 1), z1 | z2 ~ N(a z2, s^2),
    x | z1, z2 ~ N(W [z1, z2] + b, diag psi). Jointly Gaussian, so p(x) is closed form."""

    def __init__(self, D=4, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(D, 2, generator=g, dtype=torch.float64)
        self.b = torch.randn(D, generator=g, dtype=torch.float64)
        self.psi = 0.2 + torch.rand(D, generator=g, dtype=torch.float64)
        self.a, self.s = 1.5, 0.4

    def marginal(self):
        cz = torch.tensor(
            [[self.a**2 + self.s**2, self.a], [self.a, 1.0]], dtype=torch.float64
        )  # Cov of (z1, z2)
        return dist.MultivariateNormal(self.b, self.W @ cz @ self.W.T + torch.diag(self.psi))

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros((), dtype=torch.float64), 1.0))
            z1 = pyro.sample("z1", dist.Normal(self.a * z2, self.s))
            z = torch.stack([z1, z2], -1)
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.psi.sqrt()).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(x[..., 0] * 0.1, 1.0))
            pyro.sample("z1", dist.Normal(self.a * z2, 0.5))


def test_two_latent_sites_are_integrated_jointly():
    m = TwoSites()
    x = _data(m, 20)
    ll, info = exact_log_likelihood(m, x, diagnostics=True)
    assert total_latent_dim(m, x) == 2
    assert (ll - m.marginal().log_prob(x)).abs().max() < 1e-4


class GammaPoisson:
    """z ~ Gamma(a, b) (positive support), x | z ~ Poisson(z): p(x) is negative binomial. The
    quadrature runs in log z (``biject_to`` of the support) with the Jacobian."""

    a, b = 3.0, 0.5

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Gamma(torch.tensor(self.a, dtype=torch.float64), self.b))
            pyro.sample("x", dist.Poisson(z), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.LogNormal(torch.log(x + 1.0), 0.5))

    def marginal_log_prob(self, x):
        a, b = self.a, self.b
        return (
            torch.lgamma(x + a)
            - math.lgamma(a)
            - torch.lgamma(x + 1)
            + a * math.log(b / (1 + b))
            - x * math.log(1 + b)
        )


def test_a_positive_latent_is_integrated_in_unconstrained_coordinates():
    m = GammaPoisson()
    x = torch.tensor([0.0, 1.0, 4.0, 9.0, 20.0], dtype=torch.float64)
    ll, info = exact_log_likelihood(m, x, diagnostics=True)
    assert (ll - m.marginal_log_prob(x)).abs().max() < 1e-4


class FarModes:
    """A two-component mixture prior with a linear-Gaussian likelihood; the guide sits on one
    component with a tiny scale, while the data come from the other one. p(x) is a mixture of
    two Gaussian marginals; the grid must find the mode the guide misses."""

    def __init__(self):
        self.W = torch.tensor([[1.0, 0.3], [-0.4, 1.2], [0.5, 0.5]], dtype=torch.float64)
        self.psi = torch.tensor([0.05, 0.08, 0.1], dtype=torch.float64)
        self.locs = torch.tensor([[-3.0, 0.0], [3.0, 2.0]], dtype=torch.float64)
        self.scales = torch.tensor([0.3, 0.5], dtype=torch.float64)

    def prior(self):
        comp = dist.Normal(self.locs, self.scales[:, None].expand(2, 2)).to_event(1)
        return dist.MixtureSameFamily(
            dist.Categorical(logits=torch.zeros(2, dtype=torch.float64)), comp
        )

    def marginal_log_prob(self, x):
        lps = []
        for k in range(2):
            cov = self.scales[k] ** 2 * self.W @ self.W.T + torch.diag(self.psi)
            lps.append(dist.MultivariateNormal(self.locs[k] @ self.W.T, cov).log_prob(x))
        return torch.logsumexp(torch.stack(lps), 0) - math.log(2)

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", dist.Normal(z @ self.W.T, self.psi.sqrt()).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(self.locs[0].expand(x.shape[0], 2), 0.05).to_event(1))


def test_a_mode_far_from_the_guide_is_found():
    m = FarModes()
    torch.manual_seed(0)
    z = m.locs[1] + m.scales[1] * torch.randn(10, 2, dtype=torch.float64)
    x = z @ m.W.T + m.psi.sqrt() * torch.randn(10, 3, dtype=torch.float64)
    ll, info = exact_log_likelihood(m, x, diagnostics=True)
    truth = m.marginal_log_prob(x)
    assert (ll - truth).abs().max() < 1e-3
    # importance sampling with this guide is hopeless: the check above is not trivial
    assert (log_likelihood(m, x, 1000, seed=0) - truth).abs().min() > 10


def _brute_force(model, x, R=8.0, n=800):
    """log p(x) of a pyrovamp VAE with L=2 by a plain uniform grid over [-R, R]^2."""
    h = 2 * R / n
    ax = -R + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    z = torch.stack(torch.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2).float()
    with torch.no_grad():
        model.eval()
        f = model.prior().log_prob(z)[:, None] + model.decode(z[:, None, :]).log_prob(x)
    return torch.logsumexp(f.double(), 0) + 2 * math.log(h)


def test_a_vampprior_vae_matches_a_brute_force_grid_and_is_above_importance_sampling():
    torch.manual_seed(0)
    vae = VAE(
        (6,),
        2,
        prior="vampprior",
        likelihood="categorical",
        num_values=5,
        hidden_dim=16,
        num_components=4,
    )
    x = torch.randint(0, 5, (12, 6)).float()
    ll, info = exact_log_likelihood(vae, x, diagnostics=True)
    err = torch.as_tensor(info["error_estimate"])
    assert vae.training  # the model's mode is restored
    assert (ll - _brute_force(vae, x)).abs().max() < 1e-3
    assert bool((err < 0.01).all())
    # importance sampling is a stochastic lower bound: on average below the exact value
    assert float((log_likelihood(vae, x, 200, seed=0) - ll).mean()) < 0.01


def test_log_likelihood_dispatches_method_exact():
    fa = LinearGaussian()
    x = _data(fa, 8)
    ll, info = exact_log_likelihood(fa, x, diagnostics=True)
    assert torch.equal(log_likelihood(fa, x, method="exact"), ll)
    ll2, d = log_likelihood(fa, x, method="exact", diagnostics=True, tol=0.001)
    assert (ll2 - fa.marginal().log_prob(x)).abs().max() < 1e-4
    assert d["error_estimate"].shape == (8,) and float(d["error_estimate"].max()) < 0.001
    with pytest.raises(ValueError, match="method"):
        log_likelihood(fa, x, method="quadrature")
    with pytest.raises(ValueError, match="tol"):
        log_likelihood(fa, x, method="is", tol=0.1)


def test_bad_input_raises_before_any_work(capsys):
    vae = VAE((6,), 3, prior="standard", likelihood="categorical", num_values=5, hidden_dim=8)
    x = torch.randint(0, 5, (4, 6)).float()
    with pytest.raises(ValueError, match="at most 2 latent dimensions"):
        exact_log_likelihood(vae, x, progress=True)
    assert "exact log-likelihood" not in capsys.readouterr().err  # no progress bar was started
    vae2 = VAE((6,), 2, prior="standard", likelihood="categorical", num_values=5, hidden_dim=8)
    with pytest.raises(ValueError, match="x must"):
        exact_log_likelihood(vae2, torch.full((4, 6), 9.0))
    with pytest.raises(ValueError, match="x"):
        exact_log_likelihood(vae2, torch.zeros(4, 5))
    for kw, name in [
        ({"tol": 0}, "tol"),
        ({"grid_size": 0}, "grid_size"),
        ({"max_levels": -1}, "max_levels"),
        ({"threshold": float("nan")}, "threshold"),
    ]:
        with pytest.raises(ValueError, match=name):
            exact_log_likelihood(vae2, x, **kw)
    with pytest.raises(ValueError, match="model"):
        exact_log_likelihood(object(), x)


def test_refinement_reaches_the_tolerance_and_reports_it():
    # a narrow posterior (the guide has its scale) on a first grid of a few guide standard
    # deviations per cell: its two resolutions disagree by more than tol, refinement is needed
    fa = LinearGaussian(D=8, L=2, seed=3, shift=0.0, scale=1.0)
    fa.psi = fa.psi * 0.05
    A = torch.eye(2, dtype=torch.float64) + fa.W.T @ (fa.W / fa.psi[:, None])
    fa.post_cov = torch.linalg.inv(A)
    fa.post_gain = fa.post_cov @ (fa.W.T / fa.psi)
    x = _data(fa, 6)
    with pytest.warns(UserWarning, match="max_grid_size"):
        ll, info = exact_log_likelihood(
            fa, x, tol=1e-4, grid_size=24, max_grid_size=24, diagnostics=True
        )
    err = torch.as_tensor(info["error_estimate"])
    assert int(info["levels"].min()) >= 1
    assert (ll - fa.marginal().log_prob(x)).abs().max() < 1e-4
    assert bool((err < 1e-4).all())
    with pytest.warns(UserWarning, match="above tol"):
        exact_log_likelihood(fa, x, grid_size=24, max_grid_size=24, max_levels=1, tol=1e-9)


def test_train_reports_the_exact_log_likelihood_for_two_latent_dimensions(tmp_path):
    from pyrovamp.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--prior",
                "mog",
                "--epochs",
                "1",
                "--max-points",
                "40",
                "--num-samples",
                "20",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["exact_error_estimate"] < 0.01
    # IS is a stochastic lower bound of the exact value
    assert m["test_log_likelihood"] <= m["test_log_likelihood_exact"] + 0.05

    m["my_note"] = "kept"
    (out / "metrics.json").write_text(json.dumps(m))
    assert main(["evaluate", str(out), "--method", "exact"]) == 0
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["my_note"] == "kept" and m2["exact_seconds"] > 0
    assert abs(m2["test_log_likelihood_exact"] - m["test_log_likelihood_exact"]) < 0.01
    import numpy as np

    per = np.load(out / "log_likelihood_exact.npz")
    assert per["log_likelihood"].shape == (40,) and float(per["error_estimate"].max()) < 0.01
    assert main(["evaluate", str(out), "--method", "exact", "--num-steps", "3"]) == 2


def test_a_latent_support_without_a_bijection_to_the_reals_is_refused():
    class IntervalMixture:  # a mixture of uniforms: support MixtureSameFamily(interval)
        def model(self, x):
            with pyro.plate("data", x.shape[0], dim=-1):
                comp = dist.Uniform(torch.zeros(2, 1), torch.ones(2, 1)).to_event(1)
                z = pyro.sample("z", dist.MixtureSameFamily(dist.Categorical(torch.ones(2)), comp))
                pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

        def guide(self, x):
            with pyro.plate("data", x.shape[0], dim=-1):
                pyro.sample("z", dist.Normal(torch.full((x.shape[0], 1), 0.5), 0.1).to_event(1))

    with pytest.raises(ValueError, match="cannot be mapped to the real line"):
        exact_log_likelihood(IntervalMixture(), torch.zeros(3, 1))
