import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import cuda
from conftest import make_prior as small_prior
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch import nn

from pyrovamp.nn import GaussianEncoder
from pyrovamp.priors import (
    PRIORS,
    DiagonalGaussianMixture,
    FlowPrior,
    GTMPrior,
    GTMVampPrior,
    MoGPrior,
    StandardPrior,
    VampPrior,
    grid_points,
    make_prior,
)


def _perturb(prior):
    """Move every parameter away from its initial value so the tests see a non-trivial density
    (less for the flow, whose scales compound over layers into very heavy tails)."""
    g = torch.Generator().manual_seed(1)
    size = 0.1 if isinstance(prior, FlowPrior) else 0.3
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(size * torch.randn(p.shape, generator=g))
    return prior


@pytest.mark.parametrize("name", PRIORS)
def test_contract_shapes(name):
    prior = small_prior(name)
    d = prior()
    assert isinstance(d, TorchDistributionMixin) and isinstance(d, torch.distributions.Distribution)
    assert d.event_shape == (2,) and d.batch_shape == ()
    z = torch.randn(3, 4, 2)
    assert d.log_prob(z).shape == (3, 4)
    assert d.log_prob(torch.randn(2)).shape == ()
    assert d.sample((5, 7)).shape == (5, 7, 2)
    # inside a plate the prior broadcasts like any Pyro distribution
    with pyro.plate("data", 11):
        assert pyro.sample("z", prior()).shape == (11, 2)


# every prior, and the flow prior with each of zuko's three flows
KINDS = [*PRIORS, "flow:nsf", "flow:maf"]


def _kind(name):
    if name.startswith("flow:"):
        return FlowPrior(2, flow=name.split(":")[1], hidden_dims=(16,))
    return small_prior(name)


@pytest.mark.parametrize("name", KINDS)
def test_density_integrates_to_one(name):
    prior = _perturb(_kind(name))
    with torch.no_grad():
        s = prior.sample((4000,))
        lo = s.min(0).values - 6 * s.std(0)
        hi = s.max(0).values + 6 * s.std(0)
        n = 600
        g0 = torch.linspace(float(lo[0]), float(hi[0]), n)
        g1 = torch.linspace(float(lo[1]), float(hi[1]), n)
        zz = torch.stack(torch.meshgrid(g0, g1, indexing="ij"), -1)
        density = prior.log_prob(zz).double().exp()
        area = float((g0[1] - g0[0]) * (g1[1] - g1[0]))
        total = float(
            torch.trapezoid(
                torch.trapezoid(density, dx=float(g1[1] - g1[0]), dim=1), dx=float(g0[1] - g0[0])
            )
        )
    assert area > 0
    assert total == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", KINDS)
def test_samples_agree_with_log_prob(name):
    """Histogram of 200k samples vs the density integrated over the same bins (total variation)."""
    prior = _perturb(_kind(name))
    with torch.no_grad():
        s = prior.sample((200_000,))
        lo, hi = s.quantile(0.001, dim=0), s.quantile(0.999, dim=0)
        bins, fine = 12, 8
        e0 = torch.linspace(float(lo[0]), float(hi[0]), bins * fine + 1)
        e1 = torch.linspace(float(lo[1]), float(hi[1]), bins * fine + 1)
        c0, c1 = (e0[1:] + e0[:-1]) / 2, (e1[1:] + e1[:-1]) / 2
        zz = torch.stack(torch.meshgrid(c0, c1, indexing="ij"), -1)
        cell = float((e0[1] - e0[0]) * (e1[1] - e1[0]))
        mass = (
            (prior.log_prob(zz).double().exp() * cell).reshape(bins, fine, bins, fine).sum((1, 3))
        )
        i0 = torch.bucketize(s[:, 0].contiguous(), e0[fine::fine][:-1].contiguous())
        i1 = torch.bucketize(s[:, 1].contiguous(), e1[fine::fine][:-1].contiguous())
        inside = (s[:, 0] >= e0[0]) & (s[:, 0] <= e0[-1]) & (s[:, 1] >= e1[0]) & (s[:, 1] <= e1[-1])
        hist = torch.zeros(bins, bins, dtype=torch.float64)
        hist.index_put_(
            (i0[inside], i1[inside]),
            torch.ones(int(inside.sum()), dtype=torch.float64),
            accumulate=True,
        )
        hist /= s.shape[0]
    tv = 0.5 * float((hist - mass).abs().sum())
    assert tv < 0.03, tv


