"""ArviZ workflow: InferenceData, the comparison table, PSIS diagnostics."""

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovamp import _arviz, log_importance_weights
from pyrovamp.errors import CheckpointError
from pyrovamp.workflow import (
    compare,
    importance_diagnostics,
    khat_threshold,
    plot_compare,
    plot_pareto_k,
    to_inference_data,
)


class Gaussian:
    """z ~ N(0, 1), x | z ~ N(z, 0.5^2): the posterior is N(0.8 x, 0.2); the guide scales its
    standard deviation by ``width`` (too narrow: heavy-tailed importance weights)."""

    def __init__(self, width, shift=0.0):
        self.width, self.shift = width, shift

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample(
                "z", dist.Normal(0.8 * x + self.shift, self.width * math.sqrt(0.2)).to_event(1)
            )


def _x(n=60):
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(0)) * math.sqrt(1.25)


def test_khat_threshold_follows_vehtari_2024():
    # min(1 - 1/log10(S), 0.7): Vehtari et al. (2024), sec. 3.2.4
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(1000) == pytest.approx(2 / 3)
    assert khat_threshold(5000) == 0.7 and khat_threshold(10**6) == 0.7
    assert khat_threshold(2000) == pytest.approx(1 - 1 / math.log10(2000))
    assert khat_threshold(10) == pytest.approx(0.0) and khat_threshold(1) == -math.inf
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_samples"):
            khat_threshold(bad)


def test_psis_flags_a_poor_proposal_and_passes_a_good_one():
    x = _x()
    good = importance_diagnostics(log_importance_weights(Gaussian(1.3), x, 2000, seed=0))
    poor = importance_diagnostics(log_importance_weights(Gaussian(0.3, 0.4), x, 2000, seed=0))
    t = khat_threshold(2000)
    assert good["khat_threshold"] == pytest.approx(t) and good["num_samples"] == 2000
    assert np.mean(good["pareto_k"] < t) > 0.95 and good["share_k_above_threshold"] < 0.05
    assert np.mean(poor["pareto_k"] > t) > 0.8 and poor["share_k_above_threshold"] > 0.8
    assert np.all(good["ess"] > 500) and np.median(poor["ess"]) < 100
    exact = dist.Normal(0.0, math.sqrt(1.25)).log_prob(x[:, 0]).double().numpy()
    assert np.allclose(good["log_likelihood"], exact, atol=0.05)
    assert np.allclose(good["log_likelihood_psis"], good["log_likelihood"], atol=0.02)
    # with a poor proposal the smoothed estimate differs from the plain one (the tail is
    # replaced), and both stay below the exact value on average (heavy right tail missing)
    assert np.mean(np.abs(poor["log_likelihood_psis"] - poor["log_likelihood"])) > 1e-3
    assert np.mean(poor["log_likelihood"]) < np.mean(exact)


def test_psis_estimate_equals_a_direct_computation_from_the_smoothed_weights():
    """The PSIS estimate is log mean of the smoothed weights on the raw scale; with a light
    tail (k-hat < 0) nothing is smoothed and it equals the plain estimate exactly."""
    from scipy.special import logsumexp

    rng = np.random.default_rng(0)
    lw = rng.normal(size=(400, 3))  # Gaussian log-weights: log-normal weights, k-hat ~ 0
    heavy = rng.standard_t(1.5, size=(400, 2)) * 3  # very heavy tail: smoothed
    d = importance_diagnostics(np.concatenate([lw, heavy], 1))
    plain = logsumexp(np.concatenate([lw, heavy], 1), axis=0) - math.log(400)
    assert np.allclose(d["log_likelihood"], plain)
    assert np.all(d["pareto_k"][3:] > 0.7)
    assert not np.allclose(d["log_likelihood_psis"][3:], plain[3:], atol=1e-3)
    ess = np.exp(2 * logsumexp(lw, axis=0) - logsumexp(2 * lw, axis=0))
    assert np.allclose(d["ess"][:3], ess)
    few = importance_diagnostics(lw[:10])  # too few draws for a Pareto fit
    assert np.all(np.isinf(few["pareto_k"])) and few["share_k_above_threshold"] == 1.0
    assert np.allclose(few["log_likelihood_psis"], few["log_likelihood"])
    with pytest.raises(ValueError, match="log_weights"):
        importance_diagnostics(np.zeros(5))


