import pyro
import pyro.poutine as poutine
import pytest
import torch
from conftest import cuda
from pyro.infer import SVI, Trace_ELBO

from pyrovamp import HVAE, VAE, ConvHVAE
from pyrovamp.nn import GaussianEncoder
from pyrovamp.priors import PRIORS, GTMVampPrior, MoGPrior, VampPrior


def _digits_like(n=8):
    return torch.randint(0, 17, (n, 8, 8)).float()


@pytest.mark.parametrize("prior", PRIORS)
def test_model_and_guide_sites(prior):
    vae = VAE((8, 8), 2, prior=prior, likelihood="categorical", num_values=17, hidden_dim=16)
    x = _digits_like()
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    assert guide_tr.nodes["z"]["value"].shape == (8, 2)
    assert model_tr.nodes["x"]["is_observed"]
    assert [f.name for f in model_tr.nodes["z"]["cond_indep_stack"]] == ["data"]
    model_tr.compute_log_prob()
    assert model_tr.nodes["x"]["log_prob"].shape == (8,)
    assert vae.prior is vae._modules["prior"]


def test_encode_decode_sample_reconstruct_shapes():
    vae = VAE((8, 8), 3, prior="mog", likelihood="categorical", num_values=17, hidden_dim=16)
    x = _digits_like(5).reshape(5, 64)
    q = vae.encode(x)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    p = vae.decode(torch.randn(4, 5, 3))
    assert p.batch_shape == (4, 5) and p.event_shape == (64,)
    s = vae.sample(7)
    assert s.shape == (7, 64) and bool(((s >= 0) & (s <= 16) & (s == s.round())).all())
    assert vae.sample(7, mean=True).shape == (7, 64)
    r = vae.reconstruct(x)
    assert r.shape == (5, 64) and bool(((r >= 0) & (r <= 16)).all())


def test_vampprior_shares_the_guides_encoder():
    vae = VAE((6,), 2, prior="vampprior", num_components=4, hidden_dim=8)
    assert vae.prior.encoder is vae.encoder
    names = [n for n, _ in vae.named_parameters()]
    assert not any(n.startswith("prior.encoder") for n in names)  # one set of encoder weights


def test_prior_module_can_be_passed_and_swapped():
    prior = MoGPrior(2, 5)
    vae = VAE((6,), 2, prior=prior, hidden_dim=8)
    assert vae.prior is prior
    with pytest.raises(ValueError, match="latent_dim"):
        VAE((6,), 3, prior=prior)
    with pytest.raises(ValueError, match="unknown prior 'vamp'"):
        VAE((6,), 2, prior="vamp")
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        VAE((6,), 0, prior="standard")
    with pytest.raises(ValueError, match="num_values"):
        VAE((6,), 2, prior="standard", likelihood="categorical")
    with pytest.raises(ValueError, match="unknown likelihood"):
        VAE((6,), 2, prior="standard", likelihood="gaussian")


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(4, 5), r"shape \(N, 6\)"),
        (torch.zeros(6), r"shape \(N, 6\)"),
        (torch.zeros(0, 6), "empty"),
        (torch.tensor([[0.0, 1, 1, 0, float("nan"), 1]]), "NaN"),
        (torch.full((2, 6), 0.5), "binary"),
        ([[0, 1, 0, 1, 0, 1]], "torch.Tensor"),
    ],
)
def test_model_refuses_bad_input(bad, match):
    vae = VAE((6,), 2, prior="standard", hidden_dim=8)
    with pytest.raises(ValueError, match=match):
        vae.model(bad)
    with pytest.raises(ValueError, match=match):
        vae.guide(bad)


def test_categorical_support_is_checked():
    vae = VAE((4,), 2, prior="standard", likelihood="categorical", num_values=17, hidden_dim=8)
    with pytest.raises(ValueError, match=r"integers in 0..16"):
        vae.model(torch.tensor([[0.0, 3, 17, 2]]))
    with pytest.raises(ValueError, match=r"integers in 0..16"):
        vae.model(torch.tensor([[0.0, 3.5, 1, 2]]))


