"""Annealed importance sampling and BDMC against exact marginal likelihoods."""

import json
import math

import numpy as np
import pyro
import pytest
import torch
from conftest import FactorAnalysis, cuda

from pyrovamp import HVAE, VAE, ais_log_likelihood, bdmc, exact_log_likelihood, log_likelihood
from pyrovamp.infer.ais import annealing_schedule


def _data(fa, n, seed=1):
    torch.manual_seed(seed)
    return fa.marginal().sample((n,))


@pytest.mark.parametrize("initial", ["guide", "mixture"])
def test_ais_approaches_the_exact_value_as_steps_grow(initial):
    fa = FactorAnalysis(shift=0.3, scale=0.7)
    x = _data(fa, 60)
    truth = fa.marginal().log_prob(x)
    errors = []
    for T in (1, 10, 100, 400):
        ll = ais_log_likelihood(fa, x, 8, T, initial=initial, seed=0)
        assert ll.shape == (60,) and ll.dtype == torch.float64
        errors.append(float((ll - truth).abs().mean()))
    assert errors[0] > errors[1] > errors[2] > errors[3], errors
    assert errors[3] < 0.1 * errors[0] and errors[3] < 0.06, errors


@pytest.mark.parametrize("independence_moves", [False, True])
def test_weights_are_unbiased_estimates_of_p_x(independence_moves):
    # one data point, 4000 independent single-chain AIS runs (one per copy of the point): the
    # mean of exp(log w - log p(x)) is 1 within Monte Carlo error. The step size is fixed and
    # large (a quarter of the HMC proposals accepted): any flaw in the accept/reject steps shows.
    fa = FactorAnalysis(shift=0.5, scale=0.8)
    x = _data(fa, 1).expand(4000, -1)
    truth = float(fa.marginal().log_prob(x[0]))
    ll, d = ais_log_likelihood(
        fa,
        x,
        1,
        5,
        seed=0,
        adapt_step_size=False,
        step_size=2.5,
        independence_moves=independence_moves,
        diagnostics=True,
    )
    w = torch.exp(ll - truth)
    se = float(w.std() / math.sqrt(w.numel()))
    assert abs(float(w.mean()) - 1) < 4 * se, (float(w.mean()), se)
    assert float(w.std()) > 0.05  # the weights do vary: the check has power
    assert float(ll.mean()) < truth  # and their log is biased low (Jensen)
    assert 0.1 < float(d["acceptance_rate"].mean()) < 0.5


def test_bdmc_sandwiches_the_exact_log_likelihood():
    fa = FactorAnalysis(shift=1.5, scale=0.5)
    x_like = torch.zeros(1, 5, dtype=torch.float64)
    out = bdmc(fa, 200, 4, 5, x_like=x_like, seed=0)
    truth = fa.marginal().log_prob(out["x"])
    assert out["x"].shape == (200, 5)
    assert out["lower"].shape == out["upper"].shape == out["gap"].shape == (200,)
    lower, upper = float(out["lower"].mean()), float(out["upper"].mean())
    assert lower < float(truth.mean()) < upper
    assert torch.allclose(out["gap"], out["upper"] - out["lower"])
    # more steps: a tighter sandwich around the same truth
    out2 = bdmc(fa, 200, 4, 100, x_like=x_like, seed=0)
    assert torch.equal(out2["x"], out["x"])  # the same simulated data for the same seed
    assert float(out2["lower"].mean()) < float(truth.mean()) < float(out2["upper"].mean())
    assert float(out2["gap"].mean()) < 0.5 * float(out["gap"].mean())


def test_vae_and_hvae_anneal_all_latent_sites_jointly():
    torch.manual_seed(0)
    vae = VAE(
        (6,),
        2,
        prior="vampprior",
        likelihood="categorical",
        num_values=5,
        hidden_dim=16,
        num_components=4,
    )
    hvae = HVAE(
        (6,),
        1,
        prior="mog",
        likelihood="categorical",
        num_values=5,
        hidden_dim=16,
        num_components=3,
        z1_dim=1,
    )  # z2 and z1 of one dimension each: exact works
    x = torch.randint(0, 5, (10, 6)).float()
    for model in (vae, hvae):
        exact = exact_log_likelihood(model, x)
        ll = ais_log_likelihood(model, x, 8, 50, seed=0)
        assert float((ll - exact).abs().max()) < 0.05
        assert model.training
    # a larger HVAE just runs, with finite values above its IS estimate on average
    big = HVAE(
        (6,),
        3,
        prior="vampprior",
        likelihood="categorical",
        num_values=5,
        hidden_dim=16,
        num_components=4,
        z1_dim=2,
    )
    ll, d = ais_log_likelihood(big, x, 4, 20, seed=0, diagnostics=True)
    assert bool(torch.isfinite(ll).all()) and 0.3 < float(d["acceptance_rate"].mean()) < 0.95
    assert float(ll.mean()) > float(log_likelihood(big, x, 4, seed=0).mean())


