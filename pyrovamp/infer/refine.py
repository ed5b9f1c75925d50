"""Guide refinement: a tighter importance-sampling proposal for a trained model, the model frozen.

The importance-sampled log-likelihood (:func:`pyrovamp.log_likelihood`) uses the
guide ``q(h|x)`` as its proposal. A guide trained jointly with the model falls short of the best
proposal in its family: an amortised guide fitted to a moving model leaves an amortisation gap
(Cremer, Li & Duvenaud 2018, "Inference suboptimality in variational autoencoders", sec. 3), and
one fitted to the ELBO is narrower than a good proposal for ``S`` samples (the IWAE bound's optimum
is wider; Burda et al. 2016, sec. 5). :func:`refine_guide`
trains a copy of the guide's networks on the importance-weighted bound (Burda et al. 2016,
eq. 8)

    L_K(x) = E[ log (1/K) sum_k p(x, h_k) / q(h_k|x) ],   h_k ~ q(h|x),

with the doubly reparameterised gradient of Tucker, Lawson, Gu & Maddison (2019), "Doubly
reparameterized gradient estimators for Monte Carlo objectives", eq. 7 (for the inference
network: ``sum_k w~_k^2 d log w_k / dh_k dh_k/dphi``, ``w~`` the normalised weights), whose
signal-to-noise ratio does not decay with ``K`` as the IWAE gradient's does (Rainforth et al.
2018). Every parameter of ``p(x, h)`` stays as it was -- also a prior whose components go
through the encoder (VampPrior, GTM-VampPrior: ``p(z) = 1/K sum_k q(z|u_k)`` keeps the encoder
it was trained with, as a frozen copy) -- so ``log p(x)`` is the same function and any estimate
with the refined guide is an estimate of the same model's log-likelihood: IS with the refined
proposal is still a stochastic lower bound, typically a tighter one (not guaranteed: the guide is
fitted on the training set, and to ``L_K``, not to the ``S``-sample estimate on the test set).
"""

from __future__ import annotations

import copy
import math
import time

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyrovamp._progress import progress_bar
from pyrovamp._validate import check_int, check_positive
from pyrovamp.errors import NonFiniteLossError
from pyrovamp.infer.context import as_model_data, check_model, evaluation_context
from pyrovamp.infer.weights import PLATE, dreg_log_weights, site_log_probs
from pyrovamp.priors import Prior

__all__ = ["refine_guide"]


def _log_density(trace, x) -> torch.Tensor:
    """The sum of ``log_prob`` over every sample site of ``trace`` (``log p(x, h)`` of a model
    trace, ``log q(h|x)`` of a guide trace): ``(K, N)``-broadcastable, nats."""
    observed, latent = site_log_probs(trace, x)
    return torch.as_tensor(observed + latent)


def _unshare_priors(model) -> None:
    """Give every prior whose components go through a module of the guide (``prior.encoder``)
    its own copy of that module, so that training the guide leaves ``p(z)`` as it was."""
    for m in list(model.modules()):
        encoder = getattr(m, "encoder", None)
        if isinstance(m, Prior) and isinstance(encoder, nn.Module):
            frozen = copy.deepcopy(encoder)
            nn.Module.__setattr__(m, "encoder", frozen)


def _dreg_loss(model, x, num_samples):
    """``(loss, bound)`` for one batch ``x``: ``loss`` a surrogate whose gradient in the guide's
    parameters is the doubly reparameterised estimate of ``-grad mean_n L_K(x_n)`` (Tucker et al.
    2019, eq. 7; :func:`pyrovamp.infer.weights.dreg_log_weights`, the model's parameters frozen),
    ``bound`` the ``(N,)`` values of ``L_K`` (detached, nats)."""
    log_w, _ = dreg_log_weights(
        model.model, model.guide, x, num_samples, require_rsample="refine_guide", scaled=False
    )
    bound = torch.logsumexp(log_w, 0) - math.log(num_samples)
    return -bound.mean(), bound.detach()


def _guide_parameters(model, x) -> list[nn.Parameter]:
    """The parameters the guide's samples or densities depend on (found by differentiating one
    pass of the guide on two data points).

    Raises:
        ValueError: a latent site of the guide is not reparameterised, or ``log p(x, h)`` at
            fixed ``h`` depends on one of these parameters (the model would not stay frozen).
    """
    params = [p for p in model.parameters()]
    with pyro.plate(PLATE, 1, dim=-2):
        trace = poutine.trace(model.guide).get_trace(x[:2])
    observed, latent = site_log_probs(trace, x[:2], require_rsample="refine_guide")
    out = torch.as_tensor(observed + latent).sum()
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site):
            out = out + site["value"].sum()
    grads = torch.autograd.grad(out, params, allow_unused=True)
    guide = [p for p, g in zip(params, grads, strict=True) if g is not None]
    fixed = {
        n: dict(s, value=s["value"].detach())
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"]
    }
    fixed_trace = trace.copy()
    fixed_trace.nodes.update(fixed)
    with pyro.plate(PLATE, 1, dim=-2):
        model_trace = poutine.trace(poutine.replay(model.model, trace=fixed_trace)).get_trace(x[:2])
    log_p = _log_density(model_trace, x[:2]).sum()
    if log_p.requires_grad:
        names = {id(p): n for n, p in model.named_parameters()}
        shared = [
            names[id(p)]
            for p, g in zip(
                guide, torch.autograd.grad(log_p, guide, allow_unused=True), strict=True
            )
            if g is not None
        ]
        if shared:
            raise ValueError(
                f"the guide shares parameters with the model's p(x, h) "
                f"({', '.join(shared[:3])}): refining it would change the model"
            )
    return guide


