"""Guide refinement (pyrovamp.refine_guide): it reaches the exact posterior of a conjugate chain,
leaves the model and the VampPrior as they were, tightens IS, and refuses bad input."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from pyrovamp import HVAE, VAE, exact_log_likelihood, log_likelihood, refine_guide
from pyrovamp.data import load_dataset


class GaussianChain(nn.Module):
    """z2 ~ N(0, 1), z1 | z2 ~ N(z2, 1), x | z1 ~ N(z1, 1), one dimension each. The exact posterior
    is in the guide's family: q(z2|x) = N(x/3, 2/3) and q(z1|x, z2) = N((x + z2)/2, 1/2)."""

    def __init__(self):
        super().__init__()
        self.a2 = nn.Parameter(torch.tensor([0.8, 0.5, math.log(0.3)]))  # gain, offset, log sd
        self.a1 = nn.Parameter(torch.tensor([0.1, 0.9, -0.4, math.log(1.5)]))  # x, z2, offset

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z1, 1.0).to_event(1), obs=x)

    def guide(self, x):
        g, b, s = self.a2
        gx, gz, b1, s1 = self.a1
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(g * x + b, s.exp()).to_event(1))
            pyro.sample("z1", dist.Normal(gx * x + gz * z2 + b1, s1.exp()).to_event(1))


def test_refinement_reaches_the_exact_posterior_of_a_conjugate_chain():
    # the optimum of the importance-weighted bound with the posterior in the guide's family is the
    # posterior; z2 feeds q(z1|x, z2), so a gradient that cut that path would settle elsewhere
    model = GaussianChain()
    x = torch.randn(2000, 1, generator=torch.Generator().manual_seed(0)) * 3**0.5
    before = model.a2.detach().clone()
    refined, history = refine_guide(model, x, epochs=30, num_samples=8, lr=0.02, batch_size=200)
    g, b, s = refined.a2.tolist()
    gx, gz, b1, s1 = refined.a1.tolist()
    assert g == pytest.approx(1 / 3, abs=0.03) and b == pytest.approx(0.0, abs=0.03)
    assert math.exp(s) == pytest.approx((2 / 3) ** 0.5, abs=0.03)
    assert gx == pytest.approx(0.5, abs=0.03) and gz == pytest.approx(0.5, abs=0.03)
    assert b1 == pytest.approx(0.0, abs=0.03)
    assert math.exp(s1) == pytest.approx(0.5**0.5, abs=0.03)
    # the exact marginal: x ~ N(0, 3); the bound reaches it
    exact = float(dist.Normal(0.0, 3**0.5).log_prob(x).mean())
    assert history[-1]["bound"] == pytest.approx(exact, abs=0.01)
    assert history[0]["bound"] < exact - 0.1
    assert torch.equal(model.a2.detach(), before)  # the caller's model is untouched
    assert not any(p.requires_grad for p in refined.parameters())


class ScaledGaussianChain(GaussianChain):
    """The chain with its latent sites under ``poutine.scale`` (a beta-VAE's KL weights, one per
    site): the scales shape a training loss, not ``p(x)`` or the bound on it."""

    def __init__(self, scales):
        super().__init__()
        self.scales = scales

    def model(self, x):
        s2, s1 = self.scales
        with pyro.plate("data", x.shape[0], dim=-1):
            with poutine.scale(scale=s2):
                z2 = pyro.sample("z2", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]).to_event(1))
            with poutine.scale(scale=s1):
                z1 = pyro.sample("z1", dist.Normal(z2, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z1, 1.0).to_event(1), obs=x)

    def guide(self, x):
        s2, s1 = self.scales
        g, b, s = self.a2
        gx, gz, b1, s1_ = self.a1
        with pyro.plate("data", x.shape[0], dim=-1):
            with poutine.scale(scale=s2):
                z2 = pyro.sample("z2", dist.Normal(g * x + b, s.exp()).to_event(1))
            with poutine.scale(scale=s1):
                pyro.sample("z1", dist.Normal(gx * x + gz * z2 + b1, s1_.exp()).to_event(1))


