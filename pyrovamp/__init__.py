"""pyrovamp: variational auto-encoders with learnable priors in Pyro.

Everything a notebook needs is importable from here; the subpackages follow the data flow
(each imports only the ones before it):

* data (:mod:`pyrovamp.data`): :func:`load_dataset`, :class:`Dataset`, ``DATASETS``;
* networks (:mod:`pyrovamp.nn`) and likelihoods p(x|z) (:mod:`pyrovamp.distributions`):
  ``LIKELIHOODS``;
* priors (:mod:`pyrovamp.priors`): :class:`StandardPrior`, :class:`MoGPrior`,
  :class:`VampPrior`, :class:`GTMPrior`, :class:`GTMVampPrior`, :class:`FlowPrior` (each an
  ``nn.Module`` whose call returns a Pyro distribution; ``pyro.sample("z", prior())`` in any
  model), :func:`make_prior`, ``PRIORS``;
* models (:mod:`pyrovamp.models`): :class:`VAE`, :class:`HVAE`, :class:`ConvHVAE`,
  :class:`PixelHVAE` with Pyro ``model``/``guide``; keyword-only options after ``input_shape``
  and ``latent_dim``;
* inference (:mod:`pyrovamp.infer`): :func:`log_likelihood`, :func:`elbo`, :func:`elbo_terms`,
  :func:`log_importance_weights`, :func:`active_units`, :func:`points_per_block`,
  :func:`evaluation_plan`, :func:`ais_log_likelihood`, :func:`bdmc`,
  :func:`exact_log_likelihood`, :func:`refine_guide` and the Pareto k-hat diagnostics
  (:func:`importance_diagnostics`, :func:`khat_threshold`, :func:`khat_against_truth`) -- nats
  per data point;
* training on PyTorch Lightning (:mod:`pyrovamp.training`): :func:`train`, :func:`fit`,
  :class:`TrainConfig`, :class:`TrainResult` (imported on first use: it loads Lightning);
* trained models (:mod:`pyrovamp.pretrained`): :func:`from_pretrained` (a name of the zoo
  ``PRETRAINED``, a folder or a Hugging Face Hub repository), :func:`save_pretrained`,
  :func:`push_to_hub`, :func:`load_card`;
* the workflow (:mod:`pyrovamp.workflow`): comparison with ArviZ, figures and run folders
  (imported on first use: they load ArviZ or matplotlib);
* the command line (:mod:`pyrovamp.cli`).

How the modules show their parameters to Pyro: :mod:`pyrovamp.registration`.
"""

from pyrovamp import _compat
from pyrovamp._lazy import lazy_attributes
from pyrovamp._version import __version__ as __version__
from pyrovamp.data import DATASETS, Dataset, load_dataset
from pyrovamp.distributions import LIKELIHOODS
from pyrovamp.infer import (
    DEFAULT_MEMORY_BUDGET,
    active_units,
    ais_log_likelihood,
    bdmc,
    elbo,
    elbo_terms,
    evaluation_plan,
    exact_log_likelihood,
    importance_diagnostics,
    khat_against_truth,
    khat_threshold,
    log_importance_weights,
    log_likelihood,
    points_per_block,
    refine_guide,
)
from pyrovamp.models import HVAE, MODELS, VAE, ConvHVAE, PixelHVAE, check_data
from pyrovamp.pretrained import PRETRAINED, from_pretrained, load_card, push_to_hub, save_pretrained
from pyrovamp.priors import (
    PRIORS,
    FlowPrior,
    GTMPrior,
    GTMVampPrior,
    MoGPrior,
    Prior,
    StandardPrior,
    VampPrior,
    make_prior,
)

_compat.install()

_LAZY = {
    "train": "training",
    "fit": "training",
    "TrainConfig": "training",
    "TrainResult": "training",
    "compare": "workflow",
    "to_inference_data": "workflow",
    "plot_compare": "workflow",
    "plot_pareto_k": "workflow",
    "plot_latent": "workflow.plots",
    "plot_samples": "workflow.plots",
    "plot_reconstructions": "workflow.plots",
    "plot_history": "workflow.plots",
    "plot_pseudo_inputs": "workflow.plots",
    "plot_active_units": "workflow.plots",
    "image_grid": "workflow.plots",
    "plot_khat_vs_error": "workflow.plots",
    "load_run": "workflow.runs",
    "evaluate_run": "workflow.runs",
}

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "PRIORS",
    "Prior",
    "StandardPrior",
    "MoGPrior",
    "VampPrior",
    "GTMPrior",
    "GTMVampPrior",
    "FlowPrior",
    "make_prior",
    "LIKELIHOODS",
    "MODELS",
    "VAE",
    "HVAE",
    "ConvHVAE",
    "PixelHVAE",
    "check_data",
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
    "PRETRAINED",
    "from_pretrained",
    "save_pretrained",
    "push_to_hub",
    "load_card",
    *_LAZY,
]

__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
