"""The doubly reparameterised gradient of the IWAE bound (``IWAELoss(K, estimator="dreg")``,
``loss="iwae_dreg"``; Tucker et al. 2019): the same values, the same gradient for the model's
parameters, Tucker et al.'s eq. 7 for the guide's, and the same expectation as the IWAE gradient
(with and without KL annealing) at a fraction of its variance."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovamp.infer import IWAELoss
from pyrovamp.training import ScaleLatents

D = 3
MODEL_ONLY = ("a", "b", "c", "d")  # parameters of p(x, z) alone
GUIDE = ("w2", "s2", "w1", "u", "m1", "s1")  # parameters of q(z|x) alone
SHARED = ("m2",)  # in both, as the VampPrior's pseudo-inputs and encoder


class TwoLevel:
    """``z2 ~ N(m2, 1)``, ``z1 | z2 ~ N(a z2, 1)``, ``x | z1, z2 ~ N(b z1 + c z2 + d, 0.8^2 I)``
    with the hierarchical guide ``q(z2|x) q(z1|x, z2)``; ``m2`` is also the guide's offset for
    ``z2``, a parameter of both (float64)."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        shapes = dict(
            a=(), b=(D,), c=(D,), d=(D,), m2=(), w2=(D,), s2=(), w1=(D,), u=(), m1=(), s1=()
        )
        self.p = {
            k: (0.3 * torch.randn(s, generator=g, dtype=torch.float64)).requires_grad_()
            for k, s in shapes.items()
        }

    def model(self, x):
        p = self.p
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(p["m2"], 1.0))
            z1 = pyro.sample("z1", dist.Normal(p["a"] * z2, 1.0))
            loc = p["b"] * z1[..., None] + p["c"] * z2[..., None] + p["d"]
            pyro.sample("x", dist.Normal(loc, 0.8).to_event(1), obs=x)

    def q(self, x, z2=None, p=None):
        """``(loc, scale)`` of ``q(z2|x)``, or of ``q(z1|x, z2)`` given ``z2``."""
        p = self.p if p is None else p
        if z2 is None:
            return (x * p["w2"]).sum(-1) + p["m2"], p["s2"].exp()
        return (x * p["w1"]).sum(-1) + p["u"] * z2 + p["m1"], p["s1"].exp()

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(*self.q(x)))
            pyro.sample("z1", dist.Normal(*self.q(x, z2)))


def _data(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=torch.float64)


def _loss_and_grads(user, x, estimator, seed, k=5, beta=None):
    pyro.set_rng_seed(seed)
    loss = IWAELoss(k, estimator=estimator)
    if beta is None:
        value = loss.differentiable_loss(user.model, user.guide, x)
    else:
        with ScaleLatents(beta):
            value = loss.differentiable_loss(user.model, user.guide, x)
    grads = torch.autograd.grad(value, list(user.p.values()))
    return value.detach(), dict(zip(user.p, grads, strict=True))


def test_dreg_has_the_iwae_value_and_the_iwae_gradient_for_the_model():
    user, x = TwoLevel(), _data()
    iwae, g_iwae = _loss_and_grads(user, x, "iwae", seed=3)
    dreg, g_dreg = _loss_and_grads(user, x, "dreg", seed=3)
    assert float(dreg) == float(iwae)
    for name in MODEL_ONLY:
        assert torch.allclose(g_dreg[name], g_iwae[name], rtol=1e-12, atol=1e-12), name
    # the guide's gradients are another estimator of the same thing, not the same numbers
    assert not torch.allclose(g_dreg["w2"], g_iwae["w2"], rtol=1e-3)


