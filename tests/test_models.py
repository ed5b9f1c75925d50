import os
import traceback

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from conftest import cuda
from pyro.infer import SVI, Predictive, Trace_ELBO
from torch.overrides import TorchFunctionMode

from pyrovamp import HVAE, VAE, ConvHVAE, PixelHVAE, check_data
from pyrovamp.errors import ArgumentTypeError
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
    "bad, match, error",
    [
        (torch.zeros(4, 5), r"shape \(N, 6\)", ValueError),
        (torch.zeros(6), r"shape \(N, 6\)", ValueError),
        (torch.zeros(0, 6), "empty", ValueError),
        ([[0, 1, 0, 1, 0, 1]], "torch.Tensor", ArgumentTypeError),
        (np.array([["a"] * 6]), "real numbers", ArgumentTypeError),
    ],
)
def test_model_and_guide_refuse_a_bad_type_or_shape_in_one_line(bad, match, error):
    vae = VAE((6,), 2, prior="standard", hidden_dim=8)
    for fn in (vae.model, vae.guide, vae.reconstruct, vae.posterior_means):
        with pytest.raises(error, match=match) as info:
            fn(bad)
        assert "\n" not in str(info.value)
        if error is ValueError:  # a wrong shape is a wrong value, not a wrong type
            assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.tensor([[0.0, 1, 1, 0, float("nan"), 1]]), "NaN"),
        (torch.tensor([[0.0, 1, 1, 0, float("inf"), 1]]), "infinite"),
        (torch.full((2, 6), 0.5), "binary"),
    ],
)
def test_values_are_checked_where_data_enter(bad, match):
    """NaN and the support are checked once, where data enter -- ``check_data``, the methods
    taking user data, the estimators -- not in every model/guide call."""
    from pyrovamp import fit, log_likelihood

    vae = VAE((6,), 2, prior="standard", hidden_dim=8)
    calls = [
        lambda: check_data(bad, 6, vae.likelihood),
        lambda: vae.reconstruct(bad),
        lambda: vae.posterior_means(bad),
        lambda: log_likelihood(vae, bad, 2),
        lambda: fit(vae, bad, epochs=1, progress=False, logger="none"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert "\n" not in str(info.value) and not isinstance(info.value, TypeError)


def test_categorical_support_is_checked():
    vae = VAE((4,), 2, prior="standard", likelihood="categorical", num_values=17, hidden_dim=8)
    with pytest.raises(ValueError, match=r"integers in 0..16"):
        vae.reconstruct(torch.tensor([[0.0, 3, 17, 2]]))
    with pytest.raises(ValueError, match=r"integers in 0..16"):
        check_data(torch.tensor([[0.0, 3.5, 1, 2]]), 4, vae.likelihood)


_SYNCS = {
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "__complex__",
    "item",
    "tolist",
    "numpy",
    "cpu",
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "equal",
    "allclose",
}


class _HostSyncSpy(TorchFunctionMode):
    """Records the tensor operations that read values on the host (each a device-to-host
    synchronisation on a GPU), with pyrovamp's frame that led to each."""

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        index = args[1] if name == "__getitem__" and len(args) > 1 else None
        indices = index if isinstance(index, tuple) else (index,)
        masked = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
        if name in _SYNCS or masked:
            ours = [
                f"{f.filename}:{f.lineno}"
                for f in traceback.extract_stack()
                if f"{os.sep}pyrovamp{os.sep}" in f.filename
            ]
            if ours:
                self.found.append((name, ours[-1]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("cls", [VAE, HVAE, ConvHVAE, PixelHVAE])
def test_model_and_guide_make_no_host_sync(cls, prior, monkeypatch):
    """A training step reads no value on the host in pyrovamp's code: the data were checked
    where they entered (``fit``, the estimators), not again in every model/guide call."""
    import pyrovamp.models.vae as vae_module

    kw = {"channels": 4, "num_masked_layers": 2} if cls is PixelHVAE else {}
    m = cls((6, 6), 2, prior=prior, hidden_dim=8, num_components=4, **kw)
    x = torch.randint(0, 2, (8, 36)).float()
    Trace_ELBO().differentiable_loss(m.model, m.guide, x)  # built once (e.g. a flow's masks)

    def no_check(*args, **kwargs):
        raise AssertionError("check_data called in model/guide")

    monkeypatch.setattr(vae_module, "check_data", no_check)
    with _HostSyncSpy() as spy:
        loss = Trace_ELBO().differentiable_loss(m.model, m.guide, x)
        loss.backward()
    assert spy.found == []
    assert torch.isfinite(loss)


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


def _small(cls, prior="vampprior", likelihood="bernoulli"):
    pyro.set_rng_seed(0)
    kw = {"channels": 4, "num_masked_layers": 2} if cls is PixelHVAE else {}
    num_values = 17 if likelihood == "categorical" else None
    return cls(
        (6, 6),
        2,
        prior=prior,
        likelihood=likelihood,
        num_values=num_values,
        hidden_dim=8,
        num_components=4,
        **kw,
    )


@pytest.mark.parametrize("cls", [VAE, HVAE, ConvHVAE, PixelHVAE])
def test_counts_are_checked_in_one_line_naming_the_argument(cls):
    m = _small(cls)
    with pytest.raises(ValueError, match=r"^num_samples must be a positive integer, got 0$"):
        m.sample(0)
    for bad in (2.5, "3", True, None):
        with pytest.raises(ArgumentTypeError, match=r"^num_samples must be a positive integer"):
            m.sample(bad)
    with pytest.raises(ArgumentTypeError, match="^mean must be True or False"):
        m.sample(2, mean="yes")
    assert m.sample(np.int64(3)).shape == (3, 36)  # numpy integers are integers
    x = torch.randint(0, 2, (4, 36)).float()
    with pytest.raises(ValueError, match="^num_samples must be a positive integer, got -1$"):
        m.posterior_means(x, -1)
    with pytest.raises(ArgumentTypeError, match="^num_points must be a positive integer"):
        m.model(None, num_points=1.5)
    with pytest.raises(ValueError, match="^num_points must be a positive integer, got 0$"):
        m.model(None, num_points=0)
    with pytest.raises(ValueError, match="num_points .* with data x it must be left at 1"):
        m.model(x, num_points=3)
    sizes = cls((6, 6), np.int64(2), prior="mog", hidden_dim=np.int32(8), num_components=3)
    assert sizes.latent_dim == 2 and type(sizes.latent_dim) is int
    with pytest.raises(ArgumentTypeError, match="^latent_dim must be a positive integer"):
        cls((6, 6), 2.0, prior="standard")


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
@pytest.mark.parametrize("cls", [VAE, HVAE, ConvHVAE, PixelHVAE])
def test_the_model_draws_new_data_through_predictive(cls, parallel):
    m = _small(cls)
    out = Predictive(m.model, num_samples=3, parallel=parallel)(None, num_points=5)
    latents = {"z": 2} if cls is VAE else {"z2": 2, "z1": 2}
    assert set(out) == {"x", *latents}
    assert out["x"].shape == (3, 5, 36)
    for name, size in latents.items():
        assert out[name].shape == (3, 5, size)
    assert set(out["x"].unique().tolist()) <= {0.0, 1.0}
    # x is drawn (not observed) and scored by p(x|z)
    tr = poutine.trace(m.model).get_trace(None, num_points=4)
    assert not tr.nodes["x"]["is_observed"] and tr.nodes["x"]["value"].shape == (4, 36)
    # the posterior predictive keeps working
    x = torch.randint(0, 2, (4, 36)).float()
    post = Predictive(m.model, guide=m.guide, num_samples=2, parallel=parallel)(x)
    assert all(post[name].shape == (2, 4, size) for name, size in latents.items())


def test_drawn_data_follow_the_decoder():
    """``x`` drawn by ``model(None)`` is ``p(x|z)`` at the drawn ``z``: over 4000 draws the
    average image matches the average decoder mean at the same ``z`` (Bernoulli and
    categorical)."""
    for likelihood in ("bernoulli", "categorical"):
        m = _small(VAE, "mog", likelihood)
        out = Predictive(m.model, num_samples=4000, parallel=True)(None, num_points=1)
        with torch.no_grad():
            expected = m.likelihood.mean(m.decoder(out["z"])).mean((0, 1))
        levels = 16.0 if likelihood == "categorical" else 1.0
        err = (out["x"].float().mean((0, 1)) - expected).abs().max() / levels
        assert err < 0.04, (likelihood, float(err))


@pytest.mark.parametrize("cls", [VAE, HVAE, ConvHVAE, PixelHVAE])
def test_model_with_data_is_unchanged(cls):
    """``model(x)`` is the same program as before: same sites, observed ``x``, same score."""
    m = _small(cls)
    x = torch.randint(0, 2, (4, 36)).float()
    g = poutine.trace(m.guide).get_trace(x)
    a = poutine.trace(poutine.replay(m.model, trace=g)).get_trace(x)
    b = poutine.trace(poutine.replay(m.model, trace=g)).get_trace(x.numpy(), num_points=1)
    assert a.nodes["x"]["is_observed"] and torch.equal(a.nodes["x"]["value"], x)
    assert torch.equal(a.log_prob_sum(), b.log_prob_sum())


def test_decode_names_a_latent_of_the_wrong_size():
    """The decoder's matrix product failed with ``mat1 and mat2 shapes cannot be multiplied``."""
    import pyrovamp as pv

    vae = pv.VAE(6, 2, prior="standard", hidden_dim=8)
    assert vae.decode(torch.zeros(3, 2)).batch_shape == (3,)
    with pytest.raises(ValueError, match=r"z must be a tensor of shape \(\.\.\., 2\), got \(3, 3"):
        vae.decode(torch.zeros(3, 3))
    hvae = pv.HVAE(6, 3, prior="standard", hidden_dim=8, z1_dim=2)
    assert hvae.decode(torch.zeros(4, 2), torch.zeros(4, 3)).batch_shape == (4,)
    with pytest.raises(ValueError, match=r"z1 must be a tensor of shape \(\.\.\., 2\)"):
        hvae.decode(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"z2 must be a tensor of shape \(\.\.\., 3\), got list"):
        hvae.decode(torch.zeros(4, 2), [0.0, 0.0, 0.0])


def test_settings_that_do_not_apply_are_refused_not_ignored():
    import pyrovamp as pv

    with pytest.raises(ValueError, match="grid_side applies to the gtm and gtm-vampprior priors"):
        pv.VAE(6, 2, prior="vampprior", grid_side=3)
    with pytest.raises(ValueError, match="likelihood='bernoulli' has two levels"):
        pv.VAE(6, 2, likelihood="bernoulli", num_values=17)
    assert pv.VAE(6, 2, prior="gtm", grid_side=3).prior.num_components == 9