@pytest.mark.parametrize("name", KINDS)
def test_log_prob_checks_its_value_and_scores_integers_as_floats(name):
    prior = _perturb(_kind(name))
    with pytest.raises(ValueError, match=r"value must have last dimension 2, got shape \(5, 1\)"):
        prior.log_prob(torch.zeros(5, 1))  # would broadcast against (2,) unseen
    with pytest.raises(ValueError, match=r"value must have last dimension 2, got shape \(5, 3\)"):
        prior().log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        prior.log_prob(torch.tensor(0.0))
    with pytest.raises(TypeError, match=r"value must be a tensor of shape \(\.\.\., 2\)"):
        prior.log_prob([0.0, 1.0])
    z = torch.tensor([[0, 1], [2, -1], [1, 1]])
    for integers in (z, z.int(), z == 1):
        lp = prior.log_prob(integers)
        assert lp.dtype == torch.float32
        torch.testing.assert_close(lp, prior.log_prob(integers.float()))
    # a float64 z scores as float64 also where the prior is float32 (the flow: cast for it)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    lp64 = prior.log_prob(x.double())
    assert lp64.dtype == torch.float64
    torch.testing.assert_close(lp64.float(), prior.log_prob(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["mog", "vampprior", "gtm", "gtm-vampprior"])
def test_a_frozen_mixture_has_the_trainable_ones_gradient_and_hessian_in_z(name):
    """A frozen mixture scores by a hand-written gradient (AIS, HMC); a backward that builds a
    graph (a Hessian: the Laplace approximation) must still be exact, not zero."""
    prior = _perturb(small_prior(name))
    z = torch.randn(2, generator=torch.Generator().manual_seed(3))

    def derivatives():
        zz = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(prior.log_prob(zz), zz)
        return g, torch.autograd.functional.hessian(prior.log_prob, z)

    g_trainable, h_trainable = derivatives()
    prior.requires_grad_(False)
    g_frozen, h_frozen = derivatives()
    assert h_trainable.abs().max() > 0.1
    torch.testing.assert_close(g_frozen, g_trainable, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h_frozen, h_trainable, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", KINDS)
def test_an_infinite_z_scores_minus_infinity_and_leaves_the_others_alone(name):
    """Density 0 at an infinite coordinate, as the standard prior says; the mixtures centre a
    group of values on their mean, which an infinite value made NaN for the whole group."""
    prior = _perturb(_kind(name))
    g = torch.Generator().manual_seed(1)
    for shape, at in (((5, 2), (1,)), ((20, 3, 2), (4, 1))):  # one group; a stack of draws
        z = torch.randn(shape, generator=g)
        bad = z.clone()
        bad[at + (0,)] = math.inf
        bad[at[:-1] + (at[-1] - 1, 1)] = -math.inf
        for mode in ("trainable", "frozen", "no_grad"):
            prior.requires_grad_(mode == "trainable")
            with torch.set_grad_enabled(mode != "no_grad"):
                want = prior.log_prob(z).detach()
                got = prior.log_prob(bad.requires_grad_(mode == "frozen")).detach()
            hit = torch.isinf(bad).any(-1)
            assert bool((got[hit] == -math.inf).all()), (name, shape, mode, got[hit])
            torch.testing.assert_close(got[~hit], want[~hit], rtol=0, atol=1e-5)
            bad = bad.detach()
        prior.requires_grad_(True)


def test_mixture_is_over_whole_vectors_not_per_dimension():
    torch.manual_seed(0)
    prior = _perturb(MoGPrior(3, 5))
    z = torch.randn(10, 3)
    w = prior.logits.log_softmax(0)
    std = torch.exp(0.5 * prior.logvars)
    per_comp = dist.Normal(prior.means, std).log_prob(z[:, None, :]).sum(-1) + w  # sum over L first
    expected = per_comp.logsumexp(-1)
    factorised = (
        (dist.Normal(prior.means, std).log_prob(z[:, None, :]) + w[:, None]).logsumexp(1).sum(-1)
    )
    got = prior.log_prob(z)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, factorised, atol=1e-2)


def test_fast_mixture_log_prob_matches_mixture_same_family():
    torch.manual_seed(0)
    logits, loc, scale = torch.randn(7), 3 * torch.randn(7, 4), torch.rand(7, 4) * 0.5 + 0.02
    fast = DiagonalGaussianMixture(logits, loc, scale)
    ref = dist.MixtureSameFamily(
        dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1)
    )
    z = 3 * torch.randn(2, 5, 4)
    assert torch.allclose(fast.log_prob(z), ref.log_prob(z), rtol=1e-5, atol=1e-3)
    # far in the tails too (the float64 expansion keeps its precision)
    z_far = loc[0] + 40 * torch.randn(4)
    assert torch.allclose(fast.log_prob(z_far), ref.log_prob(z_far), rtol=1e-5)
    assert isinstance(fast, dist.MixtureSameFamily)
    expanded = fast.expand([3])
    assert expanded.batch_shape == (3,) and expanded.log_prob(z[0, :3]).shape == (3,)


