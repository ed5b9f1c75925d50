"""The importance-sampled log-likelihood against exact marginals (factor analysis)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovamp import VAE, elbo, log_importance_weights, log_likelihood


class FactorAnalysis:
    """x = W z + b + eps, z ~ N(0, I), eps ~ N(0, diag psi): p(x) = N(b, W W^T + diag psi).

    The guide is the exact posterior (``exact=True``) or a deliberately mismatched Gaussian.
    """

    def __init__(self, D=5, L=2, exact=False, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(D, L, generator=g)
        self.b = torch.randn(D, generator=g)
        self.psi = 0.3 + torch.rand(D, generator=g)
        self.L, self.exact = L, exact
        # exact posterior: Sigma = (I + W^T Psi^-1 W)^-1, mu = Sigma W^T Psi^-1 (x - b)
        A = torch.eye(L) + self.W.T @ (self.W / self.psi[:, None])
        self.post_cov = torch.linalg.inv(A)
        self.post_gain = self.post_cov @ (self.W.T / self.psi)

    def marginal(self):
        cov = self.W @ self.W.T + torch.diag(self.psi)
        return dist.MultivariateNormal(self.b, cov)

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.L), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.psi.sqrt()).to_event(1), obs=x)

    def guide(self, x):
        loc = (x - self.b) @ self.post_gain.T
        if self.exact:
            q = dist.MultivariateNormal(loc, self.post_cov)
        else:  # a poorer diagonal proposal: shifted, too wide, no correlation
            q = dist.Normal(loc + 0.3, 1.5 * self.post_cov.diagonal().sqrt()).to_event(1)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", q)


def _data(fa, n=40):
    return fa.marginal().sample((n,))


def test_exact_posterior_gives_the_exact_marginal_for_any_chunking():
    fa = FactorAnalysis(exact=True)
    x = _data(fa)
    exact = fa.marginal().log_prob(x).double()
    for budget in (2**12, 2**20, 2**30):
        ll = log_likelihood(fa, x, num_samples=7, memory_budget=budget, seed=0)
        assert ll.shape == (40,) and ll.dtype == torch.float64
        assert torch.allclose(ll, exact, atol=1e-4)


def test_importance_sampling_matches_the_exact_marginal_within_monte_carlo_error():
    fa = FactorAnalysis(exact=False)
    x = _data(fa)
    exact = fa.marginal().log_prob(x).double()
    S = 5000
    log_w = log_importance_weights(fa, x, S, seed=1).double()
    ll = torch.logsumexp(log_w, 0) - math.log(S)
    # delta-method standard error of log(mean w)
    w = torch.exp(log_w - log_w.max(0).values)
    se = (w.std(0) / w.mean(0)) / math.sqrt(S)
    assert torch.all((ll - exact).abs() < 5 * se + 1e-3), ((ll - exact) / se)
    assert torch.allclose(log_likelihood(fa, x, S, seed=1), ll)


def test_estimator_is_above_the_elbo_and_tightens_with_more_samples():
    fa = FactorAnalysis(exact=False)
    x = _data(fa, 1000)
    exact = fa.marginal().log_prob(x).double().mean()
    e = elbo(fa, x, num_samples=100, seed=0).mean()
    errors = [float(exact - log_likelihood(fa, x, s, seed=0).mean()) for s in (1, 10, 100, 2000)]
    assert float(e) < exact - 0.05
    assert errors[0] == pytest.approx(float(exact - e), abs=0.2)   # S=1 is one ELBO sample
    assert all(a > b for a, b in zip(errors, errors[1:])), errors   # tightens monotonically
    assert errors[-1] > -0.02 and errors[-1] < 0.05


def test_vae_log_likelihood_above_elbo_and_seeded():
    vae = VAE((6,), 2, prior="vampprior", num_components=3, hidden_dim=16)
    x = torch.randint(0, 2, (20, 6)).float()
    ll = log_likelihood(vae, x, 500, seed=3)
    assert torch.equal(ll, log_likelihood(vae, x, 500, seed=3))
    assert ll.mean() > elbo(vae, x, 50, seed=3).mean()
    assert vae.training  # evaluation restores the mode


def test_prior_components_are_computed_once_per_call():
    vae = VAE((6,), 2, prior="vampprior", num_components=3, hidden_dim=16)
    calls = []
    vae.prior.register_forward_hook(lambda *a: calls.append(1))
    log_likelihood(vae, torch.randint(0, 2, (30, 6)).float(), 100, memory_budget=2**16)
    assert len(calls) > 1  # many chunks ...
    built = []
    original = vae.prior.distribution
    vae.prior.distribution = lambda: built.append(1) or original()
    log_likelihood(vae, torch.randint(0, 2, (30, 6)).float(), 100, memory_budget=2**16)
    assert len(built) == 1  # ... one encoding of the pseudo-inputs


def test_bad_arguments():
    vae = VAE((6,), 2, prior="standard", hidden_dim=8)
    with pytest.raises(ValueError, match="num_samples"):
        log_likelihood(vae, torch.zeros(2, 6), 0)
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        log_likelihood(vae, torch.zeros(2, 5), 10)
    with pytest.raises(ValueError, match="binary"):
        elbo(vae, torch.full((2, 6), 0.5))