def test_khat_against_truth_counts_precision_and_recall():
    from pyrovamp.infer.diagnostics import khat_against_truth

    ll = [-1.0, -2.0, -3.0, -4.0, -5.0]
    truth = [-1.0, -1.0, -3.0, -3.0, -5.2]  # errors 0, -1, 0, -1, +0.2: points 1 and 3 are off
    k = [0.2, 0.9, 0.8, 0.1, 0.95]  # S=5000: threshold 0.7, points 1, 2 and 4 flagged
    r = khat_against_truth(ll, k, truth, 5000)
    assert (r["points"], r["points_off"], r["flagged"], r["flagged_and_off"]) == (5, 2, 3, 1)
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(1 / 2)
    assert r["mean_error"] == pytest.approx(-0.36) and r["worst_error"] == pytest.approx(-1.0)
    assert r["khat_threshold"] == 0.7 and np.allclose(r["error"], [0, -1, 0, -1, 0.2])
    # S=100: threshold 0.5 -- the same k-hats flag the same points; a tolerance of 1.5 nats
    # leaves nothing off, so recall is undefined
    assert math.isnan(khat_against_truth(ll, k, truth, 100, tolerance=1.5)["recall"])
    for args, what in (
        ((ll[:4], k, truth, 5000), "one length"),
        (([math.nan] * 5, k, truth, 5000), "NaN"),
        (([], [], [], 5000), "non-empty"),
    ):
        with pytest.raises(ValueError, match=what):
            khat_against_truth(*args)
    with pytest.raises(ValueError, match="tolerance"):
        khat_against_truth(ll, k, truth, 5000, tolerance=0.0)


def test_khat_flags_the_points_a_too_narrow_guide_gets_wrong():
    """On a model with a closed-form marginal, the points whose IS estimate is > 0.5 nats off
    are found by k-hat, and the figure draws one panel per model."""
    from pyrovamp.infer.diagnostics import khat_against_truth
    from pyrovamp.workflow.plots import plot_khat_vs_error

    x = _x(200) * 2.0  # far-out points: a narrow, shifted guide misses their posterior
    exact = dist.Normal(0.0, math.sqrt(1.25)).log_prob(x[:, 0]).double().numpy()
    panels = {}
    for name, guide in (("good", Gaussian(1.3)), ("poor", Gaussian(0.25, 0.5))):
        d = importance_diagnostics(log_importance_weights(guide, x, 1000, seed=0))
        panels[name] = {
            **khat_against_truth(d["log_likelihood"], d["pareto_k"], exact, 1000),
            "pareto_k": d["pareto_k"],
        }
    good, poor = panels["good"], panels["poor"]
    assert good["points_off"] == 0 and abs(good["mean_error"]) < 0.02
    assert poor["points_off"] >= 20 and poor["recall"] > 0.8 and poor["precision"] > 0.8
    fig = plot_khat_vs_error(panels)
    assert len(fig.axes) == 2 and "recall" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="panels"):
        plot_khat_vs_error({})
    with pytest.raises(ValueError, match="pareto_k"):
        plot_khat_vs_error({"a": {"error": [0.0], "khat_threshold": 0.7}})