def refine_guide(
    model,
    x,
    *,
    epochs: int = 5,
    num_samples: int = 10,
    lr: float = 1e-4,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool | str = False,
):
    """Train a copy of ``model``'s guide on ``x`` by the importance-weighted bound ``L_K`` with the
    doubly reparameterised gradient (Tucker et al. 2019, eq. 7), every parameter of the model
    ``p(x, h)`` frozen (see the module docstring). The proposal for
    :func:`pyrovamp.log_likelihood`: fit it on the training set, then estimate the test
    log-likelihood with the copy -- the same model's ``log p(x)``, a tighter lower bound.

    Runs in the setting of the likelihood estimators: eval mode (no dropout, batch norm on its
    running statistics), priors computed once, the random streams forked and seeded by ``seed``
    (the result is reproducible and the caller's streams are left alone). ``model`` itself is not
    changed.

    Args:
        model: a pyrovamp model (:class:`pyrovamp.VAE`, :class:`pyrovamp.HVAE`, ...) or another
            ``nn.Module`` with Pyro ``model(x)``/``guide(x)`` whose sites sit in one data plate at
            ``dim=-1`` and whose guide is reparameterised.
        x: ``(N, ...)`` data to fit the guide on (the training set), tensor or numpy array.
        epochs: passes over ``x``.
        num_samples: ``K`` importance samples per data point in the bound.
        lr: Adam's learning rate (the guide is already trained: a small step).
        batch_size: data points per step.
        seed: seeds the shuffling and the samples.
        progress: progress over the data points of every epoch (the result does
            not depend on it): ``True`` a tqdm bar (on stderr, or a widget in
            Jupyter); ``"auto"`` a bar on a terminal or in a notebook, else a log line at most
            once a minute (:func:`pyrovamp._progress.progress_bar`); ``False`` nothing.

    Returns:
        ``(refined, history)``: ``refined`` a copy of ``model`` in eval mode, every parameter with
        ``requires_grad=False``, whose guide is refined (the guide's parameters that ``model``
        trains; frozen ones stay) and whose priors keep their components -- a prior built on the
        encoder (VampPrior, GTM-VampPrior) holds a frozen copy of it, so ``refined`` is for
        estimating ``log p(x)``: its ``state_dict()`` does not load into a freshly built model
        (there the prior and the guide share one encoder again). ``history`` is a list of dicts,
        one per epoch: ``epoch``, ``bound`` (mean ``L_K`` over the epoch's steps, nats per data
        point, before each step) and ``seconds``.

    Raises:
        ValueError: ``model`` without ``model``/``guide``, bad ``x`` (shape, NaN, support), a
            non-positive ``epochs``, ``num_samples``, ``batch_size`` or ``lr``, a negative
            ``seed``, a guide without trainable parameters, a guide site that is not
            reparameterised, or a guide that shares parameters with ``p(x, h)`` other than
            through a prior's ``encoder``.
        NonFiniteLossError: the bound, the loss or the guide's parameters became NaN or infinite
            (``model`` is untouched).
    """
    check_model(model)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_int("epochs", epochs)
    check_int("num_samples", num_samples)
    check_int("batch_size", batch_size)
    check_positive("lr", lr)
    check_int("seed", seed, 0)
    x = as_model_data(model, x)
    refined = copy.deepcopy(model)
    _unshare_priors(refined)
    trainable = {id(p) for p in refined.parameters() if p.requires_grad}  # the caller's choice
    for p in refined.parameters():
        p.requires_grad_(True)
    history = []
    with evaluation_context(refined, seed, no_grad=False):
        guide_params = [p for p in _guide_parameters(refined, x) if id(p) in trainable]
        if not guide_params:
            raise ValueError("model's guide has no trainable parameters to refine")
        for p in refined.parameters():
            p.requires_grad_(False)
        for p in guide_params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(guide_params, lr=lr)
        n = x.shape[0]
        for epoch in range(1, epochs + 1):
            t0, total = time.perf_counter(), 0.0
            order = torch.randperm(n, device=x.device)
            with progress_bar(n, f"refining the guide, epoch {epoch}/{epochs}", progress) as bar:
                for start in range(0, n, batch_size):
                    xb = x[order[start : start + batch_size]]
                    loss, bound = _dreg_loss(refined, xb, num_samples)
                    where = f"in epoch {epoch} at data point {start}; the model is untouched"
                    if not (torch.isfinite(bound).all() and torch.isfinite(loss)):
                        raise NonFiniteLossError(
                            f"the importance-weighted bound became non-finite {where}"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if not all(torch.isfinite(p).all() for p in guide_params):
                        raise NonFiniteLossError(
                            f"the guide's parameters became non-finite {where} (try a smaller lr)"
                        )
                    total += float(bound.sum())
                    bar.update(xb.shape[0])
            history.append(
                {"epoch": epoch, "bound": total / n, "seconds": time.perf_counter() - t0}
            )
    for p in refined.parameters():
        p.requires_grad_(False)
    return refined.eval(), history