def _tiny_binary_models():
    """Five binary data points of six pixels, a VAE (one guide site) and an HVAE (two guide
    sites) with VampPriors of four components, in evaluation mode (seeded)."""
    torch.manual_seed(0)
    x = (torch.rand(5, 6) < 0.5).float()
    vae = VAE((6,), 3, prior="vampprior", likelihood="bernoulli", hidden_dim=8,
              num_components=4).eval()  # fmt: skip
    hvae = HVAE((6,), 2, prior="vampprior", likelihood="bernoulli", hidden_dim=8,
                num_components=4, z1_dim=2).eval()  # fmt: skip
    return x, vae, hvae


def test_the_guide_run_once_gives_the_guides_density_and_gradient():
    """AIS's ``log q(u|x)`` from a guide traced once per chunk (one latent site: its
    distribution depends on x alone) equals the guide run at every ``u``, values and gradients;
    a guide of two sites (the HVAE's q(z1|x, z2)) is run at every ``u``."""
    from pyrovamp.infer.latent import latent_space

    x, vae, hvae = _tiny_binary_models()
    for model, cached in ((vae, True), (hvae, False)):
        space = latent_space(model, x)
        log_q = space.guide_density(x)
        u = torch.randn(7, 5, space.dim, requires_grad=True)
        a, b = log_q(u), space.log_guide(x, u)
        assert a.shape == (7, 5) and torch.allclose(a, b, rtol=0, atol=1e-5)
        (ga,) = torch.autograd.grad(a.sum(), u)
        (gb,) = torch.autograd.grad(b.sum(), u)
        assert torch.allclose(ga, gb, rtol=0, atol=1e-5)
        runs = []
        hook = model.encoder.register_forward_hook(lambda *_, r=runs: r.append(1))
        log_q(u)
        hook.remove()
        assert (not runs) == cached  # the encoder runs again only for the two-site guide


@pytest.mark.parametrize("kind", ["mixture", "guide", "gaussian", "prior"])
def test_gradients_at_accepted_proposals_equal_those_of_every_chain(kind):
    """The independence move's gradients, computed on the accepted chains alone (their data
    points gathered, the guide's kept distribution indexed), equal the gradients of the target
    evaluated on every chain; zero where nothing was accepted. For the VAE (one guide site:
    indexed) and the HVAE (two sites: the guide run on the gathered points)."""
    from pyrovamp.infer._ais_target import _Initial, _Target
    from pyrovamp.infer.latent import latent_space

    x, vae, hvae = _tiny_binary_models()
    for model in (vae, hvae):
        space = latent_space(model, x[:1])  # as AIS traces it: any number of points
        with torch.no_grad():
            target = _Target(space, x, _Initial(kind, space, x))
            u = target.initial.sample(4)
        where = torch.rand(4, 5) < 0.4
        where[0, 0] = where[3, 0] = True  # a point in two chains
        where[:, 4] = False  # a point in none
        _, _, gj, gi = target(u)
        sj, si = target.gradients_at(u, where)
        w = where[..., None]
        assert torch.allclose(sj, torch.where(w, gj, 0.0), rtol=0, atol=1e-5)
        assert torch.allclose(si, torch.where(w, gi, 0.0), rtol=0, atol=1e-5)
        assert bool((sj[~where] == 0).all()) and bool(sj[where].abs().sum(-1).gt(0).all())
        none = target.gradients_at(u, torch.zeros(4, 5, dtype=torch.bool))
        assert all(bool((g == 0).all()) for g in none)


def test_draws_from_the_kept_guide_equal_the_guides_own():
    """The mixture's guide draws, taken from the guide's kept distribution (the encoder not run
    again), are the draws of the guide run on ``x`` with the same random stream."""
    from pyrovamp.infer.latent import latent_space

    x, vae, _ = _tiny_binary_models()
    space = latent_space(vae, x)
    density = space.guide_density(x)
    torch.manual_seed(1)
    a = density.sample(7)
    torch.manual_seed(1)
    b = space.sample(x, 7, "guide")
    assert a.shape == (7, 5, 3) and torch.equal(a, b)


