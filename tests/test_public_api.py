"""What a notebook needs comes from ``pyrovamp``; importing it changes no Pyro setting."""

import subprocess
import sys

import pytest

import pyrovamp

NOTEBOOK_NAMES = [  # what the notebooks and the README use
    "load_dataset",
    "Dataset",
    "DATASETS",
    "VAE",
    "HVAE",
    "ConvHVAE",
    "PRIORS",
    "make_prior",
    "StandardPrior",
    "MoGPrior",
    "VampPrior",
    "GTMPrior",
    "GTMVampPrior",
    "FlowPrior",
    "train",
    "fit",
    "TrainConfig",
    "TrainResult",
    "log_likelihood",
    "elbo",
    "elbo_terms",
    "log_importance_weights",
    "active_units",
    "points_per_block",
    "to_inference_data",
    "compare",
    "plot_compare",
    "plot_pareto_k",
    "plot_latent",
    "plot_samples",
    "plot_history",
    "plot_pseudo_inputs",
    "plot_active_units",
    "image_grid",
    "load_run",
]


def test_everything_a_notebook_needs_is_importable_from_pyrovamp():
    assert set(NOTEBOOK_NAMES) <= set(pyrovamp.__all__)
    for name in pyrovamp.__all__:
        assert getattr(pyrovamp, name) is not None, name
    assert pyrovamp.compare is __import__("pyrovamp.workflow", fromlist=["compare"]).compare


def test_importing_pyrovamp_changes_no_pyro_setting_and_stays_light():
    code = (
        "import sys, pyro; before = dict(pyro.settings.get()); import pyrovamp; "
        "assert dict(pyro.settings.get()) == before, (before, pyro.settings.get()); "
        "assert 'matplotlib.pyplot' not in sys.modules and 'arviz' not in sys.modules; "
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    "old, new",
    [
        ("pyrovamp.evaluation", "pyrovamp.infer"),
        ("pyrovamp.runs", "pyrovamp.workflow.runs"),
        ("pyrovamp.nets", "pyrovamp.nn"),
        ("pyrovamp._choices", "pyrovamp.training.config"),
    ],
)
def test_the_module_paths_of_0_1_import_the_new_modules_with_a_warning(old, new):
    """Old code keeps working: the old path is the new module object (patching one patches the
    other), its spec stays the new module's, and a DeprecationWarning names the new path."""
    code = (
        f"import importlib, sys, warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        f"try:\n    importlib.import_module({old!r})\nexcept DeprecationWarning as w:\n"
        f"    assert {new!r} in str(w), w\nelse:\n    raise SystemExit('no warning')\n"
        f"warnings.simplefilter('ignore')\nold = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({new!r})\n"
        f"assert old is new and new.__spec__.name == {new!r}, (old, new.__spec__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + r.stdout