def test_dreg_is_tuckers_equation_7_written_out():
    """Tucker et al. (2019), eq. 7, by hand with the same draws: ``sum_k w~_k grad log p`` at
    fixed draws, plus ``sum_k w~_k^2 d log w_k / d z_k dz_k/dphi`` with ``log q``'s parameters
    stopped; the shared ``m2`` gets both."""
    user, x, k = TwoLevel(), _data(), 5
    _, got = _loss_and_grads(user, x, "dreg", seed=4, k=k)
    # the same draws: the guide's first pass under the same seed gives the noise eps
    pyro.set_rng_seed(4)
    with pyro.plate("importance_samples", k, dim=-2):
        trace = pyro.poutine.trace(user.guide).get_trace(x)
    z2, z1 = trace.nodes["z2"]["value"].detach(), trace.nodes["z1"]["value"].detach()
    loc2, scale2 = user.q(x)
    eps2 = ((z2 - loc2) / scale2).detach()
    eps1 = ((z1 - user.q(x, z2)[0]) / user.q(x, z2)[1]).detach()
    stopped = {n: v.detach() for n, v in user.p.items()}

    def log_w(p, q, z2, z1):
        prior = dist.Normal(p["m2"], 1.0).log_prob(z2) + dist.Normal(p["a"] * z2, 1.0).log_prob(z1)
        loc = p["b"] * z1[..., None] + p["c"] * z2[..., None] + p["d"]
        lik = dist.Normal(loc, 0.8).log_prob(x).sum(-1)
        guide = dist.Normal(*user.q(x, p=q)).log_prob(z2) + dist.Normal(
            *user.q(x, z2, p=q)
        ).log_prob(z1)
        return lik + prior - guide

    lw = log_w(stopped, stopped, z2, z1)
    w = torch.softmax(lw, 0)
    # the draws as functions of the guide's parameters: z2 = T2(eps2), z1 = T1(eps1, z2)
    z2_live = user.q(x)[0] + user.q(x)[1] * eps2
    z1_live = user.q(x, z2_live)[0] + user.q(x, z2_live)[1] * eps1
    surrogate = (w * log_w(user.p, stopped, z2, z1)).sum() + (
        w.square() * log_w(stopped, stopped, z2_live, z1_live)
    ).sum()
    expected = torch.autograd.grad(-surrogate, list(user.p.values()), allow_unused=True)
    for name, e in zip(user.p, expected, strict=True):
        e = torch.zeros_like(user.p[name]) if e is None else e
        assert torch.allclose(got[name], e, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("beta", [None, 0.5], ids=["beta=1", "beta=0.5"])
def test_dreg_and_iwae_estimate_the_same_gradient_dreg_with_less_variance(beta):
    """Unbiased: over 20 independent estimates on 2400 points each, the mean gradients agree
    within 4 standard errors in every parameter (a factor w~ instead of w~^2, the biased
    'sticking the landing' gradient, is off by more than 20); and the guide's variance falls."""
    user, x = TwoLevel(), _data().repeat(400, 1)
    runs = {e: [] for e in ("iwae", "dreg")}
    for r in range(20):
        for e in runs:
            _, g = _loss_and_grads(user, x, e, seed=100 + r, beta=beta)
            runs[e].append(torch.cat([g[n].flatten() for n in user.p]))
    iwae, dreg = torch.stack(runs["iwae"]), torch.stack(runs["dreg"])
    se = ((iwae.var(0) + dreg.var(0)) / 20).sqrt().clamp_min(1e-12)
    assert ((iwae.mean(0) - dreg.mean(0)).abs() / se).max() < 4
    sizes = [user.p[n].numel() for n in user.p]
    index = [i for n, size in zip(user.p, sizes, strict=True) for i in [n] * size]
    guide = torch.tensor([n in GUIDE for n in index])
    assert (dreg.var(0)[guide].sum() / iwae.var(0)[guide].sum()) < 0.5


def test_dreg_trains_the_hvae_with_a_vampprior_and_matches_iwae_on_the_decoder():
    from pyrovamp.models import HVAE

    torch.manual_seed(0)
    model = HVAE(
        input_shape=(6,),
        latent_dim=2,
        z1_dim=2,
        hidden_dim=8,
        prior="vampprior",
        num_components=3,
    )
    x = torch.rand(5, 6).round()
    out = {}
    for e in ("iwae", "dreg"):
        model.zero_grad()
        pyro.set_rng_seed(5)
        loss = IWAELoss(4, estimator=e).differentiable_loss(model.model, model.guide, x)
        loss.backward()
        out[e] = (float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()})
    assert out["iwae"][0] == out["dreg"][0]
    grads_i, grads_d = out["iwae"][1], out["dreg"][1]
    assert all(torch.isfinite(g).all() for g in grads_d.values())
    decoder = [n for n in grads_d if n.startswith("decoder.")]
    assert decoder and all(torch.allclose(grads_d[n], grads_i[n], atol=1e-6) for n in decoder)
    # the encoder feeds both the guide and the VampPrior: its gradient changes
    encoder = [n for n in grads_d if n.startswith("encoder.")]
    assert any(not torch.allclose(grads_d[n], grads_i[n], atol=1e-6) for n in encoder)


def test_bad_options_are_refused_in_one_line():
    with pytest.raises(ValueError, match="num_particles must be an integer >= 2, got 1"):
        IWAELoss(1)
    with pytest.raises(ValueError, match="estimator must be one of iwae, dreg, got 'reinforce'"):
        IWAELoss(5, estimator="reinforce")
    assert repr(IWAELoss(5, "dreg")) == "IWAELoss(num_particles=5, estimator='dreg')"

    def discrete_guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z2", dist.Poisson(torch.ones(x.shape[0])))

    user = TwoLevel()
    with pytest.raises(ValueError, match="loss='iwae_dreg' needs reparameterised"):
        IWAELoss(3, "dreg").differentiable_loss(user.model, discrete_guide, _data())


def test_dreg_refuses_latent_sites_annealed_differently():
    user, x = TwoLevel(), _data()

    def half_z1_model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(user.p["m2"], 1.0))
            with pyro.poutine.scale(scale=0.5):
                z1 = pyro.sample("z1", dist.Normal(user.p["a"] * z2, 1.0))
            pyro.sample("x", dist.Normal(z1[..., None] + z2[..., None], 0.8).to_event(1), obs=x)

    with pytest.raises(ValueError, match="one KL scale for all latent sites") as info:
        IWAELoss(3, "dreg").differentiable_loss(half_z1_model, user.guide, x)
    assert "\n" not in str(info.value)
    # the IWAE gradient takes any scales (each site's enters the weights)
    assert math.isfinite(float(IWAELoss(3).differentiable_loss(half_z1_model, user.guide, x)))


def test_log_weights_take_the_guide_density_given():
    from pyrovamp.infer.weights import log_weights

    user, x = TwoLevel(), _data()
    pyro.set_rng_seed(6)
    plain = log_weights(user.model, user.guide, x, 4)
    pyro.set_rng_seed(6)
    no_q = log_weights(user.model, user.guide, x, 4, guide_log_density=lambda trace: 0.0)
    pyro.set_rng_seed(6)
    with pyro.plate("importance_samples", 4, dim=-2):
        trace = pyro.poutine.trace(user.guide).get_trace(x)
    log_q = sum(trace.nodes[n]["fn"].log_prob(trace.nodes[n]["value"]) for n in ("z1", "z2"))
    assert torch.allclose(no_q - plain, log_q.detach(), atol=1e-10)