def test_to_inference_data_holds_what_it_says():
    x = _x(30)
    idata = to_inference_data(
        Gaussian(1.3),
        x,
        num_samples=400,
        name="g",
        seed=3,
        keep_log_weights=True,
        history=[{"epoch": 1, "train_loss": 2.0, "val_elbo": -1.5}],
    )
    groups = set(_arviz.groups(idata))
    assert groups == {"importance_sampling", "training_history"}
    s = _arviz.group(idata, "importance_sampling")
    assert s["log_likelihood"].dims == ("obs",)
    assert s["log_weights"].shape == (30, 400)
    lw = s["log_weights"].values.astype(np.float64)  # (N, S)
    from scipy.special import logsumexp

    assert np.allclose(s["log_likelihood"].values, logsumexp(lw, 1) - math.log(400), atol=1e-5)
    assert np.allclose(s["elbo"].values, lw.mean(1), atol=1e-5)
    assert np.allclose(s["log_weights_max"].values, lw.max(1), atol=1e-5)
    assert np.allclose(s["log_weights_std"].values, lw.std(1), atol=1e-5)
    # the same draws as log_importance_weights with the same seed
    direct = log_importance_weights(Gaussian(1.3), x, 400, seed=3).T.numpy()
    assert np.allclose(lw, direct)
    exact = dist.Normal(0.0, math.sqrt(1.25)).log_prob(x[:, 0]).double().numpy()
    assert np.allclose(s["log_likelihood"].values, exact, atol=0.05)
    a = idata.attrs
    assert a["name"] == "g" and a["num_samples"] == 400 and a["seed"] == 3
    assert a["khat_threshold"] == pytest.approx(khat_threshold(400))
    assert a["share_k_above_threshold"] == pytest.approx(
        np.mean(s["pareto_k"].values > khat_threshold(400))
    )
    assert _arviz.group(idata, "training_history")["val_elbo"].values.tolist() == [-1.5]
    # by default the (N, S) log-weights are not kept (nor stored in a run folder's cache)
    plain = _arviz.group(to_inference_data(Gaussian(1.3), x, 400, seed=3), "importance_sampling")
    assert "log_weights" not in plain and np.allclose(plain["log_likelihood"], s["log_likelihood"])
    with pytest.raises(ValueError, match="needs the test data"):
        to_inference_data(Gaussian(1.0))
    with pytest.raises(ValueError, match="num_samples"):
        to_inference_data(Gaussian(1.0), x, num_samples=0)


def test_arviz_does_not_mistake_the_estimate_for_posterior_draws():
    """No ``log_likelihood``/``posterior`` group: ArviZ's loo refuses instead of treating one
    importance-sampled value per point as a single posterior draw."""
    idata = to_inference_data(Gaussian(1.3), _x(20), num_samples=100)
    assert not {"log_likelihood", "posterior"} & set(_arviz.groups(idata))
    with pytest.raises(TypeError, match="log likelihood not found"):
        _arviz.arviz().loo(idata)


def test_compare_ranks_and_its_se_is_the_paired_se():
    x = _x(80)
    runs = {"wide": Gaussian(1.3), "narrow": Gaussian(0.5, 0.3), "shifted": Gaussian(1.0, 0.5)}
    ids = {k: to_inference_data(m, x, num_samples=300, name=k) for k, m in runs.items()}
    table = compare(ids)
    assert list(table["rank"]) == [0, 1, 2]
    best = table.index[0]
    ll = {
        k: _arviz.group(v, "importance_sampling")["log_likelihood"].values for k, v in ids.items()
    }
    assert best == max(ll, key=lambda k: ll[k].sum())
    for name in table.index[1:]:
        d = ll[best] - ll[name]
        assert table.loc[name, "log_likelihood_diff"] == pytest.approx(d.sum())
        assert table.loc[name, "dse"] == pytest.approx(math.sqrt(len(d) * d.var()), rel=1e-6)
        assert table.loc[name, "mean_dse"] == pytest.approx(
            math.sqrt(len(d) * d.var()) / 80, rel=1e-6
        )
    assert table.loc[best, "log_likelihood_diff"] == 0.0 and table.loc[best, "dse"] == 0.0
    assert table.loc[best, "log_likelihood_sum"] == pytest.approx(ll[best].sum())
    assert table.loc[best, "se"] == pytest.approx(math.sqrt(80 * ll[best].var()))
    assert table["weight"].sum() == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(table["khat_threshold"], khat_threshold(300))
    assert table.attrs["num_test_points"] == 80
    plot_compare(table)
    plot_pareto_k(ids)
    other = to_inference_data(Gaussian(1.0), _x(81), num_samples=50, name="other")
    with pytest.raises(ValueError, match="different test sets"):
        compare({"wide": ids["wide"], "other": other})
    with pytest.raises(ValueError, match="at least two"):
        compare({"wide": ids["wide"]})


