"""ArviZ workflow: InferenceData, the comparison table, PSIS diagnostics."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovamp import log_importance_weights
from pyrovamp.workflow import compare, importance_diagnostics, plot_compare, plot_pareto_k, to_inference_data

warnings.filterwarnings("ignore")


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
            pyro.sample("z", dist.Normal(0.8 * x + self.shift, self.width * math.sqrt(0.2)).to_event(1))


def _x(n=60):
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(0)) * math.sqrt(1.25)


def test_psis_flags_a_poor_proposal_and_passes_a_good_one():
    x = _x()
    good = importance_diagnostics(log_importance_weights(Gaussian(1.3), x, 2000, seed=0))
    poor = importance_diagnostics(log_importance_weights(Gaussian(0.3, 0.4), x, 2000, seed=0))
    assert np.mean(good["pareto_k"] < 0.7) > 0.95 and good["share_k_above_0.7"] < 0.05
    assert np.mean(poor["pareto_k"] > 0.7) > 0.8 and poor["share_k_above_0.7"] > 0.8
    assert np.all(good["ess"] > 500) and np.median(poor["ess"]) < 100
    exact = dist.Normal(0.0, math.sqrt(1.25)).log_prob(x[:, 0]).double().numpy()
    assert np.allclose(good["log_likelihood"], exact, atol=0.05)
    assert np.allclose(good["log_likelihood_psis"], good["log_likelihood"], atol=0.02)


def test_to_inference_data_holds_what_it_says():
    x = _x(30)
    idata = to_inference_data(Gaussian(1.3), x, num_samples=400, name="g",
                              history=[{"epoch": 1, "train_loss": 2.0, "val_elbo": -1.5}])
    assert set(idata.groups()) == {"log_likelihood", "importance_sampling", "training_history"}
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "obs")
    assert idata.importance_sampling["log_weights"].shape == (30, 400)
    ll = idata.log_likelihood["x"].values.ravel()
    elbo = idata.importance_sampling["elbo"].values
    assert np.all(ll >= elbo - 1e-9)
    assert idata.attrs["name"] == "g" and idata.attrs["num_samples"] == 400
    assert idata.training_history["val_elbo"].values.tolist() == [-1.5]
    with pytest.raises(ValueError, match="needs the test data"):
        to_inference_data(Gaussian(1.0))


def test_compare_ranks_and_its_se_is_the_paired_se():
    x = _x(80)
    runs = {"wide": Gaussian(1.3), "narrow": Gaussian(0.5, 0.3), "shifted": Gaussian(1.0, 0.5)}
    ids = {k: to_inference_data(m, x, num_samples=300, name=k) for k, m in runs.items()}
    table = compare(ids)
    assert list(table["rank"]) == [0, 1, 2]
    best = table.index[0]
    ll = {k: v.log_likelihood["x"].values.ravel() for k, v in ids.items()}
    for name in table.index[1:]:
        d = ll[best] - ll[name]
        assert table.loc[name, "log_likelihood_diff"] == pytest.approx(d.sum())
        assert table.loc[name, "dse"] == pytest.approx(math.sqrt(len(d) * d.var()), rel=1e-6)
        assert table.loc[name, "mean_dse"] == pytest.approx(math.sqrt(len(d) * d.var()) / 80, rel=1e-6)
    assert table.loc[best, "log_likelihood_sum"] == pytest.approx(ll[best].sum())
    plot_compare(table)
    plot_pareto_k(ids)
    other = to_inference_data(Gaussian(1.0), _x(81), num_samples=50, name="other")
    with pytest.raises(ValueError, match="different test sets"):
        compare({"wide": ids["wide"], "other": other})
    with pytest.raises(ValueError, match="at least two"):
        compare({"wide": ids["wide"]})


def test_compare_reads_run_folders(tmp_path):
    from pyrovamp.cli import main

    for prior in ("standard", "vampprior"):
        assert main(["train", "--prior", prior, "--epochs", "2", "--num-samples", "10",
                     "--max-points", "40", "--no-progress", "--out", str(tmp_path / prior)]) == 0
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "standard"), str(tmp_path / "vampprior"),
                 "--num-samples", "50", "--out", str(out)]) == 0
    assert {"comparison.csv", "compare.png", "pareto_k.png"} <= {p.name for p in out.iterdir()}
    csv = (out / "comparison.csv").read_text()
    assert "mean_log_likelihood" in csv and "vampprior" in csv and "standard" in csv
