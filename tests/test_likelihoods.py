import pyro.distributions as dist
import pytest
import torch

from pyrovamp.likelihoods import BernoulliLikelihood, CategoricalLikelihood, make_likelihood


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


def test_discretized_logistic_sums_to_one_over_its_256_levels():
    from pyrovamp.likelihoods import DiscretizedLogistic, DiscretizedLogisticLikelihood

    loc = torch.tensor([0.0, 0.3, 0.999, 0.5, 1.2, -0.1])
    scale = torch.tensor([0.01, 0.1, 0.05, 0.011, 0.3, 1.0])
    d = DiscretizedLogistic(loc, scale)
    levels = torch.arange(256.0)[:, None].expand(256, 6)
    total = d.log_prob(levels).double().exp().sum(0)
    assert torch.allclose(total, torch.ones(6, dtype=torch.float64), atol=1e-4)
    s = d.sample((2000,))
    assert s.shape == (2000, 6) and bool(((s >= 0) & (s <= 255) & (s == s.round())).all())
    assert abs(float(s[:, 1].mean()) - 0.3 * 255) < 3.0
    like = DiscretizedLogisticLikelihood(3)
    p = like(torch.randn(4, 6))
    assert p.batch_shape == (4,) and p.event_shape == (3,)
    with pytest.raises(ValueError, match="integer grey levels in 0..255"):
        like.check_support(torch.tensor([[0.0, 256.0, 3.0]]))