def test_compare_takes_models_with_x_as_documented():
    x = _x(50)
    models = {"wide": Gaussian(1.3), "narrow": Gaussian(0.5, 0.3)}
    table = compare(models, x=x, num_samples=200, seed=1)
    ids = {k: to_inference_data(m, x, num_samples=200, seed=1, name=k) for k, m in models.items()}
    ref = compare(ids)
    assert list(table.index) == list(ref.index)
    assert np.allclose(table["log_likelihood_sum"], ref["log_likelihood_sum"])
    assert np.allclose(table["dse"], ref["dse"])
    # numpy data, and a list of evaluations named by their attrs
    assert np.allclose(
        compare(models, x=x.numpy(), num_samples=200, seed=1)["log_likelihood_sum"],
        table["log_likelihood_sum"],
    )
    assert list(compare(list(ids.values())).index) == list(ref.index)
    with pytest.raises(ValueError, match="needs the test data"):
        compare(models)
    with pytest.raises(ValueError, match="expected a model"):
        compare({"a": 3, "b": 4}, x=x)


def _train_two(tmp_path):
    from pyrovamp.cli import main

    for prior in ("standard", "vampprior"):
        assert (
            main(
                [
                    "train",
                    "--prior",
                    prior,
                    "--epochs",
                    "2",
                    "--num-samples",
                    "10",
                    "--max-points",
                    "40",
                    "--no-progress",
                    "--out",
                    str(tmp_path / prior),
                ]
            )
            == 0
        )
    return [tmp_path / "standard", tmp_path / "vampprior"]


def test_compare_reads_run_folders_and_keeps_their_evaluation(tmp_path, monkeypatch):
    from pyrovamp.cli import main
    from pyrovamp.workflow import EVALUATION_FILE, comparison, load_evaluation

    runs = _train_two(tmp_path)
    calls = []
    real = comparison.log_importance_weights

    def counting(model, x, num_samples, **kw):
        calls.append(num_samples)
        return real(model, x, num_samples, **kw)

    monkeypatch.setattr(comparison, "log_importance_weights", counting)
    out = tmp_path / "cmp"
    args = ["compare", *map(str, runs), "--num-samples", "50", "--out", str(out)]
    assert main(args) == 0
    assert calls == [50, 50]
    assert {"comparison.csv", "compare.png", "pareto_k.png"} <= {p.name for p in out.iterdir()}
    csv = (out / "comparison.csv").read_text()
    assert "mean_log_likelihood" in csv and "vampprior" in csv and "standard" in csv
    assert "share_k_above_threshold" in csv and "khat_threshold" in csv
    stored = load_evaluation(runs[0])
    assert stored.attrs["num_samples"] == 50 and stored.attrs["seed"] == 0
    assert stored["log_likelihood"].shape == (40,)
    assert not list(runs[0].glob(f".{EVALUATION_FILE}.tmp*"))  # written atomically
    first = (out / "comparison.csv").read_text()

    assert main(args) == 0  # the second call reuses both stored evaluations
    assert calls == [50, 50]
    assert (out / "comparison.csv").read_text() == first

    assert main([*args[:-4], "--num-samples", "60", "--out", str(out)]) == 0  # changed S
    assert calls == [50, 50, 60, 60]
    assert load_evaluation(runs[1]).attrs["num_samples"] == 60

    # other trained parameters (a changed checkpoint) are evaluated anew
    import torch

    ck_path = runs[0] / "model.pt"
    ck = torch.load(ck_path, weights_only=True)
    state = ck["pyrovamp"]["scored_state"]
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 0.01
    torch.save(ck, ck_path)
    assert main([*args[:-4], "--num-samples", "60", "--out", str(out)]) == 0
    assert calls == [50, 50, 60, 60, 60]

    # an unreadable stored evaluation is recomputed and replaced, never an error
    (runs[1] / EVALUATION_FILE).write_bytes(b"not netcdf")
    assert main([*args[:-4], "--num-samples", "60", "--out", str(out)]) == 0
    assert calls == [50, 50, 60, 60, 60, 60]
    assert load_evaluation(runs[1]) is not None

    # a damaged second folder is refused before the first is evaluated, and no --out is left
    whole = (runs[1] / "model.pt").read_bytes()
    (runs[1] / "model.pt").write_bytes(whole[:1000])
    fresh = tmp_path / "cmp2"
    with pytest.raises(CheckpointError, match="model.pt cannot be read"):
        comparison.compare_run_folders(runs, fresh, num_samples=70)
    assert calls == [50, 50, 60, 60, 60, 60] and not fresh.exists()
    # a failure during the work leaves no empty --out either
    monkeypatch.setattr(comparison, "compare", lambda evaluations: 1 / 0)
    (runs[1] / "model.pt").write_bytes(whole)
    with pytest.raises(ZeroDivisionError):
        comparison.compare_run_folders(runs, fresh, num_samples=70)
    assert calls == [50, 50, 60, 60, 60, 60, 70, 70] and not fresh.exists()