def test_mog_uses_exp_half_logvar_as_std():
    prior = MoGPrior(2, 1)
    with torch.no_grad():
        prior.logvars.fill_(math.log(4.0))  # variance 4, std 2
        prior.means.zero_()
    s = prior.sample((50_000,))
    assert s.std(0).tolist() == pytest.approx([2.0, 2.0], rel=0.03)


def test_vampprior_shares_the_encoder_and_has_uniform_weights(encoder):
    prior = VampPrior(encoder, 6, num_components=5)
    assert prior.encoder is encoder
    assert "logits" not in dict(prior.named_parameters())
    d = prior()
    assert torch.allclose(d.mixture_distribution.probs, torch.full((5,), 0.2))
    loc, scale = encoder(prior.pseudo_inputs)
    assert torch.allclose(d.component_distribution.base_dist.loc, loc)
    learned = VampPrior(encoder, 6, num_components=5, learn_weights=True)
    assert "logits" in dict(learned.named_parameters())


@pytest.mark.parametrize("cls, args", [(VampPrior, (6, 5)), (GTMVampPrior, (6, 2))])
def test_an_encoder_of_another_latent_size_is_refused_in_one_line(cls, args):
    """A latent size other than the encoder's is refused when the prior is made; an encoder that
    does not say its size but gives another one, at ``log_prob`` with both shapes named (it
    failed inside the mixture's density)."""
    with pytest.raises(ValueError, match=r"latent_dim=3 but the encoder's latent_dim is 2"):
        cls(GaussianEncoder(6, 2, [8]), *args, latent_dim=3)

    class Unsized(nn.Module):  # (N, 6) -> (N, 2) posteriors, no .latent_dim
        def __init__(self):
            super().__init__()
            self.net = GaussianEncoder(6, 2, [8])

        def forward(self, x):
            return self.net(x)

    prior = cls(Unsized(), *args, latent_dim=3)
    k = prior.num_components
    with pytest.raises(ValueError, match=rf"loc \({k}, 2\) and scale \({k}, 2\); expected "
                       rf"\({k}, 3\)"):  # fmt: skip
        prior().log_prob(torch.zeros(4, 3))


def test_vampprior_pseudo_inputs_stay_in_range_and_init_from_data(encoder):
    prior = VampPrior(encoder, 6, num_components=4, data_range=(0.0, 16.0))
    u = prior.pseudo_inputs
    assert u.shape == (4, 6) and bool((u >= 0).all()) and bool((u <= 16).all())
    x = torch.tensor([[0.0, 16, 8, 4, 0, 16]] * 4)
    prior.init_from_data(x)
    assert torch.allclose(prior.pseudo_inputs, 0.8 + 0.9 * x, atol=1e-4)  # pulled 5% inside
    with pytest.raises(ValueError, match="shape"):
        prior.init_from_data(torch.zeros(3, 6))


