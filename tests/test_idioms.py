"""The estimators on the idioms Pyro users write: minibatch plates (``subsample_size``) and
``poutine.scale`` leave a log-likelihood unchanged, every option of ``log_likelihood`` is used or
refused, one return convention, and the model's mode survives an error."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import pyrovamp as pv
from pyrovamp.errors import ArgumentTypeError
from pyrovamp.infer import IWAELoss, ais_log_likelihood, exact_log_likelihood
from pyrovamp.infer.importance import elbo_terms, log_importance_weights
from pyrovamp.infer.weights import trace_pair
from pyrovamp.training import ScaleLatents

D = 3
A = torch.tensor([1.5, -0.5, 0.8], dtype=torch.float64)
B = torch.tensor([0.2, 0.0, -0.3], dtype=torch.float64)
NOISE = 0.7


class LinearGaussian:
    """``z ~ N(0, 1)``, ``x | z ~ N(A z + B, NOISE^2 I)`` with the exact posterior as guide, in
    a data plate of ``size`` points subsampled to the batch (the minibatch idiom), optionally
    wrapped in ``poutine.scale``."""

    def __init__(self, size=None, scale=None):
        self.size, self.scale = size, scale

    def _plate(self, x):
        if self.size is None:
            return pyro.plate("data", x.shape[0])
        return pyro.plate("data", self.size, subsample_size=x.shape[0])

    def _scaled(self, fn, x):
        if self.scale is None:
            return fn(x)
        with poutine.scale(scale=self.scale):
            return fn(x)

    def posterior(self, x):
        precision = 1.0 + float((A * A).sum()) / NOISE**2
        mean = ((x - B) * A).sum(-1) / NOISE**2 / precision
        return mean, precision**-0.5

    def _model(self, x):
        with self._plate(x):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
            pyro.sample("x", dist.Normal(z[..., None] * A + B, NOISE).to_event(1), obs=x)

    def _guide(self, x):
        mean, std = self.posterior(x)
        with self._plate(x):
            pyro.sample("z", dist.Normal(mean, std))

    def model(self, x):
        return self._scaled(self._model, x)

    def guide(self, x):
        return self._scaled(self._guide, x)

    def exact(self, x):
        cov = torch.outer(A, A) + NOISE**2 * torch.eye(D, dtype=torch.float64)
        return dist.MultivariateNormal(B, cov).log_prob(x)


def _data(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return z * A + B + NOISE * torch.randn(n, D, generator=g, dtype=torch.float64)


IDIOMS = [
    pytest.param(dict(size=1000), id="subsample_size"),
    pytest.param(dict(scale=0.1), id="poutine.scale"),
    pytest.param(dict(size=1000, scale=0.1), id="both"),
]


@pytest.mark.parametrize("idiom", IDIOMS)
def test_minibatch_plates_and_scales_do_not_change_the_log_likelihood(idiom):
    x = _data()
    truth = LinearGaussian().exact(x)
    user = LinearGaussian(**idiom)
    # the guide is the exact posterior: every importance weight is log p(x) exactly
    assert torch.allclose(pv.log_likelihood(user, x, 10, seed=0), truth, atol=1e-9)
    assert torch.allclose(pv.elbo(user, x, 4, seed=0), truth, atol=1e-9)
    assert torch.allclose(log_importance_weights(user, x, 3, seed=0), truth.expand(3, -1))
    terms = elbo_terms(user, x, 4, seed=0)
    assert torch.allclose(terms["elbo"], truth, atol=1e-9)
    assert torch.allclose(exact_log_likelihood(user, x, tol=1e-4), truth, atol=1e-4)
    ais = ais_log_likelihood(user, x, num_chains=4, num_steps=10, initial="guide", seed=0)
    assert torch.allclose(ais, truth, atol=1e-6)


def test_the_same_model_unscaled_is_the_reference():
    # the reference itself: without plate subsampling or scale the values are the same
    x = _data()
    user = LinearGaussian()
    assert torch.allclose(pv.log_likelihood(user, x, 10, seed=0), user.exact(x), atol=1e-9)


def test_a_plate_subsampled_to_other_points_than_x_is_refused_in_one_line():
    class Indexing(LinearGaussian):
        def _model(self, x):
            with pyro.plate("data", x.shape[0], subsample_size=4) as idx:
                z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
                pyro.sample("x", dist.Normal(z[..., None] * A + B, NOISE).to_event(1), obs=x[idx])

        def _guide(self, x):
            mean, std = self.posterior(x)
            with pyro.plate("data", x.shape[0], subsample_size=4) as idx:
                pyro.sample("z", dist.Normal(mean[idx], std))

    with pytest.raises(ValueError, match="not subsampled") as info:
        pv.log_likelihood(Indexing(), _data(), 5, seed=0)
    assert "\n" not in str(info.value)


class _Learned(LinearGaussian):
    """A guide that is not the posterior (a shifted mean), so the weights vary; ``size``: a data
    plate of ``size`` points with the batch as its explicit subsample (no random indices, so the
    draws of ``z`` are those of the plain model)."""

    def _plate(self, x):
        if self.size is None:
            return pyro.plate("data", x.shape[0])
        return pyro.plate("data", self.size, subsample=torch.arange(x.shape[0]))

    def _guide(self, x):
        mean, std = self.posterior(x)
        with self._plate(x):
            pyro.sample("z", dist.Normal(mean + 0.5, 2 * std))


def test_iwae_loss_scales_each_points_bound_as_pyro_scales_the_elbo():
    x = _data()
    loss = IWAELoss(5)

    def value(user):
        pyro.set_rng_seed(3)
        return float(loss.differentiable_loss(user.model, user.guide, x))

    plain = value(_Learned())
    # a plate of 1000 points subsampled to 8: the bound of the whole data set, 125 times the batch
    assert math.isclose(value(_Learned(size=1000)), 1000 / 8 * plain, rel_tol=1e-9)
    assert math.isclose(value(_Learned(scale=0.1)), 0.1 * plain, rel_tol=1e-9)
    # the ELBO of Pyro scales the same way (the reference for the convention)
    pyro.set_rng_seed(3)
    elbo_plain = pyro.infer.Trace_ELBO().differentiable_loss(_Learned().model, _Learned().guide, x)
    pyro.set_rng_seed(3)
    elbo_sub = pyro.infer.Trace_ELBO().differentiable_loss(
        _Learned(size=1000).model, _Learned(size=1000).guide, x
    )
    assert math.isclose(float(elbo_sub), 125 * float(elbo_plain), rel_tol=1e-9)


def test_iwae_loss_with_latents_scaled_by_beta_anneals_the_kl_inside_the_weights():
    x = _data()
    user = _Learned()
    pyro.set_rng_seed(4)
    with ScaleLatents(0.5):
        annealed = float(IWAELoss(5).differentiable_loss(user.model, user.guide, x))
    # beta = 0.5: log w = log p(x|z) + 0.5 (log p(z) - log q(z|x)) at the same draws
    pyro.set_rng_seed(4)
    model_trace, guide_trace = trace_pair(user.model, user.guide, x, 5)
    z = guide_trace.nodes["z"]["value"]
    rec = model_trace.nodes["x"]["fn"].log_prob(x)
    kl = guide_trace.nodes["z"]["fn"].log_prob(z) - model_trace.nodes["z"]["fn"].log_prob(z)
    expected = -(torch.logsumexp(rec - 0.5 * kl, 0) - math.log(5)).sum()
    assert math.isclose(annealed, float(expected), rel_tol=1e-9)
    pyro.set_rng_seed(4)
    assert not math.isclose(
        float(IWAELoss(5).differentiable_loss(user.model, user.guide, x)), annealed, rel_tol=1e-3
    )


def test_log_likelihood_uses_or_refuses_every_option():
    x = _data(12)
    user = LinearGaussian()
    for method in ("exact", "ais"):
        with pytest.raises(ValueError, match="num_samples"):
            pv.log_likelihood(user, x, 100, method=method)
        with pytest.raises(ValueError, match="unexpected option.*bogus"):
            pv.log_likelihood(user, x, method=method, bogus=1)
    with pytest.raises(ValueError, match="unexpected option.*num_chains"):
        pv.log_likelihood(user, x, 10, num_chains=3)
    with pytest.raises(ValueError, match="method must be one of"):
        pv.log_likelihood(user, x, method="vi")


@pytest.mark.parametrize(
    "method, options",
    [("is", dict(num_samples=7)), ("ais", dict(num_chains=3, num_steps=4)), ("exact", {})],
)
def test_shards_at_block_boundaries_give_the_values_of_one_call(method, options):
    # a guide that is not the posterior: the estimates depend on the random draws
    x = _data(12)
    user = _Learned()
    whole = pv.log_likelihood(user, x, method=method, batch_size=4, seed=5, **options)
    shards = [
        pv.log_likelihood(
            user, x[i : i + 4], method=method, batch_size=4, seed=5, first_block=i // 4, **options
        )
        for i in range(0, 12, 4)
    ]
    assert torch.equal(torch.cat(shards), whole)
    # and the seed and the block index are used: another block index gives other draws
    if method != "exact":
        moved = pv.log_likelihood(
            user, x[:4], method=method, batch_size=4, seed=5, first_block=1, **options
        )
        assert not torch.equal(moved, whole[:4])
        other = pv.log_likelihood(user, x, method=method, batch_size=4, seed=6, **options)
        assert not torch.equal(other, whole)


def test_exact_uses_seed_batch_size_and_progress(capsys):
    x = _data(6)
    user = _Learned()
    one = pv.log_likelihood(user, x, method="exact", seed=1)
    assert torch.allclose(one, user.exact(x), atol=0.01)
    blocks = pv.log_likelihood(user, x, method="exact", seed=1, batch_size=2)
    assert torch.allclose(blocks, user.exact(x), atol=0.01)
    # the seed and the blocks place the boxes: other grids, the same values within tol
    assert torch.equal(pv.log_likelihood(user, x, method="exact", seed=1), one)
    assert not torch.equal(pv.log_likelihood(user, x, method="exact", seed=2), one)
    assert not torch.equal(blocks, one)
    _, info = pv.log_likelihood(user, x, method="exact", batch_size=2, diagnostics=True)
    assert info["error_estimate"].shape == (6,) and info["levels"].shape == (6,)
    pv.log_likelihood(user, x, method="exact", progress=True)
    assert "exact log-likelihood" in capsys.readouterr().err


def test_one_return_convention_for_every_estimator():
    x = _data(4)
    user = LinearGaussian()
    for fn in (exact_log_likelihood, ais_log_likelihood):
        out = fn(user, x, seed=0) if fn is exact_log_likelihood else fn(user, x, 2, 3, seed=0)
        assert isinstance(out, torch.Tensor) and out.shape == (4,)
    for method in ("is", "ais", "exact"):
        opts = dict(num_chains=2, num_steps=3) if method == "ais" else {}
        ll, diag = pv.log_likelihood(user, x, method=method, seed=0, diagnostics=True, **opts)
        assert isinstance(ll, torch.Tensor) and ll.shape == (4,) and isinstance(diag, dict)


def test_counts_accept_numpy_integers_and_refuse_other_types_as_type_errors():
    x = _data(4)
    user = LinearGaussian()
    ll = pv.log_likelihood(user, x, np.int64(10), seed=0)
    assert torch.equal(ll, pv.log_likelihood(user, x, 10, seed=0))
    with pytest.raises(TypeError, match="num_samples must be a positive integer"):
        pv.log_likelihood(user, x, 2.5)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        pv.log_likelihood(user, x, 0)
    with pytest.raises(ArgumentTypeError, match="x must be a torch.Tensor"):
        pv.log_likelihood(user, [[0.0, 1.0, 2.0]], 5)
    with pytest.raises(TypeError, match="model must have Pyro model"):
        pv.log_likelihood(object(), x, 5)


def test_the_models_mode_is_restored_when_an_estimator_fails_while_setting_up():
    vae = pv.VAE(6, 2, hidden_dim=8, prior="vampprior", num_components=3)
    vae.train()
    x = torch.bernoulli(torch.full((4, 6), 0.5))

    def broken(*args, **kwargs):
        raise RuntimeError("prior failed")

    vae.prior.forward = broken
    with pytest.raises(RuntimeError, match="prior failed"):
        pv.log_likelihood(vae, x, 5, seed=0)
    assert vae.training


def test_forking_the_random_streams_does_not_start_cuda(monkeypatch):
    # a fork-based launcher (ddp_notebook) must find CUDA uninitialised after pv.train's setup
    from pyrovamp import _random

    seen = {}
    fork = torch.random.fork_rng

    def spy(devices=None, **kwargs):
        seen["devices"] = list(devices)
        return fork(devices=[])

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.random, "fork_rng", spy)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    with _random.isolated_rng(3):
        pass
    assert seen["devices"] == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    _random.fork_rng()
    assert seen["devices"] == [0, 1]


def test_a_cpu_run_does_not_seed_the_callers_cuda_streams(monkeypatch):
    # torch.manual_seed would queue a seed for CUDA's streams, applied when CUDA starts later:
    # a run that does not draw on CUDA must seed the CPU's stream only
    from pyrovamp import _random

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    with _random.isolated_rng(7):
        a = torch.rand(3)
    with _random.isolated_rng(7):
        assert torch.equal(torch.rand(3), a)  # the CPU stream is still seeded
    assert calls == []
    # nor does an estimator with seed= on a CPU model
    pv.log_likelihood(LinearGaussian(), _data(4), 5, seed=0)
    pv.log_likelihood(_Learned(), _data(4), method="exact", seed=0)
    assert calls == []
    with _random.isolated_rng(7, cuda=True):  # a GPU run under a fork-based launcher
        pass
    assert calls == [7]


def test_auto_precision_does_not_start_cuda_before_a_fork(monkeypatch):
    from pyrovamp.training import hardware, resolve_precision

    def started(*args, **kwargs):
        raise AssertionError("CUDA was queried before the fork")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", started)
    assert resolve_precision("auto", "gpu", 1, log=False, strategy="ddp_notebook") == "32"
    assert hardware.forks_processes("ddp_fork") and not hardware.forks_processes("ddp")
    with pytest.raises(AssertionError, match="queried"):
        resolve_precision("auto", "gpu", 1, log=False, strategy="ddp")


def test_16_mixed_on_a_cpu_without_bf16_warns_like_bf16(monkeypatch):
    from pyrovamp.training import hardware, resolve_precision

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="16-mixed"):
        assert resolve_precision("16-mixed", "cpu") == "16-mixed"


def test_training_gives_the_model_back_on_the_device_it_came_on(monkeypatch):
    # Lightning's teardown moves the module to the CPU; fit moves it back (shown with a spy on
    # the device query: a CUDA model cannot be made here)
    from pyrovamp.training import runner

    seen = []
    real = runner._back_home
    monkeypatch.setattr(runner, "_back_home", lambda m, home: seen.append(home) or real(m, home))
    vae = pv.VAE(6, 2, hidden_dim=8, prior="standard")
    x = torch.bernoulli(torch.full((16, 6), 0.5), generator=torch.Generator().manual_seed(0))
    pv.train(vae, x, epochs=1, batch_size=8, progress=False, logger="none")
    assert seen == [torch.device("cpu")]
    meta = pv.VAE(6, 2, hidden_dim=8, prior="standard")
    real(meta, torch.device("meta"))
    assert next(meta.parameters()).device.type == "meta"


class _FixedBatch(LinearGaussian):
    """The minibatch idiom with a literal batch size: the plate holds 8 points, whatever x."""

    def _plate(self, x):
        return pyro.plate("data", 1000, subsample_size=8)


def test_a_plate_with_a_constant_subsample_size_is_scored_by_every_method():
    x = _data(8)
    truth = LinearGaussian().exact(x)
    user = _FixedBatch()
    assert torch.allclose(pv.log_likelihood(user, x, 10, seed=0), truth, atol=1e-9)
    assert torch.allclose(pv.log_likelihood(user, x, method="exact", tol=1e-4), truth, atol=1e-4)
    ais = pv.log_likelihood(
        user, x, method="ais", num_chains=3, num_steps=5, initial="guide", batch_size=8, seed=0
    )
    assert torch.allclose(ais, truth, atol=1e-6)


def test_a_large_or_multiline_bad_argument_is_named_in_one_short_line():
    user = LinearGaussian()
    for bad in (np.ones((3, 3)), [[0.0] * 400] * 400):
        with pytest.raises(TypeError) as info:
            pv.log_likelihood(user, _data(4), bad)
        assert "\n" not in str(info.value) and len(str(info.value)) < 150
    with pytest.raises(TypeError) as info:
        pv.log_likelihood(user, [[0.0] * 400] * 400, 5)
    assert "\n" not in str(info.value) and len(str(info.value)) < 150


def test_an_estimator_restores_each_submodules_own_mode():
    vae = pv.VAE(6, 2, hidden_dim=8, prior="vampprior", num_components=3)
    vae.train()
    vae.prior.eval()  # the user's choice for one part
    pv.log_likelihood(vae, torch.bernoulli(torch.full((4, 6), 0.5)), 5, seed=0)
    assert vae.training and not vae.prior.training


def test_resuming_an_auto_precision_run_on_other_hardware_says_so(tmp_path, monkeypatch):
    from pyrovamp.training import hardware

    x = torch.bernoulli(torch.full((16, 6), 0.5), generator=torch.Generator().manual_seed(0))
    opts = dict(batch_size=8, progress=False, logger="none", precision="auto", patience=None)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    vae = pv.VAE(6, 2, hidden_dim=8, prior="standard")
    pv.fit(vae, x, checkpoint_dir=tmp_path, epochs=1, **opts)
    with warnings.catch_warnings():  # the same hardware: nothing to say
        warnings.filterwarnings("error", message="resuming")
        pv.fit(vae, x, checkpoint_dir=tmp_path, resume=True, epochs=2, **opts)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    with pytest.warns(UserWarning, match="in precision 'bf16-mixed'; it trained in '32'"):
        pv.fit(vae, x, checkpoint_dir=tmp_path, resume=True, epochs=3, **opts)