def test_compare_mixes_run_folders_and_models(tmp_path):
    from pyrovamp.workflow.runs import load_run

    runs = _train_two(tmp_path)
    model, cfg, dataset, _ = load_run(runs[1])
    x = dataset.test[: cfg["max_points"]]
    table = compare({"standard": runs[0], "same_vampprior": model}, x=x, num_samples=30)
    ref = compare({"standard": runs[0], "vampprior": runs[1]}, num_samples=30, cache=False)
    assert sorted(table["log_likelihood_sum"]) == pytest.approx(sorted(ref["log_likelihood_sum"]))


def test_compare_takes_pretrained_models_beside_run_folders(tmp_path, monkeypatch, capsys):
    """``pyrovamp compare RUN ZOO_NAME PRETRAINED_FOLDER``: each pretrained model is scored on its
    card's test set (seed 0, as a run is), nothing is written into its folder, and a model of
    another data set is refused before any work."""
    import pyrovamp as pv
    from pyrovamp.cli import main
    from pyrovamp.data import datasets
    from pyrovamp.workflow import comparison

    run = tmp_path / "run"
    args = ["train", "--prior", "standard", "--epochs", "1", "--num-samples", "5", "--no-progress"]
    assert main([*args, "--out", str(run)]) == 0  # the whole digits test set, as the zoo's
    folder = tmp_path / "mine"
    pv.save_pretrained(pv.load_run(run)[0], folder, dataset="digits")
    zoo = pv.PRETRAINED["digits-vae-vampprior"]
    before = sorted((p.name, p.stat().st_mtime_ns) for p in zoo.iterdir())
    out = tmp_path / "cmp"
    argv = ["compare", str(run), "digits-vae-vampprior", str(folder), "--num-samples", "20"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "digits-vae-vampprior" in printed and "mine" in printed and "run" in printed
    table = pv.workflow.comparison.compare_run_folders(
        [run, "digits-vae-vampprior", folder], tmp_path / "cmp2", num_samples=20
    )[0]
    test = pv.load_dataset("digits").test
    for name, model in (("digits-vae-vampprior", pv.from_pretrained("digits-vae-vampprior")),
                        ("mine", pv.from_pretrained(folder))):  # fmt: skip
        expected = pv.log_likelihood(model, test, 20, seed=0).double().mean().item()
        assert table.loc[name, "mean_log_likelihood"] == pytest.approx(expected, abs=1e-5)
    # the exported folder holds the run's model: the same values
    assert table.loc["mine", "mean_log_likelihood"] == pytest.approx(
        table.loc["run", "mean_log_likelihood"], abs=1e-5
    )
    assert sorted((p.name, p.stat().st_mtime_ns) for p in zoo.iterdir()) == before
    assert not (folder / comparison.EVALUATION_FILE).exists()

    # static MNIST (small files of its format) against digits: refused before any evaluation
    monkeypatch.setattr(datasets, "SHA256", {})
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        rows = (rng.uniform(size=(5, 784)) < 0.3).astype(int)
        (root / f"binarized_mnist_{split}.amat").write_text(
            "\n".join(" ".join(map(str, r)) for r in rows) + "\n"
        )
    calls = []
    monkeypatch.setattr(comparison, "log_importance_weights", lambda *a, **k: calls.append(1))
    fresh = tmp_path / "cmp3"
    with pytest.raises(ValueError, match=r"^compare ranks models on one test set; got run on "
                       r"digits, static-mnist-vae-standard on static_mnist$"):  # fmt: skip
        comparison.compare_run_folders(
            [run, "static-mnist-vae-standard"], fresh, num_samples=5, data_root=root
        )
    assert not calls and not fresh.exists()
    with pytest.raises(ValueError, match=r"^digits-vae-vampire is not a run folder, a pretrained"):
        comparison.compare_run_folders([run, "digits-vae-vampire"], fresh, num_samples=5)
    short = tmp_path / "short"  # the first 60 points of digits: another test set
    assert main([*args, "--max-points", "60", "--out", str(short)]) == 0
    with pytest.raises(ValueError, match=r"got short on digits \(its first 60 points\), digits"):
        comparison.compare_run_folders([short, "digits-vae-vampprior"], fresh, num_samples=5)
    assert not calls and not fresh.exists()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no static MNIST files: refused alike
    with pytest.raises(ValueError, match=r"^compare ranks models on one test set"):
        comparison.compare_run_folders([run, "static-mnist-vae-standard"], fresh, num_samples=5)
    assert not calls and not fresh.exists()


def _train_one(tmp_path, name="run"):
    from pyrovamp.cli import main

    out = tmp_path / name
    args = ["train", "--prior", "standard", "--epochs", "1", "--num-samples", "5"]
    assert main([*args, "--max-points", "30", "--no-progress", "--out", str(out)]) == 0
    return out


def test_to_inference_data_reuses_a_run_folders_evaluation_by_default(tmp_path, monkeypatch):
    """The README's cache works with the defaults: a second call with the same settings reads
    ``evaluation.nc``; only ``keep_log_weights=True`` (not stored) evaluates anew."""
    from pyrovamp.workflow import comparison

    run = _train_one(tmp_path)
    calls = []
    real = comparison.log_importance_weights

    def counting(model, x, num_samples, **kw):
        calls.append(num_samples)
        return real(model, x, num_samples, **kw)

    monkeypatch.setattr(comparison, "log_importance_weights", counting)
    first = to_inference_data(run, num_samples=40)
    second = to_inference_data(run, num_samples=40)
    assert calls == [40] and (first.attrs["from_cache"], second.attrs["from_cache"]) == (0, 1)
    a, b = (_arviz.group(i, "importance_sampling") for i in (first, second))
    assert np.array_equal(a["log_likelihood"].values, b["log_likelihood"].values)
    full = to_inference_data(run, num_samples=40, keep_log_weights=True)
    assert calls == [40, 40] and full.attrs["from_cache"] == 0
    w = _arviz.group(full, "importance_sampling")["log_weights"]
    assert w.shape == (30, 40)
    assert to_inference_data(run, num_samples=40).attrs["from_cache"] == 1 and calls == [40, 40]


def _tiny_vae():
    from pyrovamp import VAE

    torch.manual_seed(0)
    return VAE((2, 3), 3, prior="standard", likelihood="bernoulli", hidden_dim=8)


def _binary(n=5, d=6):
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(1)) < 0.5).float()