def test_gradients_flow_to_every_parameter():
    for name in PRIORS:
        prior = small_prior(name)
        if name == "standard":
            assert list(prior.parameters()) == []
            continue
        loss = -prior().log_prob(torch.randn(8, 2)).sum()
        loss.backward()
        for pname, p in prior.named_parameters():
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()), (name, pname)
            assert p.grad.abs().sum() > 0, (name, pname)


def test_gtm_grid_varies_both_coordinates():
    g = grid_points(3)
    assert g.shape == (9, 2)
    assert len(set(map(tuple, g.tolist()))) == 9
    assert GTMPrior(2, 4).num_components == 16
    assert GTMVampPrior(GaussianEncoder(6, 2, [8]), 6, 4).pseudo_inputs.shape == (16, 6)


@pytest.mark.parametrize("flow, cls", [("realnvp", "RealNVP"), ("nsf", "NSF"), ("maf", "MAF")])
def test_flow_prior_is_zuko_wrapped_for_pyro(flow, cls):
    import copy
    import pickle

    import zuko
    from pyro.contrib.zuko import ZukoToPyro

    prior = FlowPrior(2, flow=flow, num_flows=2, hidden_dims=(8,))
    assert isinstance(prior.flow, getattr(zuko.flows, cls))
    d = prior()
    assert isinstance(d, ZukoToPyro) and isinstance(d, dist.TorchDistribution)
    support = d.support  # independent(real, 1): biject_to, autoguides and NUTS can use it
    assert (
        support.event_dim == 1 and support.base_constraint is torch.distributions.constraints.real
    )
    assert torch.distributions.biject_to(support)(torch.zeros(3, 2)).shape == (3, 2)
    # log_prob is vectorised over any leading shape: the IS code scores (S, N, L)
    z = torch.randn(5, 3, 4, 2)
    lp = d.log_prob(z)
    assert lp.shape == (5, 3, 4)
    assert torch.allclose(lp[2, 1], torch.stack([d.log_prob(z[2, 1, i]) for i in range(4)]))
    # draws through pyro.sample are reparameterised: gradients reach every flow parameter
    with pyro.plate("data", 6):
        s = pyro.sample("z", d)
    assert s.shape == (6, 2)
    s.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.parameters())
    # after a gradient step no tensor with an autograd graph is left on the module
    torch.optim.SGD(prior.parameters(), lr=0.1).step()
    prior.zero_grad()
    twin = copy.deepcopy(prior)
    again = pickle.loads(pickle.dumps(prior))
    assert torch.allclose(twin.log_prob(z), prior.log_prob(z))
    assert torch.allclose(again.log_prob(z), prior.log_prob(z))
    with torch.no_grad():
        next(twin.parameters()).add_(1.0)
    assert not torch.allclose(twin.log_prob(z), prior.log_prob(z))  # independent copies


@pytest.mark.parametrize("flow", ["realnvp", "nsf", "maf"])
def test_flow_prior_reuses_its_transform_and_stays_the_flows_density(flow):
    """The flow's transform is built once (zuko's transforms read the parameters when applied);
    the density stays zuko's own after an optimiser step, ``.double()`` and an assigning
    ``load_state_dict``."""
    prior = FlowPrior(2, flow=flow, num_flows=2, hidden_dims=(8,))
    z = torch.randn(7, 2)

    def same():
        x = z.to(next(prior.parameters()).dtype)
        torch.testing.assert_close(prior.log_prob(x), prior.flow().log_prob(x))

    same()
    assert prior().dist.transform is prior().dist.transform  # built once
    opt = torch.optim.SGD(prior.parameters(), lr=0.5)
    prior.log_prob(z).sum().backward()
    opt.step()
    same()
    prior.double()
    same()
    state = {
        k: v + 0.01 if v.is_floating_point() else v.clone() for k, v in prior.state_dict().items()
    }
    prior.load_state_dict(state, assign=True)
    same()


