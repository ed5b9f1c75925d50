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


# where each public name lives: ``pyrovamp.NAME`` must be that very object (the lazy names
# resolve on first use to the same object as their module path)
HOMES = {
    "pyrovamp.data": ["DATASETS", "Dataset", "load_dataset"],
    "pyrovamp.distributions": ["LIKELIHOODS"],
    "pyrovamp.priors": [
        "PRIORS",
        "Prior",
        "StandardPrior",
        "MoGPrior",
        "VampPrior",
        "GTMPrior",
        "GTMVampPrior",
        "FlowPrior",
        "make_prior",
    ],
    "pyrovamp.models": ["MODELS", "VAE", "HVAE", "ConvHVAE", "PixelHVAE", "check_data"],
    "pyrovamp.infer": [
        "DEFAULT_MEMORY_BUDGET",
        "active_units",
        "elbo",
        "elbo_terms",
        "evaluation_plan",
        "log_importance_weights",
        "log_likelihood",
        "points_per_block",
        "ais_log_likelihood",
        "bdmc",
        "exact_log_likelihood",
        "refine_guide",
        "importance_diagnostics",
        "khat_threshold",
        "khat_against_truth",
    ],
    "pyrovamp.training": ["train", "fit", "TrainConfig", "TrainResult"],
    "pyrovamp.workflow.comparison": [
        "compare",
        "to_inference_data",
        "plot_compare",
        "plot_pareto_k",
    ],
    "pyrovamp.workflow.plots": [
        "plot_latent",
        "plot_samples",
        "plot_reconstructions",
        "plot_history",
        "plot_pseudo_inputs",
        "plot_active_units",
        "image_grid",
        "plot_khat_vs_error",
    ],
    "pyrovamp.workflow.runs": ["load_run", "evaluate_run"],
    "pyrovamp.pretrained": [
        "PRETRAINED",
        "from_pretrained",
        "save_pretrained",
        "push_to_hub",
        "load_card",
    ],
}

# the documented leading parameters of the public functions (signatures only gain options)
SIGNATURES = {
    "load_dataset": ["name", "root", "download"],
    "make_prior": ["name", "latent_dim"],
    "check_data": ["x", "input_dim", "likelihood"],
    "log_likelihood": ["model", "x", "num_samples"],
    "elbo": ["model", "x", "num_samples"],
    "elbo_terms": ["model", "x", "num_samples"],
    "log_importance_weights": ["model", "x", "num_samples"],
    "active_units": ["model", "x"],
    "points_per_block": ["model", "num_samples"],
    "evaluation_plan": ["model", "num_samples"],
    "ais_log_likelihood": ["model", "x", "num_chains", "num_steps"],
    "bdmc": ["model", "num_points", "num_chains", "num_steps"],
    "exact_log_likelihood": ["model", "x"],
    "refine_guide": ["model", "x"],
    "importance_diagnostics": ["log_weights"],
    "khat_threshold": ["num_samples"],
    "khat_against_truth": ["log_likelihood", "pareto_k", "true_log_likelihood", "num_samples"],
    "train": ["model", "train_data", "validation_data"],
    "fit": ["model", "train_data", "validation_data", "config"],
    "compare": ["runs", "num_samples", "seed", "device"],
    "to_inference_data": ["run_or_model", "x", "num_samples"],
    "plot_compare": ["table"],
    "plot_pareto_k": ["idatas"],
    "plot_latent": ["model", "x", "grid_size", "title"],
    "plot_samples": ["model", "num_samples", "nrow", "mean"],
    "plot_reconstructions": ["model", "x", "num_images"],
    "plot_history": ["history"],
    "plot_pseudo_inputs": ["model", "num_images", "nrow"],
    "plot_active_units": ["model", "x", "threshold"],
    "image_grid": ["images", "image_shape", "nrow"],
    "plot_khat_vs_error": ["panels", "tolerance"],
    "load_run": ["run_dir", "device", "data_root"],
    "evaluate_run": ["model", "dataset", "num_samples"],
    "from_pretrained": ["name_or_path"],
    "save_pretrained": ["model", "folder"],
    "push_to_hub": ["model", "repo_id"],
    "load_card": ["name_or_path"],
}
KEYWORDS = {  # documented keyword options
    "log_likelihood": ["seed", "batch_size", "diagnostics", "first_block", "progress"],
    "elbo": ["seed", "batch_size", "first_block"],
    "ais_log_likelihood": ["seed", "diagnostics", "first_block", "progress"],
    "exact_log_likelihood": ["seed", "diagnostics", "first_block", "progress"],
    "to_inference_data": ["seed", "keep_log_weights", "cache", "recompute", "name", "history"],
    "compare": ["x", "cache"],
    "make_prior": ["encoder", "input_dim", "num_components"],
}


