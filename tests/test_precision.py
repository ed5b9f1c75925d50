"""Mixed precision (``precision="bf16-mixed"``, ``torch.autocast``): the networks run in
bfloat16, the log-densities in float32 (``pyrovamp._precision``). A log-density of hundreds of
pixels computed in bfloat16 is off by many nats per draw, which importance weights, the IWAE
bound and the validation bounds cannot absorb."""

import math

import pyro
import pytest
import torch

from pyrovamp import HVAE, VAE
from pyrovamp._precision import autocast_off, full_precision
from pyrovamp.infer import IWAELoss

TEMPLATE = torch.rand(784, generator=torch.Generator().manual_seed(9)).round()


def _sharp(model):
    """Decoder logits of about +-20 that agree with the data (:func:`_images`), as a trained
    MNIST decoder's: per image, sums of thousands of nats that cancel to tens."""
    last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias.copy_(20 * (2 * TEMPLATE - 1))
    return model


def _images(n, seed=1):
    """The template with 1% of its pixels flipped at random."""
    g = torch.Generator().manual_seed(seed)
    flips = (torch.rand(n, 784, generator=g) < 0.01).float()
    return (TEMPLATE + flips) % 2


@pytest.mark.parametrize("cls", [VAE, HVAE])
def test_log_densities_under_bf16_autocast_are_the_float32_ones(cls):
    torch.manual_seed(0)
    model = _sharp(
        cls(input_shape=(784,), latent_dim=8, hidden_dim=32, prior="vampprior", num_components=20)
    )
    x = _images(16)
    with torch.no_grad():
        q = model.encode(x)
        z = q.sample((4,))
        if cls is HVAE:
            z1 = model.encode_z1(x, z).sample()
            exact = model.decode(z1, z).log_prob(x)
        else:
            exact = model.decode(z).log_prob(x)
        prior_exact = model.prior(register=False).log_prob(z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = (model.decode(z1, z) if cls is HVAE else model.decode(z)).log_prob(x)
            prior_mixed = model.prior(register=False).log_prob(z)
    assert mixed.dtype == torch.float32 and prior_mixed.dtype == torch.float32
    # the networks' bfloat16 rounding remains (a few hundredths of a nat per draw); the sums'
    # rounding (16 to 32 nats at these magnitudes in bfloat16) does not
    assert (mixed - exact).abs().max() < 0.5
    assert (prior_mixed - prior_exact).abs().max() < 0.05


@pytest.mark.parametrize("estimator", ["iwae", "dreg"])
def test_the_iwae_bound_under_bf16_autocast_is_the_float32_bound(estimator):
    torch.manual_seed(0)
    model = _sharp(
        HVAE(input_shape=(784,), latent_dim=8, hidden_dim=32, prior="vampprior", num_components=20)
    )
    x = _images(32)
    loss = IWAELoss(20, estimator)
    values = {}
    for bf16 in (False, True):
        pyro.set_rng_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            value = loss.differentiable_loss(model.model, model.guide, x)
        value.backward()
        values[bf16] = float(value.detach()) / 32
        model.zero_grad()
    assert math.isfinite(values[True])
    assert abs(values[True] - values[False]) < 0.1  # nats per image


def test_full_precision_casts_only_what_autocast_made():
    t = torch.ones(3, dtype=torch.bfloat16)
    assert full_precision(t) is t  # a bfloat16 tensor by choice, outside autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert full_precision(t).dtype == torch.float32
        f = torch.ones(3)
        assert full_precision(f) is f
        with autocast_off(f):
            assert not torch.is_autocast_enabled("cpu")
            assert (f @ f).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")
    # a model in bfloat16 by choice computes in bfloat16
    model = VAE(input_shape=(784,), latent_dim=4, hidden_dim=16).to(torch.bfloat16)
    with torch.no_grad():
        h = model.decode(model.encode(_images(2).to(torch.bfloat16)).mean)
    assert h.base_dist.logits.dtype == torch.bfloat16


@pytest.mark.parametrize("flow", ["realnvp", "nsf", "maf"])
def test_a_flow_prior_under_bf16_autocast_is_its_float32_density(flow):
    # a flow's density is its networks: in bfloat16 its log-determinant was off by up to tens of
    # nats for a flow with large scales (the perturbation below)
    from pyrovamp import FlowPrior

    torch.manual_seed(0)
    prior = FlowPrior(8, flow=flow)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z = 1.5 * torch.randn(500, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exact = prior().log_prob(z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = prior().log_prob(z)
            d = prior()
            draw = d((300,))  # pyro.sample's path: the draw's log-density is cached
            cached = d.log_prob(draw)
        refit = prior().log_prob(draw)
    assert mixed.dtype == draw.dtype == cached.dtype == torch.float32
    assert torch.allclose(mixed, exact, atol=1e-4, rtol=1e-5)
    assert torch.allclose(cached, refit, atol=1e-3, rtol=1e-5)


def test_log_densities_on_the_meta_device():
    # a device type without autocast (meta: shapes only) is not asked whether autocast is on
    model = VAE(input_shape=(784,), latent_dim=4, hidden_dim=16).to("meta")
    x = torch.empty(3, 784, device="meta")
    assert model.decode(model.encode(x).mean).log_prob(x).shape == (3,)