def test_log_likelihood_dispatches_method_ais():
    fa = FactorAnalysis()
    x = _data(fa, 7)
    a = ais_log_likelihood(fa, x, num_chains=3, num_steps=6, seed=3)
    b = log_likelihood(fa, x, method="ais", num_chains=3, num_steps=6, seed=3)
    assert torch.equal(a, b)
    ll, d = log_likelihood(fa, x, method="ais", num_chains=3, num_steps=6, seed=3, diagnostics=True)
    assert torch.equal(ll, a)
    assert d["log_weights"].shape == (3, 7)
    for k in ("acceptance_rate", "step_size", "ess"):
        assert d[k].shape == (7,)
    assert np.allclose(
        torch.logsumexp(torch.as_tensor(d["log_weights"]), 0) - math.log(3), ll.numpy()
    )


def test_seeded_runs_repeat_and_leave_the_global_random_stream_alone():
    fa = FactorAnalysis()
    x = _data(fa, 5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = ais_log_likelihood(fa, x, 2, 5, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, ais_log_likelihood(fa, x, 2, 5, seed=7))
    assert not torch.equal(a, ais_log_likelihood(fa, x, 2, 5, seed=8))


@pytest.mark.parametrize("kind", ["geometric", "sigmoid", "linear"])
def test_annealing_schedules_rise_from_zero_to_one(kind):
    b = annealing_schedule(50, kind)
    assert b.shape == (51,) and b.dtype == torch.float64
    assert float(b[0]) == 0.0 and float(b[-1]) == 1.0 and bool((b[1:] > b[:-1]).all())


def test_bad_input_raises_before_any_work():
    fa = FactorAnalysis()
    x = _data(fa, 4)
    cases = [
        ({"num_chains": 0}, "num_chains"),
        ({"num_steps": 0}, "num_steps"),
        ({"num_leapfrog_steps": 0}, "num_leapfrog_steps"),
        ({"schedule": "cosine"}, "schedule"),
        ({"initial": "posterior"}, "initial"),
        ({"target_accept": 1.5}, "target_accept"),
        ({"step_size": -1.0}, "step_size"),
        ({"schedule": torch.tensor([0.0, 0.7, 0.5, 1.0])}, "schedule"),
        ({"beta_min": 2.0}, "beta_min"),
    ]
    for kw, name in cases:
        with pytest.raises(ValueError, match=name):
            ais_log_likelihood(fa, x, **kw)
    vae = VAE((6,), 2, prior="standard", likelihood="categorical", num_values=5, hidden_dim=8)
    with pytest.raises(ValueError, match="NaN"):
        ais_log_likelihood(vae, torch.full((3, 6), float("nan")))
    with pytest.raises(ValueError, match="x must"):
        ais_log_likelihood(vae, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="model"):
        ais_log_likelihood(object(), x)
    with pytest.raises(ValueError, match="num_points"):
        bdmc(vae, 0)
    with pytest.raises(ValueError, match="unknown option"):
        bdmc(vae, 3, leapfrog=3)
    with pytest.raises(ValueError, match="x_like"):
        bdmc(fa, 3)
    with pytest.raises(ValueError, match="method"):
        log_likelihood(fa, x, method="annealing")


def test_chunks_on_a_cpu_are_capped_and_elsewhere_follow_the_budget(monkeypatch):
    # the chunk is the budget over (gradient factor x measured bytes per chain x chains), the
    # budget on a CPU at most _CPU_CHUNK_BYTES; a batch_size is taken as given
    from pyrovamp.infer import ais

    monkeypatch.setattr(ais, "pair_bytes", lambda model, x: 2**10)
    per_point = ais._GRAD_FACTOR * 2**10 * 8  # 8 chains
    budget = 2**30
    cpu = torch.zeros(3, 5)
    assert ais._points_per_chunk(None, cpu, 8, budget, None) == ais._CPU_CHUNK_BYTES // per_point
    assert ais._points_per_chunk(None, cpu.to("meta"), 8, budget, None) == budget // per_point
    small = ais._CPU_CHUNK_BYTES // 4  # a smaller budget rules on a CPU too
    assert ais._points_per_chunk(None, cpu, 8, small, None) == small // per_point
    assert ais._points_per_chunk(None, cpu, 8, budget, 7) == 7
    assert ais._points_per_chunk(None, cpu, 8, 1, None) == 1  # at least one point


@cuda
def test_ais_runs_on_cuda():
    fa = FactorAnalysis().to("cuda")
    x = _data(fa, 20).to("cuda")
    ll = ais_log_likelihood(fa, x, 4, 30, seed=0)
    assert ll.device.type == "cuda" and ll.dtype == torch.float64
    assert float((ll - fa.marginal().log_prob(x)).abs().mean()) < 0.1
    out = bdmc(fa, 10, 4, 10, x_like=torch.zeros(1, 5, dtype=torch.float64, device="cuda"))
    assert out["upper"].device.type == "cuda"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from pyrovamp.cli import main

    out = tmp_path_factory.mktemp("ais") / "run"
    pyro.set_rng_seed(0)
    assert (
        main(
            [
                "train",
                "--prior",
                "vampprior",
                "--epochs",
                "1",
                "--max-points",
                "30",
                "--num-samples",
                "20",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_cli_evaluate_ais_and_bdmc_merge_into_the_metrics(tiny_run):
    from pyrovamp.cli import main

    before = json.loads((tiny_run / "metrics.json").read_text())
    assert (
        main(
            ["evaluate", str(tiny_run), "--method", "ais", "--num-steps", "20", "--num-chains", "4"]
        )
        == 0
    )
    m = json.loads((tiny_run / "metrics.json").read_text())
    for k, v in before.items():  # nothing lost
        assert m[k] == v
    assert m["ais_num_steps"] == 20 and m["ais_num_chains"] == 4 and m["ais_seconds"] > 0
    assert abs(m["test_log_likelihood_ais"] - m["test_log_likelihood_exact"]) < 0.5
    per = np.load(tiny_run / "log_likelihood_ais.npz")
    assert per["log_likelihood"].shape == (30,)

    assert (
        main(["evaluate", str(tiny_run), "--bdmc", "5", "--num-steps", "10", "--num-chains", "2"])
        == 0
    )
    m2 = json.loads((tiny_run / "metrics.json").read_text())
    assert m2["test_log_likelihood_ais"] == m["test_log_likelihood_ais"]
    assert m2["bdmc_num_points"] == 5 and m2["bdmc_upper"] - m2["bdmc_lower"] == pytest.approx(
        m2["bdmc_gap"]
    )

    assert main(["evaluate", str(tiny_run), "--num-samples", "10"]) == 0  # the full refresh
    m3 = json.loads((tiny_run / "metrics.json").read_text())
    assert m3["num_samples"] == 10 and m3["test_log_likelihood_ais"] == m["test_log_likelihood_ais"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "ais", "--num-samples", "10"], "--num-samples"),
        (["--method", "exact", "--num-chains", "3"], "--num-chains"),
        (["--method", "mcmc"], "invalid choice"),
        (["--bdmc", "0"], "--bdmc"),
    ],
)
def test_cli_evaluate_bad_arguments_are_one_line(tiny_run, args, message, capsys):
    from pyrovamp.cli import main

    try:
        code = main(["evaluate", str(tiny_run), *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_progress_bars_count_every_data_point_and_change_no_estimate(capsys):
    fa = FactorAnalysis()
    x = _data(fa, 7)
    capsys.readouterr()
    a = ais_log_likelihood(fa, x, 3, 6, seed=3, batch_size=3)
    i = log_likelihood(fa, x, 10, seed=3, batch_size=3)
    assert capsys.readouterr().err == ""  # silent by default
    b = ais_log_likelihood(fa, x, 3, 6, seed=3, batch_size=3, progress=True)
    err = capsys.readouterr().err
    assert torch.equal(a, b)
    assert "AIS log-likelihood (3 chains)" in err and "7/7" in err
    j = log_likelihood(fa, x, 10, seed=3, batch_size=3, progress=True)
    err = capsys.readouterr().err
    assert torch.equal(i, j)
    assert "IS log-likelihood (S=10)" in err and "7/7" in err


def test_cli_evaluate_shows_progress_unless_asked_not_to(tiny_run, tmp_path, capsys):
    import shutil

    from pyrovamp.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    capsys.readouterr()
    assert (
        main(["evaluate", str(run), "--method", "ais", "--num-steps", "5", "--num-chains", "2"])
        == 0
    )
    assert "30/30" in capsys.readouterr().err
    assert (
        main(["evaluate", str(run), "--method", "is", "--num-samples", "4", "--no-progress"]) == 0
    )
    assert "IS log-likelihood" not in capsys.readouterr().err
