"""The importance-sampled log-likelihood against exact marginals (factor analysis, a VAE by
quadrature), blocks and seeds, any model and any data type, the memory plan."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyrovamp
from pyrovamp import (
    HVAE,
    VAE,
    ConvHVAE,
    active_units,
    elbo,
    elbo_terms,
    log_importance_weights,
    log_likelihood,
    points_per_block,
)
from pyrovamp.infer import planning
from pyrovamp.infer.planning import evaluation_plan, peak_bytes


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
    assert torch.all((ll - exact).abs() < 5 * se + 1e-3), (ll - exact) / se
    assert torch.allclose(log_likelihood(fa, x, S, seed=1), ll)


def test_estimator_is_above_the_elbo_and_tightens_with_more_samples():
    fa = FactorAnalysis(exact=False)
    x = _data(fa, 1000)
    exact = fa.marginal().log_prob(x).double().mean()
    e = elbo(fa, x, num_samples=100, seed=0).mean()
    errors = [float(exact - log_likelihood(fa, x, s, seed=0).mean()) for s in (1, 10, 100, 2000)]
    assert float(e) < exact - 0.05
    assert errors[0] == pytest.approx(float(exact - e), abs=0.2)  # S=1 is one ELBO sample
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), (
        errors
    )  # tightens monotonically
    assert errors[-1] > -0.02 and errors[-1] < 0.05


def _exact_vae_log_marginal(vae, x, half_width=7.0, n=401):
    """log p(x) = log int p(x|z) p(z) dz for a VAE with a 2-D latent, by a Riemann sum on a grid."""
    g = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        log_prior = vae.prior().log_prob(z.float()).double()  # (G,)
        log_lik = vae.decode(z.float()[:, None, :]).log_prob(x).double()  # (G, N)
    cell = float(g[1] - g[0]) ** 2
    return torch.logsumexp(log_lik + log_prior[:, None], 0) + math.log(cell)


def test_vae_log_likelihood_matches_the_exact_marginal_and_the_elbo_is_below_it():
    """A VAE with a 2-D latent: the exact log p(x) by quadrature. The guide is shifted away from
    the posterior, so the ELBO is clearly below log p(x), while importance sampling with enough
    samples recovers it; S=1 is one ELBO sample. (It fails if a term of the weights is wrong:
    log q, log p(z), the log S normalisation.)"""
    torch.manual_seed(0)
    vae = VAE((6,), 2, prior="mog", num_components=3, hidden_dim=16)
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.mul_(2.0)  # a decoder that depends clearly on z
        vae.encoder.net[-1].bias[:2] += 0.7  # the guide's means off the posterior
    x = (torch.rand(30, 6) < 0.5).float()
    exact = _exact_vae_log_marginal(vae, x)
    S = 4000
    ll = log_likelihood(vae, x, S, seed=1)
    log_w = log_importance_weights(vae, x, S, seed=1).double()
    assert torch.allclose(ll, torch.logsumexp(log_w, 0) - math.log(S))
    w = torch.exp(log_w - log_w.max(0).values)
    se = (w.std(0) / w.mean(0)) / math.sqrt(S)  # delta-method standard error of log(mean w)
    assert torch.all((ll - exact).abs() < 5 * se + 0.01), (ll - exact) / se
    el = elbo(vae, x, S, seed=2)
    assert float((exact - el).mean()) > 0.1  # the guide's KL gap
    assert torch.all(el < exact)
    one = log_likelihood(vae, x.repeat(20, 1), 1, seed=3)  # 20 draws per point: sd of mean ~0.06
    assert float(one.mean()) == pytest.approx(float(el.mean()), abs=0.3)
    assert torch.equal(ll, log_likelihood(vae, x, 4000, seed=1))  # seeded
    assert vae.training  # evaluation restores the mode


def test_seed_none_draws_from_the_global_generator():
    vae = VAE((6,), 2, prior="standard", hidden_dim=8)
    x = (torch.rand(5, 6) < 0.5).float()
    torch.manual_seed(7)
    a = log_likelihood(vae, x, 20)
    b = log_likelihood(vae, x, 20)
    torch.manual_seed(7)
    assert torch.equal(a, log_likelihood(vae, x, 20)) and not torch.equal(a, b)
    state = torch.get_rng_state()
    log_likelihood(vae, x, 20, seed=1)  # a seeded call leaves the global stream alone
    assert torch.equal(state, torch.get_rng_state())


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
    with pytest.raises(ValueError, match="first_block"):
        log_likelihood(vae, torch.zeros(2, 6), 3, first_block=-1)
    with pytest.raises(ValueError, match="seed"):
        elbo(vae, torch.zeros(2, 6), seed=True)
    with pytest.raises(ValueError, match="memory_budget"):
        log_importance_weights(vae, torch.zeros(2, 6), 3, memory_budget=0)
    with pytest.raises(ValueError, match="batch_size"):
        elbo_terms(vae, torch.zeros(2, 6), batch_size=0)
    with pytest.raises(ValueError, match="x must be a torch.Tensor or numpy array"):
        log_likelihood(vae, [[0, 1, 0, 1, 0, 1]], 3)
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        log_likelihood(vae, torch.zeros(2, 5), 10)
    with pytest.raises(ValueError, match="binary"):
        elbo(vae, torch.full((2, 6), 0.5))


# --- blocks and seeds: shards give exactly the values of one call -----------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: VAE((6,), 2, prior="vampprior", num_components=3, hidden_dim=16),
        lambda: HVAE((6,), 2, prior="mog", num_components=3, hidden_dim=8),
    ],
    ids=["VAE", "HVAE"],
)
def test_shards_scored_apart_equal_one_call(make, monkeypatch):
    torch.manual_seed(0)
    model = make()
    x = (torch.rand(23, 6) < 0.5).float()
    S = 30
    # a budget of about 6 points with all samples, chunks of about 2 points
    per_point = 2**30 / evaluation_plan(model, S, 2**30).points_per_block
    budget = int(6.5 * per_point)
    monkeypatch.setattr(planning, "CPU_CHUNK_BYTES", int(2.5 * per_point))
    plan = evaluation_plan(model, S, budget)
    B = points_per_block(model, S, budget)
    assert B == plan.points_per_block and 3 <= B <= 7 and 1 <= plan.points_per_chunk < B
    assert plan.samples_per_chunk == S
    kw = dict(memory_budget=budget, seed=5)
    whole = log_likelihood(model, x, S, **kw)
    for k in (1, 2):
        parts = [
            log_likelihood(model, x[: k * B], S, **kw),
            log_likelihood(model, x[k * B :], S, first_block=k, **kw),
        ]
        assert torch.equal(whole, torch.cat(parts))
    lw = log_importance_weights(model, x, S, **kw)
    assert torch.equal(
        lw,
        torch.cat(
            [
                log_importance_weights(model, x[:B], S, **kw),
                log_importance_weights(model, x[B:], S, first_block=1, **kw),
            ],
            1,
        ),
    )
    assert torch.equal(
        elbo(model, x, S, **kw),
        torch.cat(
            [elbo(model, x[: 2 * B], S, **kw), elbo(model, x[2 * B :], S, first_block=2, **kw)]
        ),
    )
    terms = elbo_terms(model, x, S, **kw)
    shards = [elbo_terms(model, x[:B], S, **kw), elbo_terms(model, x[B:], S, first_block=1, **kw)]
    for key in ("reconstruction", "kl", "elbo"):
        assert torch.equal(terms[key], torch.cat([t[key] for t in shards]))
    # a shard scored as the first block is a different draw: the block index matters
    assert not torch.equal(whole[B:], log_likelihood(model, x[B:], S, **kw))


def test_points_per_block_depends_on_the_model_not_the_data():
    torch.manual_seed(0)
    vae = VAE((6,), 2, prior="vampprior", num_components=3, hidden_dim=16)
    B = points_per_block(vae, 50, 2**16)
    assert B == points_per_block(vae, 50, 2**16)
    assert points_per_block(vae, 100, 2**16) < B  # more samples, fewer points
    assert points_per_block(vae, 50, 2**17) > B  # more memory, more points
    assert points_per_block(vae, 50, 2**16, batch_size=7) == 7
    fa = FactorAnalysis()
    with pytest.raises(ValueError, match="example"):
        points_per_block(fa, 50)
    assert points_per_block(fa, 50, 2**16, example=torch.zeros(1, 5)) >= 1


def test_the_paper_vae_scores_several_points_per_block_at_5000_samples():
    vae = VAE(
        (784,),
        40,
        prior="vampprior",
        hidden_dim=300,
        architecture="gated",
        num_components=500,
        logvar_bounds=(-6.0, 2.0),
    )
    assert points_per_block(vae, 5000) >= 4


# --- memory: the budget counts every activation --------------------------------------------------
def test_a_convhvae_chunk_stays_within_the_budget_and_uses_it():
    """The plan's chunk for a convolutional HVAE, measured, is within the budget and not far
    below it (an estimate that missed the convolutions' activations would overshoot)."""
    torch.manual_seed(0)
    conv = ConvHVAE((12, 12), 4, prior="vampprior", num_components=5, hidden_dim=16)
    budget = 6 * 2**20
    plan = evaluation_plan(conv, 500, budget)
    x = (torch.rand(plan.points_per_chunk, 144) < 0.5).float()
    peak = peak_bytes(conv, x, plan.samples_per_chunk)
    assert 0.7 * budget < peak <= budget, (peak / budget, plan)
    assert peak_bytes(conv, x, 2 * plan.samples_per_chunk) > budget


# --- any model: a guide with one parameter per data point ------------------------------------
class PerPointGuide:
    """z ~ N(0, I), x ~ N(A z, 1); guide: one Gaussian per data point (not amortised). The guide
    records its draws."""

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(3, 2, generator=g)
        self.loc = torch.randn(n, 2, generator=g)
        self.scale = 0.5 + torch.rand(n, 2, generator=g)
        self.draws = []

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.A.T, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            self.draws.append(pyro.sample("z", dist.Normal(self.loc, self.scale).to_event(1)))


def test_a_guide_with_one_parameter_per_point_gets_the_whole_data_set():
    N, S = 40, 60
    m = PerPointGuide(N)
    x = torch.randn(N, 3)
    lw = log_importance_weights(m, x, S, memory_budget=2**14, seed=0)
    # the last draws are the estimator's (the first ones are the memory probes); each has all N
    draws, total = [], 0
    for d in reversed(m.draws):
        draws.insert(0, d)
        total += d.shape[0]
        if total == S:
            break
    assert all(d.shape[1:] == (N, 2) for d in draws) and len(draws) > 1  # chunked samples
    z = torch.cat(draws)  # (S, N, 2)
    direct = (
        dist.Normal(z @ m.A.T, 1.0).log_prob(x).sum(-1)
        + dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        - dist.Normal(m.loc, m.scale).log_prob(z).sum(-1)
    )
    assert torch.allclose(lw, direct, atol=1e-5)
    m.draws.clear()
    ll = log_likelihood(m, x, S, memory_budget=2**14, seed=0)
    assert torch.allclose(ll, torch.logsumexp(direct.double(), 0) - math.log(S), atol=1e-5)
    with pytest.raises(ValueError, match="not amortised"):
        points_per_block(m, S, example=x[:1])


def test_a_broken_guide_raises_its_own_error():
    m = PerPointGuide(40)
    with pytest.raises(ValueError, match="Shape mismatch"):
        log_likelihood(m, torch.randn(39, 3), 10)  # one point short of the guide's 40


# --- data of any dtype, on the model's device -----------------------------------------------------
def _as(kind, x):
    return {
        "float64": x.double(),
        "int": x.long(),
        "uint8": x.to(torch.uint8),
        "bool": x.bool(),
        "numpy": x.double().numpy(),
        "numpy_int": x.long().numpy(),
    }[kind]


@pytest.mark.parametrize("kind", ["float64", "int", "uint8", "bool", "numpy", "numpy_int"])
def test_data_of_any_real_dtype_is_accepted(kind):
    torch.manual_seed(0)
    vae = VAE((6,), 2, prior="vampprior", num_components=3, hidden_dim=8)
    x = (torch.rand(9, 6) < 0.5).float()
    y = _as(kind, x)
    assert torch.equal(log_likelihood(vae, y, 20, seed=0), log_likelihood(vae, x, 20, seed=0))
    assert torch.equal(elbo(vae, y, 3, seed=0), elbo(vae, x, 3, seed=0))
    assert torch.equal(elbo_terms(vae, y, seed=0)["kl"], elbo_terms(vae, x, seed=0)["kl"])
    assert active_units(vae, y) == active_units(vae, x)
    tr = pyro.poutine.trace(vae.model).get_trace(y)
    assert tr.nodes["x"]["value"].dtype == torch.float32
    assert vae.reconstruct(y).shape == (9, 6)


def test_a_float64_model_gets_float64_data_and_results():
    torch.manual_seed(0)
    vae = VAE((6,), 2, prior="mog", num_components=3, hidden_dim=8).double()
    x = (torch.rand(5, 6) < 0.5).float()
    assert log_importance_weights(vae, x, 4, seed=0).dtype == torch.float64
    assert (
        pyro.poutine.trace(vae.guide).get_trace(x.numpy()).nodes["z"]["value"].dtype
        == torch.float64
    )


def test_train_accepts_float64_data():
    torch.manual_seed(0)
    vae = VAE((6,), 2, prior="vampprior", num_components=3, hidden_dim=8)
    x64 = (torch.rand(32, 6) < 0.5).double()
    before = [p.detach().clone() for p in vae.parameters()]
    history = pyrovamp.train(vae, x64, epochs=1, progress=False)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.parameters(), strict=False))