def test_two_models_in_one_session_do_not_share_parameters():
    x = torch.randint(0, 2, (16, 6)).float()
    a = VAE((6,), 2, prior="standard", hidden_dim=8)
    b = VAE((6,), 2, prior="standard", hidden_dim=8)
    for vae in (a, b):
        before = [p.detach().clone() for p in vae.parameters()]
        svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        for _ in range(3):
            svi.step(x)
        assert all(
            not torch.equal(p0, p1) for p0, p1 in zip(before, vae.parameters(), strict=False)
        )


def test_svi_lowers_the_loss():
    torch.manual_seed(0)
    x = (torch.rand(64, 6) < torch.tensor([0.9, 0.9, 0.1, 0.1, 0.5, 0.9])).float()
    vae = VAE((6,), 2, prior="vampprior", num_components=4, hidden_dim=32)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    first = sum(svi.evaluate_loss(x) for _ in range(20)) / 20
    for _ in range(150):
        svi.step(x)
    last = sum(svi.evaluate_loss(x) for _ in range(20)) / 20
    assert last < first - 0.5


@cuda
@pytest.mark.parametrize("prior", PRIORS)
def test_vae_on_cuda(prior):
    from pyrovamp import log_likelihood

    vae = VAE((8, 8), 2, prior=prior, likelihood="categorical", num_values=17, hidden_dim=16).cuda()
    x = _digits_like().cuda()
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    assert torch.isfinite(torch.tensor(svi.step(x)))
    ll = log_likelihood(vae, x, 50)
    assert ll.is_cuda and bool(torch.isfinite(ll).all())


@pytest.mark.parametrize("cls", [VAE, HVAE, ConvHVAE])
def test_options_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls((8, 8), 2, "standard")
    m = cls((8, 8), 2, prior="standard", hidden_dim=8)
    assert m.latent_dim == 2 and m.input_shape == (8, 8)


@pytest.mark.parametrize("cls", [VAE, HVAE, ConvHVAE])
def test_a_vampprior_on_another_encoder_is_refused(cls):
    m = cls((8, 8), 2, prior="standard", hidden_dim=8)
    stranger = GaussianEncoder(64, 2, [8])
    for bad in (VampPrior(stranger, 64, num_components=3), GTMVampPrior(stranger, 64, 2)):
        with pytest.raises(ValueError, match="model's own posterior"):
            m.prior = bad
        with pytest.raises(ValueError, match="model's own posterior"):
            cls((8, 8), 2, prior=bad, hidden_dim=8)
    assert m.prior.__class__.__name__ == "StandardPrior"  # a refused prior leaves it alone
    with pytest.raises(ValueError, match="latent_dim"):
        m.prior = VampPrior(m.encoder, 64, num_components=3, latent_dim=3)
    with pytest.raises(ValueError, match="input_dim"):
        m.prior = VampPrior(m.encoder, 63, num_components=3)
    with pytest.raises(ValueError, match="Prior"):
        m.prior = torch.nn.Linear(2, 2)
    own = VampPrior(m.encoder, 64, num_components=3)
    m.prior = own  # the definition: the model's own encoder at the pseudo-inputs
    assert m.prior is own and m.prior.encoder is m.encoder
    with pytest.raises(ValueError, match="encoder"):
        m.encoder = GaussianEncoder(64, 2, [8])  # would leave the prior on the old one
    m.prior = MoGPrior(2, 3)
    m.encoder = GaussianEncoder(64, 2, [8])  # fine once no prior uses it


def test_named_vampprior_uses_the_models_encoder():
    for cls in (VAE, HVAE, ConvHVAE):
        m = cls((8, 8), 2, prior="gtm-vampprior", hidden_dim=8, num_components=4)
        assert m.prior.encoder is m.encoder
