import math

import pyro.distributions as dist
import pytest
import torch

from pyrovamp.distributions import BernoulliLikelihood, CategoricalLikelihood, make_likelihood


def test_bernoulli_log_prob_equals_pyro_bernoulli_even_for_extreme_logits():
    h = torch.randn(3, 5, 6) * 30
    x = (torch.rand(5, 6) < 0.5).float()
    ours = BernoulliLikelihood(6)(h)
    ref = dist.Bernoulli(logits=h).to_event(1)
    assert ours.batch_shape == (3, 5) and ours.event_shape == (6,)
    assert torch.allclose(ours.log_prob(x), ref.log_prob(x), rtol=1e-5, atol=1e-4)
    assert ours.expand([2, 3, 5]).log_prob(x).shape == (2, 3, 5)


def test_categorical_sums_to_one_and_mean_is_expected_level():
    like = CategoricalLikelihood(4, 17)
    h = torch.randn(2, 4 * 17)
    d = like(h)
    levels = torch.arange(17.0)
    grid = levels[:, None].expand(17, 4)  # every level for every pixel
    per_pixel = d.base_dist.log_prob(grid[:, None, :]).exp()  # (17, 2, 4)
    assert torch.allclose(per_pixel.sum(0), torch.ones(2, 4), atol=1e-5)
    assert torch.allclose(like.mean(h), (per_pixel * levels[:, None, None]).sum(0), atol=1e-4)
    assert like.normalize(torch.tensor([0.0, 16.0])).tolist() == [0.0, 1.0]


def test_make_likelihood_errors():
    with pytest.raises(ValueError, match="num_values"):
        make_likelihood("categorical", 4)
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        make_likelihood("poisson", 4)
    with pytest.raises(ValueError, match="num_values must be an integer >= 2"):
        CategoricalLikelihood(4, 1)


def _logistic_bin_probabilities(loc, scale, n=256):
    """P(level k) of a discretised logistic, straight from the definition in float64: the mass of
    Logistic(loc, scale) on the bin [k/(n-1) - h, k/(n-1) + h], h = 0.5/(n-1), with the first and
    last bins taking the tails."""
    loc, scale = loc.double(), scale.double()
    k = torch.arange(n, dtype=torch.float64)[:, None]
    h = 0.5 / (n - 1)

    def cdf(v):
        return torch.sigmoid((v - loc) / scale)

    upper = torch.where(k == n - 1, torch.ones_like(loc), cdf(k / (n - 1) + h))
    lower = torch.where(k == 0, torch.zeros_like(loc), cdf(k / (n - 1) - h))
    return upper - lower  # (n, ...)


