"""The prior contract: :class:`Prior`, the base class whose call returns a Pyro distribution
over one latent vector, and the support every prior declares (:data:`REAL_VECTOR`)."""

from __future__ import annotations

import abc
import sys
from contextlib import contextmanager

import pyro
import pyro.distributions as dist
import pyro.poutine.runtime
import pyro.primitives
import torch
from pyro.util import ignore_jit_warnings
from torch import nn
from torch.distributions import constraints
from torch.distributions.constraints import MixtureSameFamilyConstraint

from pyrovamp._validate import check_int, check_type
from pyrovamp.errors import ArgumentTypeError
from pyrovamp.registration import RegisteredModule

__all__ = ["Prior", "REAL_VECTOR", "mixing_logits", "check_latent"]

REAL_VECTOR = constraints.independent(constraints.real, 1)
"""The support every prior declares: vectors in R^L."""


def _is_real_vector(support) -> bool:
    return (
        isinstance(support, constraints.independent)
        and support.base_constraint is constraints.real
        and support.reinterpreted_batch_ndims == 1
    )


def check_latent(value, latent_dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``value`` as the ``(..., L)`` latent vectors a prior's ``log_prob`` scores: a tensor whose
    last dimension is ``latent_dim`` (a ``(..., 1)`` tensor would otherwise broadcast unseen),
    integer or bool values as ``dtype``, the prior's float type (as ``Normal.log_prob`` promotes
    them; computed in their own type they came back truncated), and floating values in the wider
    of their type and ``dtype`` (a float32 ``z`` on a float64 prior is scored in float64).

    Raises:
        pyrovamp.errors.ArgumentTypeError: ``value`` not a tensor (a distribution: the value
            ``pyro.sample("z", prior)`` draws from the prior module itself, where
            ``pyro.sample("z", prior())`` is meant -- said so).
        ValueError: ``value`` without a last dimension of size ``latent_dim``.
    """
    if isinstance(value, torch.distributions.Distribution):
        raise ArgumentTypeError(
            f"value must be a tensor of shape (..., {latent_dim}), got a {type(value).__name__}: "
            'a prior goes into pyro.sample called, pyro.sample("z", prior()), not as the module'
        )
    check_type("value", value, torch.Tensor, f"a tensor of shape (..., {latent_dim})")
    with ignore_jit_warnings():  # under JitTrace_ELBO the shape is traced: a static check
        wrong = bool(value.dim() < 1 or value.shape[-1] != latent_dim)
    if wrong:
        raise ValueError(
            f"value must have last dimension {latent_dim}, got shape {tuple(value.shape)}"
        )
    if not (value.is_floating_point() or value.is_complex()):
        value = value.to(dtype)
    elif value.is_floating_point() and dtype.is_floating_point:  # as torch promotes: float32
        value = value.to(torch.promote_types(value.dtype, dtype))  # z on a float64 prior: float64
    return value


_REAL_SUPPORT_CLASSES: dict = {}


def _with_real_support(d: dist.TorchDistribution) -> dist.TorchDistribution:
    """``d`` itself if it declares ``support == independent(real, 1)``; else ``d`` with that
    support declared (a subclass of its own class; kept by ``expand``). Only distributions that
    declare no support, or a mixture of real vectors (torch's ``MixtureSameFamilyConstraint``,
    which ``biject_to`` cannot handle), are changed; any other support is left alone."""
    try:
        support = d.support
    except NotImplementedError:
        support = None
    if _is_real_vector(support):
        return d
    if support is not None and not (
        isinstance(support, MixtureSameFamilyConstraint)
        and _is_real_vector(support.base_constraint)
    ):
        return d
    cls = type(d)
    if cls not in _REAL_SUPPORT_CLASSES:

        def expand(self, *args, **kwargs):
            return _with_real_support(super(new_cls, self).expand(*args, **kwargs))

        new_cls = type(
            cls.__name__,
            (cls,),
            {
                "support": REAL_VECTOR,
                "expand": expand,
                "__module__": cls.__module__,
                "__doc__": f"{cls.__name__} with support ``independent(real, 1)`` declared.",
            },
        )
        _REAL_SUPPORT_CLASSES[cls] = new_cls
    d.__class__ = _REAL_SUPPORT_CLASSES[cls]
    return d


# the code of Pyro that calls a sample site's distribution to draw its value (with handlers,
# and without): the prior module found there was given to pyro.sample uncalled
_PYRO_DRAWS = frozenset(
    (pyro.poutine.runtime.default_process_message.__code__, pyro.primitives.sample.__code__)
)
# what Pyro's handlers, autoguides and initialisations ask of a site's distribution
_DISTRIBUTION_ATTRIBUTES = frozenset(
    (
        "support",
        "batch_shape",
        "event_shape",
        "has_rsample",
        "rsample",
        "has_enumerate_support",
        "enumerate_support",
        "expand",
        "to_event",
        "mask",
        "mean",
        "variance",
    )
)


def _not_a_distribution(prior) -> str:
    return (
        f"{type(prior).__name__} is the module that builds the prior, not a distribution: a "
        'prior goes into pyro.sample called, pyro.sample("z", prior())'
    )


class Prior(RegisteredModule, abc.ABC):
    """Base class of the priors: ``prior()`` returns a fresh Pyro distribution over ``z``.

    Subclasses implement :meth:`distribution`. The base class declares its support
    ``independent(real, 1)`` where the subclass's distribution does not (or inherits torch's
    ``MixtureSameFamilyConstraint``), and registers the prior's parameters with Pyro when the
    distribution is built under a Pyro handler (:mod:`pyrovamp.registration`: a name of this
    instance's own, fresh for copies, so two priors never share parameters). Inside
    ``with prior.cached():`` the distribution is built once and reused -- use it for evaluation
    under ``torch.no_grad()`` so that, e.g., the VampPrior's encoder runs on the pseudo-inputs once
    per evaluation instead of once per chunk.

    Attributes:
        latent_dim: size ``L`` of the latent vector.
        pyro_name: the prefix of its parameters' names in Pyro.
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        check_int("latent_dim", latent_dim)
        self.latent_dim = latent_dim
        self._cache_depth = 0
        self._cache: dist.TorchDistribution | None = None

    @abc.abstractmethod
    def distribution(self) -> dist.TorchDistribution:
        """Build p(z) from the current parameters: batch shape ``()``, event ``(L,)``."""

    def __call__(self, *args, **kwargs) -> dist.TorchDistribution:
        """``prior()``: :meth:`forward` through :class:`torch.nn.Module`'s call (hooks apply).

        Raises:
            pyrovamp.errors.ArgumentTypeError: called by Pyro to draw a site's value -- the
                module itself given to ``pyro.sample("z", prior)``, where ``pyro.sample("z",
                prior())`` is meant (one line saying so, instead of a distribution passed on as
                the site's value).
        """
        if not torch.compiler.is_compiling() and sys._getframe(1).f_code in _PYRO_DRAWS:
            raise ArgumentTypeError(_not_a_distribution(self))
        return super().__call__(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name not in _DISTRIBUTION_ATTRIBUTES:
                raise
            if hasattr(type(self), name):  # a subclass's own property failed inside: its error
                return object.__getattribute__(self, name)
            # asked of the module given as a distribution
            raise AttributeError(f"{_not_a_distribution(self)} (it has no {name!r})") from None

    def forward(self, register: bool = True) -> dist.TorchDistribution:
        """p(z): batch shape ``()``, event shape ``(L,)``, support ``independent(real, 1)``.

        Args:
            register: issue the ``pyro.param`` statements of the prior's parameters (under a Pyro
                handler only). A model that registers the prior as part of itself passes False.
        """
        if register:
            self.register_parameters()
        if self._cache_depth > 0:
            if self._cache is None:
                self._cache = _with_real_support(self.distribution())
            return self._cache
        return _with_real_support(self.distribution())

    def __getstate__(self):
        state = super().__getstate__()
        state["_cache"], state["_cache_depth"] = None, 0  # a copy starts outside cached()
        return state

    @contextmanager
    def cached(self):
        """Context in which ``prior()`` builds its distribution once and returns it again."""
        self._cache_depth += 1
        try:
            yield self
        finally:
            self._cache_depth -= 1
            if self._cache_depth == 0:
                self._cache = None

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` in nats, ``(..., L) -> (...)``."""
        return self(register=False).log_prob(z)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Draw ``sample_shape + (L,)`` latent vectors."""
        return self(register=False).sample(torch.Size(sample_shape))


def mixing_logits(module: nn.Module, k: int, learn: bool) -> None:
    """Give ``module`` its mixing logits ``(K,)``: a parameter when learned, else a zero buffer
    (uniform weights ``1/K``)."""
    if learn:
        module.logits = nn.Parameter(torch.zeros(k))
    else:
        module.register_buffer("logits", torch.zeros(k))