def test_flow_prior_arguments():
    assert FlowPrior(2).flow_name == "realnvp" and FlowPrior(2).num_flows == 4
    assert make_prior("flow", 3, flow="maf", num_flows=2).flow_name == "maf"
    assert FlowPrior(1, flow="maf").sample((4,)).shape == (4, 1)  # autoregressive: L=1 is fine
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        FlowPrior(1)
    with pytest.raises(ValueError, match="flow must be one of realnvp, nsf, maf"):
        FlowPrior(2, flow="glow")
    with pytest.raises(ValueError, match="num_flows"):
        FlowPrior(2, num_flows=0)


def test_cached_builds_once():
    prior = small_prior("vampprior")
    with torch.no_grad(), prior.cached():
        assert prior() is prior()
    assert prior() is not prior()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown prior 'nope'"):
        make_prior("nope", 2)
    with pytest.raises(ValueError, match="latent_dim"):
        StandardPrior(0)
    with pytest.raises(ValueError, match="square"):
        make_prior("gtm", 2, num_components=10)
    with pytest.raises(ValueError, match="encoder"):
        make_prior("vampprior", 2)


@cuda
@pytest.mark.parametrize("name", PRIORS)
def test_priors_on_cuda(name):
    prior = small_prior(name).cuda()
    z = prior.sample((10,))
    assert z.is_cuda and prior.log_prob(z).is_cuda


def test_vampprior_clamp_parameterization_is_the_papers(encoder):
    """The paper's code: u = hardtanh(a, low, high), a ~ N(low + 0.05 w, (0.01 w)^2) (w: range)."""
    torch.manual_seed(0)
    prior = VampPrior(
        encoder, 6, num_components=2000, data_range=(0.0, 16.0), parameterization="clamp"
    )
    u = prior.pseudo_inputs
    assert u.mean().item() == pytest.approx(0.8, abs=0.01)  # 0.05 * 16: nearly black
    assert u.std().item() == pytest.approx(0.16, rel=0.05)  # 0.01 * 16
    assert [n for n, _ in prior.named_parameters() if "encoder" not in n] == [
        "pseudo_inputs_unclamped"
    ]
    with torch.no_grad():  # the parameter is in units of the data range, as the paper's [0, 1]
        prior.pseudo_inputs_unclamped[0, :3] = torch.tensor([-0.1, 0.5, 1.1])
    u = prior.pseudo_inputs
    assert u[0, :3].tolist() == [0.0, 8.0, 16.0]  # clamped to the data range
    u[0, :3].sum().backward()
    # a pixel inside the range moves by the full step (x 16, the range); past an edge: none
    assert prior.pseudo_inputs_unclamped.grad[0, :3].tolist() == [0.0, 16.0, 0.0]
    prior.init_normal(0.5, 0.02)  # the paper's start for Frey Faces and Caltech 101
    assert prior.pseudo_inputs.mean().item() == pytest.approx(8.0, abs=0.02)
    assert prior.pseudo_inputs.std().item() == pytest.approx(0.32, rel=0.05)
    with pytest.raises(ValueError, match="std must be >= 0"):
        prior.init_normal(0.5, -1.0)
    x = torch.tensor([[0.0, 16, 8, 4, 0, 16]] * 2000)
    prior.init_from_data(x)
    assert torch.allclose(prior.pseudo_inputs, 0.8 + 0.9 * x, atol=1e-4)  # pulled 5% inside


def test_vampprior_sigmoid_parameterization_damps_the_step_and_is_the_default(encoder):
    prior = VampPrior(encoder, 6, num_components=4)
    assert prior.parameterization == "sigmoid"
    assert [n for n, _ in prior.named_parameters() if "encoder" not in n] == ["pseudo_inputs_logit"]
    prior.pseudo_inputs.sum().backward()
    g = prior.pseudo_inputs_logit.grad
    assert bool((g > 0).all()) and bool((g <= 0.25).all())  # d sigmoid / da <= 1/4
    clamp = VampPrior(encoder, 6, num_components=4, parameterization="clamp")
    with pytest.raises(RuntimeError, match="pseudo_inputs"):  # the two never load each other
        clamp.load_state_dict(prior.state_dict())
    with pytest.raises(ValueError, match="parameterization must be one of sigmoid, clamp"):
        VampPrior(encoder, 6, num_components=4, parameterization="tanh")