@pytest.mark.parametrize("scales", [(0.25, 0.25), (0.25, 0.5)])
def test_refinement_ignores_the_kl_weights_of_a_training_loss(scales):
    # refine_guide tightens the bound on log p(x), whatever poutine.scale the user's model puts on
    # its latent sites for training: the exact posterior and marginal are those of the chain
    model = ScaledGaussianChain(scales)
    x = torch.randn(2000, 1, generator=torch.Generator().manual_seed(0)) * 3**0.5
    refined, history = refine_guide(model, x, epochs=30, num_samples=8, lr=0.02, batch_size=200)
    g, b, s = refined.a2.tolist()
    gx, gz, b1, s1 = refined.a1.tolist()
    assert g == pytest.approx(1 / 3, abs=0.03) and math.exp(s) == pytest.approx(
        (2 / 3) ** 0.5, abs=0.03
    )
    assert gx == pytest.approx(0.5, abs=0.03) and gz == pytest.approx(0.5, abs=0.03)
    assert math.exp(s1) == pytest.approx(0.5**0.5, abs=0.03)
    exact = float(dist.Normal(0.0, 3**0.5).log_prob(x).mean())
    assert history[-1]["bound"] == pytest.approx(exact, abs=0.01)


@pytest.fixture(scope="module")
def digits_vamp():
    """A VAE + VampPrior with two latent dimensions (so that quadrature gives the exact
    log-likelihood) trained briefly on Digits."""
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = VAE(
        ds.image_shape,
        latent_dim=2,
        prior="vampprior",
        likelihood=ds.likelihood,
        num_values=ds.num_values,
        hidden_dim=64,
        num_components=20,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = pyro.infer.Trace_ELBO().differentiable_loss
    for step in range(300):
        start = (step * 100) % 1000
        optimizer.zero_grad()
        loss_fn(model.model, model.guide, ds.train[start : start + 100]).backward()
        optimizer.step()
    return model, ds


def test_refined_guide_keeps_the_model_and_tightens_importance_sampling(digits_vamp):
    model, ds = digits_vamp
    state = {k: v.clone() for k, v in model.state_dict().items()}
    refined, history = refine_guide(model, ds.train, epochs=5, num_samples=10, lr=1e-2, seed=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert refined.prior.encoder is not refined.encoder  # p(z) keeps the encoder it had
    assert any(
        not torch.equal(a, b)
        for a, b in zip(refined.encoder.parameters(), model.encoder.parameters(), strict=False)
    )
    assert history[-1]["bound"] > history[0]["bound"]
    test = ds.test[:200]
    exact = exact_log_likelihood(model, test)
    # the same model: its exact log p(x) (VampPrior included) is unchanged ...
    assert torch.allclose(exact_log_likelihood(refined, test), exact, atol=1e-6)
    # ... and IS with the refined proposal is closer to it (IS-20: 0.045 -> 0.021 nats below)
    gap_before = float(exact.mean() - log_likelihood(model, test, 20, seed=0).mean())
    gap_after = float(exact.mean() - log_likelihood(refined, test, 20, seed=0).mean())
    assert 0 < gap_after < 0.6 * gap_before
    again, _ = refine_guide(model, ds.train, epochs=5, num_samples=10, lr=1e-2, seed=0)
    assert all(
        torch.equal(a, b) for a, b in zip(again.parameters(), refined.parameters(), strict=False)
    )


def test_refinement_works_on_the_hvae():
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = HVAE(
        ds.image_shape,
        latent_dim=3,
        prior="vampprior",
        likelihood=ds.likelihood,
        num_values=ds.num_values,
        hidden_dim=32,
        num_components=10,
        dropout=0.2,
    )
    refined, history = refine_guide(model, ds.train[:200], epochs=2, num_samples=3, lr=1e-3)
    assert len(history) == 2 and all(math.isfinite(h["bound"]) for h in history)
    assert refined.prior.encoder is not refined.encoder
    frozen = {id(p) for m in (refined.p_z1, refined.decoder, refined.prior) for p in m.parameters()}
    original = model.state_dict()
    for name, p in refined.named_parameters():
        if id(p) in frozen:
            assert torch.equal(p, original[name]), name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"num_samples": 0}, "num_samples"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        refine_guide(GaussianChain(), torch.zeros(10, 1), **kwargs)
    assert "\n" not in str(info.value)


def test_bad_data_and_models_are_refused():
    with pytest.raises(ValueError, match="model"):
        refine_guide(object(), torch.zeros(10, 1))
    ds = load_dataset("digits")
    model = VAE(
        ds.image_shape,
        latent_dim=2,
        prior="standard",
        likelihood=ds.likelihood,
        num_values=ds.num_values,
        hidden_dim=16,
    )
    with pytest.raises(ValueError, match="x"):
        refine_guide(model, torch.full((4, 64), float("nan")))


def test_doubly_reparameterised_gradient_is_unbiased():
    # E[DReG gradient] = grad L_K = E[IWAE gradient] (Tucker et al. 2019, eq. 7), away from the
    # optimum; one data point repeated 200000 times averages the noise away. Dropping the path of
    # z2 into q(z1|x, z2) from log q, or keeping the score term's sign wrong, breaks this.
    from pyrovamp.infer.refine import _dreg_loss
    from pyrovamp.infer.weights import log_weights

    model = GaussianChain()
    x = torch.full((200000, 1), 1.5)
    params = list(model.parameters())
    torch.manual_seed(0)
    loss, _ = _dreg_loss(model, x, 4)
    dreg = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
    torch.manual_seed(1)
    log_w = log_weights(model.model, model.guide, x, 4)  # the IWAE gradient: through log q too
    iwae = -(torch.logsumexp(log_w, 0) - math.log(4)).mean()
    plain = torch.cat([g.flatten() for g in torch.autograd.grad(iwae, params)])
    assert dreg.abs().max() > 0.05  # away from the optimum
    assert torch.allclose(dreg, plain, atol=0.02), (dreg, plain)


def test_cli_evaluate_refine_guide_merges_into_the_metrics(tmp_path, capsys):
    import json

    import numpy as np

    from pyrovamp.cli import main

    out = tmp_path / "run"
    pyro.set_rng_seed(0)
    assert (
        main(
            [
                "train",
                "--prior",
                "vampprior",
                "--epochs",
                "3",
                "--max-points",
                "100",
                "--num-samples",
                "20",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    model_bytes = (out / "model.pt").read_bytes()
    before = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(out),
                "--refine-guide",
                "3",
                "--refine-num-samples",
                "5",
                "--refine-lr",
                "0.003",
                "--num-samples",
                "20",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        "guide refined on the train set (3 epochs of the IWAE-5 bound on 100 points"
        in capsys.readouterr().out
    )
    m = json.loads((out / "metrics.json").read_text())
    for k, v in before.items():  # nothing lost, the plain estimate kept
        assert m[k] == v
    assert (
        m["refined_refine_epochs"],
        m["refined_refine_num_samples"],
        m["refined_refine_lr"],
        m["refined_refine_points"],
    ) == (3, 5, 0.003, 100)
    assert m["refined_num_samples"] == 20 and m["refined_epochs"] == 3
    assert 1 <= m["refined_median_ess"] <= 20 and 0 <= m["refined_share_k_above_threshold"] <= 1
    bound = m["refined_refine_bound"]
    assert len(bound) == 3 and bound[-1] > bound[0]
    assert m["test_log_likelihood_refined"] > m["test_log_likelihood"]
    assert np.load(out / "log_likelihood_refined.npz")["log_likelihood"].shape == (100,)
    assert (out / "model.pt").read_bytes() == model_bytes  # the run's parameters are untouched

    # fitted on the test images it scores: its own keys, the training-set estimate kept
    assert (
        main(
            [
                "evaluate",
                str(out),
                "--refine-guide",
                "3",
                "--refine-on",
                "test",
                "--refine-num-samples",
                "5",
                "--refine-lr",
                "0.003",
                "--num-samples",
                "20",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        "guide refined on the test set (3 epochs of the IWAE-5 bound on 100 points"
        in capsys.readouterr().out
    )
    m2 = json.loads((out / "metrics.json").read_text())
    assert all(m2[k] == v for k, v in m.items())
    assert m2["refined_on_test_refine_points"] == 100 and m2["refined_on_test_epochs"] == 3
    assert m2["test_log_likelihood_refined_on_test"] > m["test_log_likelihood"]
    assert (out / "log_likelihood_refined_on_test.npz").is_file()

    # pyrovamp reproduce's table shows them beside the cell's plain IS estimate
    from pyrovamp.workflow.reproduce import read_cell, write_table

    (tmp_path / "t").mkdir()
    table = write_table(
        tmp_path / "t", {("digits", "vae", "vampprior"): read_cell(out)}, {}
    ).read_text()
    assert (
        f"{m['test_log_likelihood']:.2f} ± " in table
        and f"; {m['test_log_likelihood_refined']:.2f} with the guide refined on the training set "
        "(S=20, 3 epochs of IWAE-5, the model frozen); "
        f"{m2['test_log_likelihood_refined_on_test']:.2f} with the guide refined on the test "
        "set (S=20, 3 epochs of IWAE-5, the model frozen)"
        in table
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--refine-guide", "0"], "--refine-guide must be at least 1"),
        (
            ["--refine-lr", "0.01"],
            "--refine-on, --refine-num-samples, --refine-lr and "
            "--refine-batch-size need --refine-guide",
        ),
        (["--refine-on", "test"], "need --refine-guide"),
        (["--refine-guide", "2", "--refine-on", "validation"], "invalid choice: 'validation'"),
        (["--refine-lr", "inf"], "--refine-lr must be a finite positive number, got inf"),
        (["--refine-guide", "2", "--method", "ais"], "run --method ais separately"),
        (["--refine-guide", "2", "--method", "is"], "run --method is separately"),
        (["--refine-guide", "2"], "has no test evaluation yet"),
    ],
)
def test_cli_refine_guide_bad_arguments_are_one_line(tmp_path, args, message, capsys):
    from pyrovamp.cli import main

    try:
        code = main(["evaluate", str(tmp_path), *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


class SharedChain(GaussianChain):
    """The prior's mean is the guide's offset: refining the guide would change p(x, z)."""

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(self.a2[1], 1.0).expand([x.shape[0], 1]).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z1, 1.0).to_event(1), obs=x)


class DiscreteGuide(nn.Module):
    def __init__(self):
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(1))

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Bernoulli(0.5).expand([x.shape[0], 1]).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Bernoulli(logits=self.logit).expand([x.shape[0], 1]).to_event(1))


def test_guides_that_cannot_be_refined_alone_are_refused():
    with pytest.raises(ValueError, match=r"shares parameters with the model's p\(x, h\) \(a2\)"):
        refine_guide(SharedChain(), torch.zeros(10, 1))
    with pytest.raises(ValueError, match="guide site 'z' is not reparameterised"):
        refine_guide(DiscreteGuide(), torch.zeros(10, 1))


def test_frozen_guide_parameters_stay_and_a_diverging_refinement_raises():
    from pyrovamp.errors import NonFiniteLossError

    model = GaussianChain()
    model.a1.requires_grad_(False)
    x = torch.randn(200, 1, generator=torch.Generator().manual_seed(0))
    refined, _ = refine_guide(model, x, epochs=2, lr=0.05)
    assert torch.equal(refined.a1, model.a1) and not torch.equal(refined.a2, model.a2)
    before = model.a2.detach().clone()
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        refine_guide(GaussianChain(), x * 1e30, epochs=1, lr=1e30)
    assert torch.equal(model.a2.detach(), before)