def test_user_model_data_is_cast_to_its_default_dtype():
    fa = FactorAnalysis(exact=True)
    x = _data(fa)
    ll = log_likelihood(fa, x.double().numpy(), 7, seed=0)
    assert torch.allclose(ll, fa.marginal().log_prob(x).double(), atol=1e-4)


# --- one log-weights core: IS, the ELBO and the IWAE loss --------------------------------------
def test_the_iwae_loss_is_the_importance_sampling_bound_and_needs_rsample():
    from pyrovamp.infer import IWAELoss

    fa = FactorAnalysis(exact=True)
    x = _data(fa, 6)
    # with the exact posterior as guide every weight is p(x): the loss is -sum log p(x)
    loss = IWAELoss(3).differentiable_loss(fa.model, fa.guide, x)
    assert float(loss) == pytest.approx(-float(fa.marginal().log_prob(x).sum()), abs=1e-3)
    parts = elbo_terms(fa, x, 3, seed=0)
    assert torch.allclose(parts["elbo"], fa.marginal().log_prob(x).double(), atol=1e-4)

    def discrete_guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Poisson(torch.ones(x.shape[0], fa.L)).to_event(1))

    with pytest.raises(ValueError, match="'z' is not reparameterised"):
        IWAELoss(3).differentiable_loss(fa.model, discrete_guide, x)