def test_a_wrong_keyword_gives_the_constructors_own_error_unchained():
    """The wrapper that records a module's arguments for rebuilding calls the constructor again
    to raise its error: outside its ``except`` (no "During handling ..." chain)."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_components'") as e:
        GTMPrior(latent_dim=2, num_components=4)
    assert e.value.__context__ is None


def test_what_a_prior_cannot_give_says_why():
    """torch's bare ``NotImplementedError()`` of the base class, with what to do instead."""
    mixture, flow = MoGPrior(2, 3)(), FlowPrior(2, hidden_dims=(8,))()
    for call, message in (
        (mixture.rsample, "no reparameterised sample"),
        (mixture.entropy, "entropy has no closed form"),
        (lambda: flow.mean, "mean has no closed form"),
        (lambda: flow.variance, "variance has no closed form"),
        (flow.entropy, "entropy has no closed form"),
    ):
        with pytest.raises(NotImplementedError, match=message):
            call()
    assert mixture.sample((4,)).shape == flow.sample((4,)).shape == (4, 2)


def test_a_far_or_nan_value_does_not_spoil_the_others_of_its_batch():
    """The mixtures centre a batch (a group of a stack) on its values' mean before the float32
    expansion: a value far away moved the centre off the others (7.4 nats of error near a
    narrow component with one value at 1000), and a NaN hid the rounding bound that sends a
    batch to float64 (a value beside it scored 512 for 6.65)."""
    far = MoGPrior(2, 2)
    with torch.no_grad():
        far.means.copy_(torch.tensor([[-1000.0, -1000.0], [1000.0, 1000.0]]))
        far.logvars.fill_(2 * math.log(0.01))
    near = torch.tensor([[1000.001, 999.998]])
    alone = far().log_prob(near.double())
    for other in ([math.nan, 0.0], [1e20, 1e20]):
        for frozen in (False, True):
            far.requires_grad_(not frozen)
            with torch.set_grad_enabled(frozen):
                z = torch.cat([near, torch.tensor([other])]).requires_grad_(frozen)
                got = far().log_prob(z).detach()
            torch.testing.assert_close(got[:1].double(), alone, rtol=0, atol=1e-4)
    far.requires_grad_(True)

    narrow = MoGPrior(2, 4)
    with torch.no_grad():
        narrow.means.copy_(torch.tensor([[0.0, 0.0], [1, 1], [-1, 2], [3, -3]]))
        narrow.logvars.fill_(2 * math.log(0.01))
    z = 0.01 * torch.randn(16, 1, 2, generator=torch.Generator().manual_seed(0))
    for where in (10.0, 100.0, 1000.0):  # a stack of 16 draws: the grouped path
        z[-1] = where
        exact = narrow().log_prob(z.double())[:15]
        err = (narrow().log_prob(z)[:15].double() - exact).abs().max()
        assert err < 0.01, (where, float(err))


@pytest.mark.parametrize("name", PRIORS)
def test_the_prior_module_given_where_its_distribution_is_meant_is_named(name):
    """``pyro.sample("z", prior)`` (the module, not ``prior()``): Pyro's draw of the site's value
    is refused at once, and the distribution scored as a value says so too (the error says what
    was meant)."""
    from pyro import poutine

    from pyrovamp.errors import ArgumentTypeError

    prior = small_prior(name)
    expected = r'got a \w+: a prior goes into pyro.sample called, pyro.sample\("z", prior\(\)\)'
    with pytest.raises(ArgumentTypeError, match=expected):
        prior.log_prob(prior())
    # (Pyro's trace adds its "Trace Shapes" lines below ours)
    said = (
        r'not a distribution: a prior goes into pyro.sample called, pyro.sample\("z", prior\(\)\)'
    )

    with pytest.raises(ArgumentTypeError, match=said):
        poutine.trace(lambda: pyro.sample("z", prior)).get_trace()
