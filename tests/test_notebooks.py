"""CI executes the four notebooks (small size) and fails when one fails."""

import os
import pathlib

import pytest

from conftest import SHARED_DATA

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
STATIC_MNIST = SHARED_DATA / "static_mnist"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook_runs")


def _execute(name, runs_dir):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    env = {"PYROVAMP_NOTEBOOK_SIZE": "ci", "PYROVAMP_RUNS": str(runs_dir),
           "PYROVAMP_STATIC_MNIST": str(STATIC_MNIST), "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    return "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_01_priors_on_digits(runs_dir):
    text = _execute("01_priors_on_digits.ipynb", runs_dir)
    assert text.count("test log-likelihood") >= 6


@pytest.mark.skipif(not STATIC_MNIST.is_dir(), reason="static MNIST files not present")
def test_02_and_03_static_mnist_and_comparison(runs_dir):
    text = _execute("02_vampprior_static_mnist.ipynb", runs_dir)
    assert "hvae + vampprior" in text
    assert len(list(runs_dir.iterdir())) == 4
    text = _execute("03_comparing_priors.ipynb", runs_dir)
    assert "mean_log_likelihood" in text and "k>0.7" in text


def test_04_prior_in_your_own_model(runs_dir):
    text = _execute("04_prior_in_your_own_model.ipynb", runs_dir)
    assert "test log-likelihood" in text and "'x': (1, 32, 64)" in text
