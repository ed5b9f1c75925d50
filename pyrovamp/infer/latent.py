"""The latent sites of a Pyro model/guide pair as one flat vector per data point.

Shared by :mod:`pyrovamp.infer.exact` (quadrature) and :mod:`pyrovamp.infer.ais` (annealed
importance sampling). Both need, for any object with Pyro ``model(x)`` and ``guide(x)``
methods whose sites sit in one ``pyro.plate`` over data points at ``dim=-1``:

* the latent sites, their sizes and supports (:func:`latent_space`);
* ``log p(x, z)`` and ``log q(z|x)`` at given latent values, batched over a leading dimension
  (grid points or chains) and the data points (:meth:`LatentSpace.log_joint`,
  :meth:`LatentSpace.log_guide`);
* draws from the prior and the guide (:meth:`LatentSpace.sample`).

All latent sites are concatenated, in the model's order, into one unconstrained vector ``u`` of
size ``d`` per data point; a site with a constrained support is mapped through
``biject_to(support)`` and the log-Jacobian of that map is added to every density in ``u``
space, so integrals and Markov chains in ``u`` are those of ``z``. The densities are the sites'
unscaled log-densities (:func:`pyrovamp.infer.weights.site_log_prob`): a subsampled plate's or a
``poutine.scale``'s factor does not change a log-likelihood.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.transforms import biject_to
from pyro.poutine.util import site_is_subsample
from torch.distributions.constraints import MixtureSameFamilyConstraint

from pyrovamp.infer.context import check_model
from pyrovamp.infer.weights import site_log_prob

__all__ = ["LatentSpace", "latent_space", "probe_latent_space"]

_BATCH_PLATE = "_pyrovamp_batch"


def _is_real(support) -> bool:
    """Whether ``support`` is the real line (or R^n), also as torch's support of a mixture of
    real-valued components."""
    while isinstance(support, (constraints.independent, MixtureSameFamilyConstraint)):
        support = support.base_constraint
    return support is constraints.real


class LatentSpace:
    """The latent sites of ``model.model`` as one unconstrained vector of size ``dim``.

    Attributes:
        model: the object with Pyro ``model(x)`` / ``guide(x)``.
        sites: list of ``(name, event_shape, size, transform)``; ``transform`` maps the
            unconstrained coordinates to the site's support (``None``: the identity).
        observed: names of the observed sites.
        dim: total size ``d`` of the latent vector per data point.
        probe_points: the number of data points the model was traced on (1, or a block for a
            model whose plate has a constant ``subsample_size``).
    """

    def __init__(self, model, sites, observed, probe_points: int = 1):
        self.model = model
        self.probe_points = probe_points
        self.sites = sites
        self.observed = observed
        self.dim = sum(s[2] for s in sites)

    @property
    def names(self):
        return [s[0] for s in self.sites]

    def describe(self) -> str:
        return ", ".join(f"{n}: {tuple(e)}" for n, e, _, _ in self.sites)

    # --- flat unconstrained vector <-> site values ---------------------------------------------
    def unflatten(self, u):
        """``u`` of shape ``(..., d)`` -> ``({site: value (..., *event_shape)}, log|J| (...))``."""
        values, log_det, off = {}, 0.0, 0
        for name, event_shape, size, transform in self.sites:
            v = u[..., off : off + size].reshape(u.shape[:-1] + tuple(event_shape))
            off += size
            if transform is not None:
                z = transform(v)
                ld = transform.log_abs_det_jacobian(v, z)
                ld = (
                    ld.reshape(ld.shape[: u.dim() - 1] + (-1,)).sum(-1)
                    if ld.dim() >= u.dim()
                    else ld
                )
                log_det = log_det + ld
                v = z
            values[name] = v
        return values, log_det

    def flatten(self, values):
        """``{site: value (..., *event_shape)}`` (constrained) -> ``u`` of shape ``(..., d)``."""
        parts = []
        for name, event_shape, size, transform in self.sites:
            v = values[name]
            if transform is not None:
                v = transform.inv(v)
            parts.append(v.reshape(v.shape[: v.dim() - len(event_shape)] + (size,)))
        return torch.cat(parts, -1)

    # --- densities at given latent values -------------------------------------------------------
    def _score(self, fn, x, values, batch):
        with pyro.plate(_BATCH_PLATE, batch, dim=-2):
            return poutine.trace(poutine.condition(fn, data=values)).get_trace(x)

    def log_joint(self, x, u):
        """``log p(z)`` and ``log p(x|z)`` at ``u``: two ``(B, N)`` tensors, nats.

        ``u`` has shape ``(B, N, d)`` or ``(B, 1, d)`` (one latent vector shared by all data
        points; the model must then broadcast, see :meth:`broadcasts`). The log-Jacobian of the
        support maps is added to the first (latent) term.
        """
        values, log_det = self.unflatten(u)
        trace = self._score(self.model.model, x, values, u.shape[0])
        shape = (u.shape[0], x.shape[0])
        latent, observed = torch.zeros((), dtype=u.dtype, device=u.device), 0.0
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if name in self.observed:
                observed = observed + site_log_prob(name, site)
            elif name in values:
                latent = latent + site_log_prob(name, site)
            else:
                raise ValueError(
                    f"model site {name!r} was not seen when the latent sites were "
                    "traced; the model must have the same sites for every call"
                )
        latent = latent + log_det
        return (
            torch.broadcast_to(latent, shape),
            torch.broadcast_to(torch.as_tensor(observed, device=u.device), shape),
        )

    def log_guide(self, x, u):
        """``log q(z|x)`` at ``u`` (plus the log-Jacobian of the support maps): ``(B, N)``."""
        values, log_det = self.unflatten(u)
        trace = self._score(self.model.guide, x, values, u.shape[0])
        out = log_det
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if name not in values:
                raise ValueError(
                    f"guide site {name!r} is not a latent site of the model "
                    f"({', '.join(self.names)})"
                )
            out = out + site_log_prob(name, site)
        return torch.broadcast_to(out, (u.shape[0], x.shape[0]))

    def guide_density(self, x):
        """``u -> log q(z|x)`` at ``u`` ``(B, N, d)``, the values of :meth:`log_guide`, for one
        data set ``x`` (AIS's many evaluations of the same points). A guide of one latent site
        is run once here and its distribution kept: that distribution depends on ``x`` alone
        (a site's cannot depend on its own value), so the encoder is not run again for every
        ``u``. A guide of several sites (``q(z1|x, z2)``: one site's distribution depends on
        another's value) or with other sample sites is run for every ``u``.

        The returned callable also has ``sample(S)`` (``S`` draws from the guide,
        ``(S, N, d)``, the kept distribution's where there is one) and ``points(index)`` (the
        density of ``x[index]`` alone, ``index`` ``(m,)``: a kept ``Normal`` is indexed, any
        other guide is run on ``x[index]``)."""
        if len(self.sites) == 1:
            name = self.sites[0][0]
            u = torch.zeros((1, x.shape[0], self.dim), dtype=x.dtype, device=x.device)
            with torch.no_grad():
                trace = self._score(self.model.guide, x, self.unflatten(u)[0], 1)
            sites = [n for n, s in trace.nodes.items()
                     if s["type"] == "sample" and not site_is_subsample(s)]  # fmt: skip
            if sites == [name]:
                return _SiteDensity(self, x, name, trace.nodes[name])
        return _GuideRuns(self, x)

    def sample(self, x, num_samples, source="guide"):
        """``num_samples`` draws per data point from the guide ``q(z|x)`` or the model's prior
        ``p(z)``, as unconstrained vectors ``(num_samples, N, d)`` (no gradient)."""
        fn = self.model.guide if source == "guide" else self.model.model
        with torch.no_grad(), pyro.plate(_BATCH_PLATE, num_samples, dim=-2):
            trace = poutine.trace(fn).get_trace(x)
        values = {}
        for name, event_shape, _, _ in self.sites:
            if name not in trace.nodes:
                raise ValueError(
                    f"the {source} has no site {name!r}; model and guide must have "
                    "the same latent sites"
                )
            v = trace.nodes[name]["value"]
            values[name] = v.expand((num_samples, x.shape[0]) + tuple(event_shape))
        return self.flatten(values).detach()

    def prior_draws(self, x, num_samples: int) -> torch.Tensor:
        """``num_samples`` draws of the latent vector from the model's prior, ``(S, 1, d)``
        (traced on as few data points as the model accepts: see :func:`probe_latent_space`)."""
        return self.sample(x[: self.probe_points], num_samples, "prior")[:, :1]

    def broadcasts(self, x) -> bool:
        """Whether ``log_joint`` with ``u`` of shape ``(B, 1, d)`` equals the same ``u`` expanded
        to ``(B, N, d)`` (true for models written with broadcasting, as pyrovamp's are)."""
        xs = x[:3]
        try:
            u = self.sample(xs[:1], 2, "prior")  # (2, 1, d)
            with torch.no_grad():
                a = self.log_joint(xs, u)
                b = self.log_joint(xs, u.expand(2, xs.shape[0], self.dim))
        except Exception:  # noqa: BLE001 -- any failure means: do not broadcast
            return False
        return all(
            p.shape == q.shape and bool(torch.allclose(p, q, rtol=1e-5, atol=1e-4))
            for p, q in zip(a, b, strict=True)
        )


class _GuideRuns:
    """``u -> log q(z|x)`` by a run of the guide for every ``u`` (:meth:`LatentSpace.log_guide`)."""

    def __init__(self, space, x):
        self.space, self.x = space, x

    def __call__(self, u):
        return self.space.log_guide(self.x, u)

    def points(self, index):
        """The density of the data points ``x[index]`` (``index`` ``(m,)``, repeats allowed)."""
        return _GuideRuns(self.space, self.x[index])

    def sample(self, num_samples):
        """``num_samples`` draws from the guide, ``(num_samples, N, d)`` (no gradient)."""
        return self.space.sample(self.x, num_samples, "guide")


class _SiteDensity:
    """``u -> log q(z|x)`` from the kept distribution of a guide's only latent site."""

    def __init__(self, space, x, name, site):
        self.space, self.x, self.name, self.site = space, x, name, site

    def __call__(self, u):
        values, log_det = self.space.unflatten(u)
        lp = site_log_prob(self.name, {**self.site, "value": values[self.name]})
        return torch.broadcast_to(log_det + lp, (u.shape[0], self.x.shape[0]))

    def sample(self, num_samples):
        """``num_samples`` draws from the kept distribution, ``(num_samples, N, d)`` (no
        gradient; the guide is not run again)."""
        _, event_shape, _, _ = self.space.sites[0]
        with torch.no_grad():
            v = self.site["fn"].sample((num_samples,))
        n = self.x.shape[0]
        return self.space.flatten({self.name: v.reshape((num_samples, n) + tuple(event_shape))})

    def points(self, index):
        """The density of the data points ``x[index]`` (``index`` ``(m,)``, repeats allowed): the
        kept distribution indexed where it is a (possibly ``Independent``) ``Normal`` without a
        mask, else the guide run again on ``x[index]``."""
        fn = self.site["fn"]
        sub = None if self.site["mask"] is not None else _index_last(fn, index, len(fn.batch_shape))
        if sub is None:
            return self.space.guide_density(self.x[index])
        return _SiteDensity(self.space, self.x[index], self.name, {**self.site, "fn": sub})


def _index_last(fn, index, ndim):
    """A ``Normal`` (inside any ``Independent``) at the entries ``index`` of its batch dimension
    ``ndim - 1`` (counted from the left: the data plate's, of the outermost batch shape);
    ``None`` for any other distribution."""
    if isinstance(fn, torch.distributions.Independent):
        base = _index_last(fn.base_dist, index, ndim)
        return None if base is None else type(fn)(base, fn.reinterpreted_batch_ndims)
    if type(fn) in (torch.distributions.Normal, pyro.distributions.Normal):
        at = (slice(None),) * (ndim - 1) + (index,)
        shape = fn.batch_shape
        return type(fn)(fn.loc.expand(shape)[at], fn.scale.expand(shape)[at], validate_args=False)
    return None


def latent_space(model, x) -> LatentSpace:
    """Trace ``model.model(x)`` once and describe its latent sites.

    Args:
        model: object with Pyro ``model(x)`` and ``guide(x)``.
        x: ``(N, ...)`` data (checked by the caller).

    Raises:
        ValueError: a latent site outside the data plate (batch shape other than ``(N,)``), a
            discrete latent site, or a model without latent sites.
    """
    check_model(model)
    n = x.shape[0]
    with torch.no_grad():
        trace = poutine.trace(model.model).get_trace(x)
    sites, observed = [], set()
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        fn = site["fn"]
        if site["is_observed"]:
            if tuple(fn.batch_shape) != (n,):
                raise ValueError(
                    f"observed site {name!r} has batch shape {tuple(fn.batch_shape)}; every "
                    f"site must sit in one data plate of size {n} at dim=-1, not subsampled"
                )
            observed.add(name)
            continue
        if tuple(fn.batch_shape) != (n,):
            raise ValueError(
                f"latent site {name!r} has batch shape {tuple(fn.batch_shape)}; every "
                f"latent site must sit in one data plate of size {n} at dim=-1"
            )
        support = fn.support
        if support.is_discrete:
            raise ValueError(
                f"latent site {name!r} is discrete; only continuous latents are supported"
            )
        transform = None
        if not _is_real(support):
            try:
                transform = biject_to(support)
            except NotImplementedError:
                raise ValueError(
                    f"latent site {name!r} has support {support}, which cannot be "
                    "mapped to the real line (torch's biject_to has no transform "
                    "for it)"
                ) from None
        event_shape = tuple(fn.event_shape)
        sites.append((name, event_shape, math.prod(event_shape), transform))
    if not sites:
        raise ValueError("the model has no latent sample sites")
    return LatentSpace(model, sites, observed, probe_points=n)


def probe_latent_space(model, x, points: int) -> LatentSpace:
    """:func:`latent_space` traced on one data point, or -- for a model whose data plate needs
    a whole block (``pyro.plate(..., subsample_size=B)`` with a constant ``B``) -- on the first
    block ``x[:points]``.

    Raises:
        ValueError: as :func:`latent_space`, on the first block.
    """
    try:
        return latent_space(model, x[:1])
    except ValueError:
        if min(points, x.shape[0]) <= 1:
            raise
        return latent_space(model, x[:points])