def test_evaluate_run_and_evaluate_method_flag_points_by_one_k_hat_rule(monkeypatch):
    """Both count the points with k-hat above min(1 - 1/log10 S, 0.7) (Vehtari et al. 2024):
    for S = 1000 (threshold 0.667) k-hats of 0.68 and 0.69 are flagged by both."""
    from pyrovamp.data import Dataset
    from pyrovamp.workflow import estimates

    model, x = _tiny_vae(), _binary()
    ds = Dataset("toy", x, x, x, (2, 3), "bernoulli")
    run = estimates.evaluate_run(model, ds, 200, seed=1)
    method, per = estimates.evaluate_method(model, x, "is", num_samples=200, seed=1)
    assert run["share_k_above_threshold"] == method["share_k_above_threshold"]
    assert run["khat_threshold"] == method["khat_threshold"] == khat_threshold(200)
    assert np.array_equal(per["pareto_k"] > khat_threshold(200), per["pareto_k"] > 0.5)

    k = np.array([0.1, 0.5, 0.68, 0.69, 0.9])

    def fixed_weights(model, x, num_samples, **kw):  # the same diagnostics for both paths
        n = x.shape[0]
        diag = {"log_likelihood_psis": np.zeros(n), "pareto_k": k[:n], "ess": np.ones(n)}
        return torch.zeros(n), diag

    from pyrovamp.workflow import parallel  # both paths score through parallel.score_shard

    monkeypatch.setattr(parallel, "log_likelihood", fixed_weights)
    run = estimates.evaluate_run(model, ds, 1000)
    method, _ = estimates.evaluate_method(model, x, "is", num_samples=1000)
    assert run["share_k_above_threshold"] == method["share_k_above_threshold"] == 0.6
    assert run["khat_threshold"] == method["khat_threshold"] == pytest.approx(2 / 3)