def _logistic_log_bin_mpmath(loc: float, scale: float, k: int, n: int = 256) -> float:
    """log P(level k), straight from the definition at 200 digits (mpmath): the two CDFs cancel
    to the bin's mass, as small as e^-100, with digits to spare."""
    import mpmath

    with mpmath.workdps(200):
        loc, scale = mpmath.mpf(loc), mpmath.mpf(scale)
        h, x = mpmath.mpf(0.5) / (n - 1), mpmath.mpf(k) / (n - 1)

        def cdf(v):
            return 1 / (1 + mpmath.exp(-(v - loc) / scale))

        upper = 1 if k == n - 1 else cdf(x + h)
        lower = 0 if k == 0 else cdf(x - h)
        return float(mpmath.log(upper - lower))


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-5), (torch.float64, 1e-9)])
def test_discretized_logistic_matches_its_definition_level_by_level(dtype, atol):
    """Every level, against the definition at 200 digits: also far out in the tails and above
    the location, where the difference of two float32 sigmoids lost up to 0.0065 nats and the
    density-at-the-centre stand-in for small bins up to 0.005."""
    from pyrovamp.distributions import DiscretizedLogistic

    loc = torch.tensor([0.0, 0.3, 0.999, 0.5, 1.2, -0.1, 0.02], dtype=dtype)
    scale = torch.tensor([0.01, 0.1, 0.05, 0.011, 0.3, 1.0, math.exp(-4.5)], dtype=dtype)
    d = DiscretizedLogistic(loc, scale)
    levels = list(range(0, 256, 5)) + [156, 243, 254, 255]
    got = d.log_prob(torch.tensor(levels, dtype=dtype)[:, None].expand(-1, 7)).double()
    want = torch.tensor(
        [
            [
                _logistic_log_bin_mpmath(float(a), float(b), k)
                for a, b in zip(loc, scale, strict=True)
            ]
            for k in levels
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, want, atol=atol, rtol=0)
    everything = d.log_prob(torch.arange(256.0, dtype=dtype)[:, None].expand(256, 7))
    torch.testing.assert_close(
        everything.double().exp().sum(0), torch.ones(7, dtype=torch.float64), atol=1e-5, rtol=0
    )


def test_discretized_logistic_samples_have_the_logistic_spread():
    from pyrovamp.distributions import DiscretizedLogistic

    loc, scale = torch.tensor([0.3, 0.6]), torch.tensor([0.05, 0.02])
    s = DiscretizedLogistic(loc, scale).sample((20000,))
    assert s.shape == (20000, 2) and bool(((s >= 0) & (s <= 255) & (s == s.round())).all())
    assert torch.allclose(s.mean(0), loc * 255, atol=0.5)
    std = scale * 255 * math.pi / math.sqrt(3)  # the logistic's standard deviation, in levels
    assert torch.allclose(s.std(0), std, rtol=0.03)


def test_discretized_logistic_likelihood_parameterisation():
    from pyrovamp.distributions import DiscretizedLogisticLikelihood

    like = DiscretizedLogisticLikelihood(3)
    h = torch.tensor([[0.0, 2.0, -1.0, math.log(0.1), -10.0, 3.0]])  # 3 locations, 3 log-scales
    p = like(h)
    assert p.batch_shape == (1,) and p.event_shape == (3,)
    assert torch.allclose(p.base_dist.loc, torch.sigmoid(h[:, :3]))
    assert torch.allclose(p.base_dist.scale, torch.tensor([[0.1, math.exp(-4.5), 1.0]]))
    x = torch.tensor([[0.0, 200.0, 77.0]])
    want = _logistic_bin_probabilities(p.base_dist.loc, p.base_dist.scale)
    assert torch.allclose(p.log_prob(x).double(), want.gather(0, x.long()).log().sum(-1), atol=1e-3)
    with pytest.raises(ValueError, match="integer grey levels in 0..255"):
        like.check_support(torch.tensor([[0.0, 256.0, 3.0]]))


def test_bernoulli_scores_a_stack_of_decoder_outputs_per_data_point():
    """Importance sampling's shape: S decoder outputs for each of N data points."""
    h = torch.randn(50, 4, 6) * 5
    x = (torch.rand(4, 6) < 0.5).float()
    ours = BernoulliLikelihood(6)(h)
    assert torch.allclose(
        ours.log_prob(x), dist.Bernoulli(logits=h).to_event(1).log_prob(x), atol=1e-4
    )
    assert type(ours.expand([2, 50, 4])) is type(ours)


@pytest.mark.parametrize("grad", [False, True])
def test_fast_softplus_matches_float64_softplus_and_its_gradient_is_sigmoid(grad):
    from pyrovamp.distributions import softplus

    h = torch.cat(
        [
            torch.linspace(-120.0, 120.0, 2001),
            torch.randn(3000) * 8,
            torch.tensor([0.0, -1e-8, 1e-8, 17.0, -17.0, 88.0, -88.0, 1e4, -1e4]),
        ]
    )
    h64 = h.double()
    truth = h64.clamp(min=0) + torch.log1p(torch.exp(-h64.abs()))  # exact in float64
    hh = h.clone().requires_grad_(grad)
    out = softplus(hh)
    assert out.dtype == torch.float32 and out.shape == h.shape
    assert torch.equal(hh.detach(), h)  # the input is never overwritten
    # as accurate as torch's own float32 softplus: within a few float32 ulps of the value
    err = (out.detach().double() - truth).abs()
    assert float((err / truth.clamp(min=1.0)).max()) < 3e-7
    ref = (torch.nn.functional.softplus(h).double() - truth).abs()
    assert float(err.sum()) < 2 * float(ref.sum()) + 1e-6
    if grad:
        out.sum().backward()
        torch.testing.assert_close(hh.grad, torch.sigmoid(h), atol=1e-7, rtol=1e-6)