def test_every_public_name_is_the_object_at_its_module_path():
    import importlib

    assert set(NOTEBOOK_NAMES) <= set(pyrovamp.__all__)
    homed = [n for names in HOMES.values() for n in names]
    assert sorted(homed) == sorted(pyrovamp.__all__)  # each name has one documented home
    for module, names in HOMES.items():
        home = importlib.import_module(module)
        for name in names:
            assert getattr(pyrovamp, name) is getattr(home, name), (name, module)
    assert pyrovamp.compare is __import__("pyrovamp.workflow", fromlist=["compare"]).compare
    assert set(dir(pyrovamp)) >= set(pyrovamp.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pyrovamp.nope  # noqa: B018


def test_public_functions_and_classes_have_their_documented_form():
    import dataclasses
    import inspect

    import torch

    for name, leading in SIGNATURES.items():
        params = list(inspect.signature(getattr(pyrovamp, name)).parameters)
        assert params[: len(leading)] == leading, (name, params)
        assert set(KEYWORDS.get(name, ())) <= set(params), (name, params)
    prior_classes = {
        "standard": pyrovamp.StandardPrior,
        "mog": pyrovamp.MoGPrior,
        "vampprior": pyrovamp.VampPrior,
        "gtm": pyrovamp.GTMPrior,
        "gtm-vampprior": pyrovamp.GTMVampPrior,
        "flow": pyrovamp.FlowPrior,
    }
    assert tuple(prior_classes) == tuple(pyrovamp.PRIORS)
    encoder = pyrovamp.VAE((6,), 2, prior="standard", hidden_dim=8).encoder
    for name, cls in prior_classes.items():
        assert issubclass(cls, pyrovamp.Prior) and issubclass(cls, torch.nn.Module)
        prior = pyrovamp.make_prior(name, 2, encoder=encoder, input_dim=6, num_components=4)
        assert type(prior) is cls
        z = prior().sample((3,))
        assert z.shape == (3, 2) and prior().log_prob(z).shape == (3,)
    assert pyrovamp.MODELS == {
        "vae": pyrovamp.VAE,
        "hvae": pyrovamp.HVAE,
        "convhvae": pyrovamp.ConvHVAE,
        "pixelhvae": pyrovamp.PixelHVAE,
    }
    for cls in pyrovamp.MODELS.values():
        assert issubclass(cls, torch.nn.Module)
        assert callable(cls.model) and callable(cls.guide)
    assert set(pyrovamp.LIKELIHOODS) == {"bernoulli", "categorical", "discretized_logistic"}
    assert {"digits", "static_mnist", "frey_faces"} <= set(pyrovamp.DATASETS)
    assert dataclasses.is_dataclass(pyrovamp.Dataset) and dataclasses.is_dataclass(
        pyrovamp.TrainConfig
    )
    assert isinstance(pyrovamp.DEFAULT_MEMORY_BUDGET, int) and pyrovamp.DEFAULT_MEMORY_BUDGET > 0


def test_a_notebooks_first_cells_give_the_documented_shapes_and_types():
    """Load Digits, build a VAE, score it, compare it, draw it: each step's documented result."""
    import numpy as np
    import torch
    from matplotlib.figure import Figure

    ds = pyrovamp.load_dataset("digits")
    assert isinstance(ds, pyrovamp.Dataset) and ds.input_dim == 64
    x = ds.test[:12]
    kw = {"likelihood": "categorical", "num_values": 17, "hidden_dim": 16}
    model = pyrovamp.VAE(ds.image_shape, 2, prior="vampprior", num_components=4, **kw)
    standard = pyrovamp.VAE(ds.image_shape, 2, prior="standard", **kw)
    ll = pyrovamp.log_likelihood(model, x, 20, seed=0)
    assert isinstance(ll, torch.Tensor) and ll.shape == (12,) and bool((ll < 0).all())
    el = pyrovamp.elbo(model, x, 5, seed=0)
    assert el.shape == (12,) and float(el.mean()) <= float(ll.mean()) + 1.0
    lw = pyrovamp.log_importance_weights(model, x, 20, seed=0)
    assert lw.shape == (20, 12)
    assert torch.allclose(ll.double(), torch.logsumexp(lw.double(), 0) - np.log(20), atol=1e-4)
    diag = pyrovamp.importance_diagnostics(lw)
    assert diag["pareto_k"].shape == (12,) and diag["khat_threshold"] == pyrovamp.khat_threshold(20)
    assert pyrovamp.khat_threshold(1000) == pytest.approx(2 / 3)
    idatas = {
        n: pyrovamp.to_inference_data(m, x, 20, name=n)
        for n, m in (("vamp", model), ("std", standard))
    }
    table = pyrovamp.compare(idatas)
    assert list(table["rank"]) == [0, 1] and table.attrs["num_test_points"] == 12
    assert isinstance(pyrovamp.plot_latent(model, x), Figure)
    grid = pyrovamp.image_grid(x, ds.image_shape, nrow=4)
    assert isinstance(grid, np.ndarray) and grid.shape == (3 * 9 + 1, 4 * 9 + 1)


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