def _merge_many(path, prefix, count, errors):
    from pyrovamp.workflow.estimates import merge_metrics

    try:
        for j in range(count):
            merge_metrics(path, {f"{prefix}_{j}": j})
    except Exception as e:  # reported by the test
        errors.append(repr(e))


def _slow_writes(monkeypatch):
    """Widen the window between a merge's read and its write, as a slow disk would."""
    import time

    from pyrovamp.workflow import estimates

    real = estimates.atomic_write_text

    def slow(path, text):
        time.sleep(0.002)
        return real(path, text)

    monkeypatch.setattr(estimates, "atomic_write_text", slow)


def test_concurrent_merges_into_one_metrics_file_keep_every_key(tmp_path, monkeypatch):
    """Evaluations merging into one run folder's metrics.json at the same time (threads, then
    processes) lose none of each other's keys."""
    import multiprocessing
    import threading

    _slow_writes(monkeypatch)
    path = tmp_path / "metrics.json"
    errors: list = []
    threads = [
        threading.Thread(target=_merge_many, args=(path, f"t{i}", 15, errors)) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = json.loads(path.read_text())
    assert len(got) == 60 and got["t3_14"] == 14

    if "fork" not in multiprocessing.get_all_start_methods():
        return
    ctx = multiprocessing.get_context("fork")  # the children inherit the slow writes
    path = tmp_path / "metrics2.json"
    procs = [ctx.Process(target=_merge_many, args=(path, f"p{i}", 15, [])) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(json.loads(path.read_text())) == 45


def test_plot_latent_takes_numpy_data_and_names_a_wrong_argument():
    from pyrovamp.errors import ArgumentTypeError
    from pyrovamp.workflow.plots import plot_latent, plot_reconstructions, plot_samples

    model, x = _tiny_vae(), _binary(20)
    dots = [c.get_offsets() for c in plot_latent(model, x.numpy()).axes[0].collections[-1:]]
    same = [c.get_offsets() for c in plot_latent(model, x).axes[0].collections[-1:]]
    assert np.array_equal(dots[0], same[0]) and dots[0].shape == (20, 2)
    plot_reconstructions(model, x.numpy().astype(np.int64), num_images=np.int64(4))
    plot_samples(model, np.int64(4), nrow=np.int32(2))
    for call, name in (
        (lambda: plot_latent(model, x.tolist()), "x must be a torch.Tensor or numpy array"),
        (lambda: plot_latent(model, x, grid_size=2.5), "grid_size must be an integer"),
        (lambda: plot_latent(model, x, title=3), "title must be a string"),
        (lambda: plot_latent("vae", x), "model must be a pyrovamp model"),
        (lambda: plot_samples(model, 2.5), "num_samples must be a positive integer"),
        (lambda: plot_samples(model, 4, mean="yes"), "mean must be True or False"),
    ):
        with pytest.raises(ArgumentTypeError, match=name):
            call()
    with pytest.raises(ValueError, match=r"x must have shape \(N, 6\)"):
        plot_latent(model, x[:, :4].numpy())
    with pytest.raises(ValueError, match="num_samples must be a positive integer, got 0"):
        plot_samples(model, 0)
    with pytest.raises(ValueError, match="x contains NaN"):
        plot_latent(model, np.full((3, 6), np.nan))


def test_plots_restore_the_models_mode_when_they_raise():
    from pyrovamp.workflow.plots import (
        plot_active_units,
        plot_latent,
        plot_reconstructions,
        plot_samples,
    )

    model, x = _tiny_vae(), _binary(20)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    hook = model.encoder.register_forward_pre_hook(boom)
    for plot in (plot_latent, plot_reconstructions, plot_active_units):
        model.train()
        model.prior.eval()  # a mixed state is restored as it was, module by module
        with pytest.raises(RuntimeError, match="boom"):
            plot(model, x)
        assert model.training and model.encoder.training and not model.prior.training, plot
    hook.remove()
    model.train()
    model.sample = boom  # an instance attribute: plot_samples calls it
    with pytest.raises(RuntimeError, match="boom"):
        plot_samples(model)
    assert all(m.training for m in model.modules())
    del model.sample
    plot_latent(model, x)
    assert all(m.training for m in model.modules())


def test_workflow_functions_name_a_wrong_argument():
    from pyrovamp.data import Dataset
    from pyrovamp.errors import ArgumentTypeError
    from pyrovamp.workflow import estimates

    model, x = _tiny_vae(), _binary()
    ds = Dataset("toy", x, x, x, (2, 3), "bernoulli")
    for call, name in (
        (lambda: estimates.evaluate_run(model, "toy", 10), "dataset must be a pyrovamp.data"),
        (lambda: estimates.evaluate_run(object(), ds, 10), "model must be an object with Pyro"),
        (lambda: estimates.evaluate_run(model, ds, 10.0), "num_samples must be a positive"),
        (lambda: estimates.evaluate_run(model, ds, 10, max_points="3"), "max_points must"),
        (lambda: estimates.evaluate_method(model, x, "is", num_samples=2.5), "num_samples"),
        (lambda: estimates.evaluate_bdmc(model, 2.0), "num_points must be a positive"),
        (lambda: estimates.merge_metrics("m.json", [1]), "new must be a dict"),
        (lambda: to_inference_data(3, x), "run_or_model must be a run folder"),
        (lambda: to_inference_data(model, x.tolist()), "x must be a tensor or numpy array"),
        (lambda: to_inference_data(model, x, seed=1.5), "seed must be an integer >= 0"),
        (lambda: to_inference_data(model, x, keep_log_weights=1), "keep_log_weights must be"),
        (lambda: compare(5), "runs must be a dict"),
        (lambda: plot_pareto_k([1]), "idatas must be a dict"),
    ):
        with pytest.raises(ArgumentTypeError, match=name):
            call()
    for call, name in (
        (lambda: estimates.evaluate_method(model, x, "iss"), "method must be one of is, ais"),
        (lambda: estimates.evaluate_run(model, ds, 10, seed=-1), "seed must be an integer >= 0"),
        (lambda: estimates.evaluate_bdmc(model, 0), "num_points must be a positive integer"),
        (lambda: estimates.evaluate_estimators(model, x, ".", "is", 0), "bdmc_points must be"),
        (lambda: to_inference_data(model, x, num_samples=0), "num_samples must be a positive"),
    ):
        with pytest.raises(ValueError, match=name):
            call()
    # NumPy integers count as integers everywhere
    m, _ = estimates.evaluate_method(model, x, "is", num_samples=np.int64(20), seed=np.int32(1))
    assert m["num_samples"] == 20 and isinstance(m["num_samples"], int)
    idata = to_inference_data(model, x.numpy(), num_samples=np.int64(20), seed=np.int64(0))
    assert idata.attrs["num_samples"] == 20
