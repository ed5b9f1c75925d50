"""How pyrovamp's modules show their parameters to Pyro (the one place that describes it).

Every model (:class:`~pyrovamp.models.VAE`, ...) and every prior (:class:`~pyrovamp.priors.Prior`)
is a :class:`RegisteredModule`: a ``torch.nn.Module`` that owns its parameters, with a name of
its own, ``module.pyro_name`` (``"pyrovamp.VAE.3"``), fresh for every instance -- also for a
``copy.deepcopy`` or an unpickled copy, which therefore never shares parameters with the original.
Whenever a model's ``model``/``guide`` runs, or a prior's distribution is built, under a Pyro
handler (``SVI``, an ELBO's ``differentiable_loss``, ``poutine.trace``, ``Predictive``, MCMC, an
autoguide), :meth:`RegisteredModule.register_parameters` issues one ``pyro.param`` statement per
trainable parameter, named ``pyro_name + "$$$" + parameter name`` as ``pyro.module`` does.

The module is the source of truth; Pyro's parameter store only mirrors it:

* with Pyro's default setting ``pyro.settings.get("module_local_params") == False`` the statements
  go through the global parameter store. If the store holds another tensor under one of the
  module's names (a stale entry, e.g. after ``load_state_dict(..., assign=True)``), the store's
  entry is replaced by the module's own tensor -- the module's parameters are never replaced by
  the store's. So ``SVI`` with ``pyro.optim`` trains the module's own parameters;
* with ``pyro.settings.set(module_local_params=True)`` (Pyro's recommendation when training with
  ``torch.optim`` and the ELBO's ``differentiable_loss``/``ELBOModule``, as in Pyro's
  ``examples/svi_lightning.py``) the global store is not touched: the ``param`` statements return
  the module's own tensors to whatever handler records them, as ``PyroModule`` does in that mode.
  ``SVI`` with ``pyro.optim`` still works (its optimisers are keyed by tensor).

Registering a module with Pyro's own ``pyro.module("prior", prior)`` (as Pyro users register any
``nn.Module``) is harmless, under every ELBO, ``JitTrace_ELBO`` included: a parameter that the
global store already holds under another name (``"prior$$$means"``) is issued under that name, not
under a second one -- one tensor under two names is what Pyro's JIT refuses (a bare
``AssertionError`` in ``pyro.ops.jit``), as it does for any ``nn.Module`` registered twice. Call
``pyro.module`` before the module's first use in the model *and* in the guide (as Pyro's examples
do): a ``pyro.module`` call after the module's own statements in the same run gives its tensors a
second name. In module-local mode the parameters given by ``pyro.module`` are global ones, so they
are issued as such; ``JitTrace_ELBO`` needs global parameters (it reads them back from the global
store), so under module-local mode it works for modules registered with ``pyro.module`` only, as
for Pyro's own ``PyroModule``.

Either way, training with a ``torch.optim`` optimiser over ``module.parameters()`` and a loss from
``pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)`` updates exactly the
module's parameters; pyrovamp changes no Pyro setting itself. State lives in ``state_dict()``;
``pyro.get_param_store().load(...)`` does not set a module's parameters.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref

import pyro
import pyro.nn  # noqa: F401  (registers the "module_local_params" setting)
from pyro.params.param_store import param_with_module_name
from pyro.poutine.runtime import am_i_wrapped, effectful
from torch import nn
from torch.distributions import constraints

from pyrovamp._rebuild import Rebuildable

__all__ = ["RegisteredModule", "paused"]

_counter = itertools.count()
_paused = 0


@contextlib.contextmanager
def paused():
    """Inside, :meth:`RegisteredModule.register_parameters` issues no statements (evaluation:
    nothing is trained there, and each chunk saves the cost of the statements)."""
    global _paused
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1


def _fresh_name(module) -> str:
    return f"pyrovamp.{type(module).__name__}.{next(_counter)}"


def _local_param(name, value, constraint=constraints.real, event_dim=None):
    """Stands in for the parameter store in module-local mode: returns the module's tensor."""
    return value


_local_param_statement = effectful(_local_param, type="param")


def _name_in_store(store, p, own: str) -> str | None:
    """The name other than ``own`` under which the global store holds the tensor ``p`` itself
    (given by ``pyro.module``/``pyro.param``), or None."""
    name = store.param_name(p)
    if name is None or name == own or name not in store:
        return None
    return name if store[name] is p else None


class RegisteredModule(nn.Module, Rebuildable):
    """An ``nn.Module`` whose parameters Pyro sees under a name of this instance's own.

    See the module docstring for the rules (global and module-local parameter modes). Every
    instance also records its constructor's arguments (``pyrovamp._rebuild.Rebuildable``), so
    a model can be saved and rebuilt (:func:`pyrovamp.from_pretrained`).

    Attributes:
        pyro_name: this instance's name prefix in Pyro (fresh for every instance and copy).
    """

    def __init__(self):
        super().__init__()
        self.pyro_name = _fresh_name(self)

    def register_parameters(self) -> None:
        """Issue a ``pyro.param`` statement for every trainable parameter (see module docstring);
        does nothing outside Pyro handlers and inside :func:`paused`."""
        if _paused or not am_i_wrapped():
            return
        local = pyro.settings.get("module_local_params")
        store = pyro.get_param_store()
        for pname, p in self.named_parameters():
            if not p.requires_grad:
                continue
            full = param_with_module_name(self.pyro_name, pname)
            given = _name_in_store(store, p, full)
            if given is not None:  # registered by the user (pyro.module): one name per tensor
                pyro.param(given, p)
                continue
            if local:
                setattr(p, "unconstrained", weakref.ref(p))  # what SVI reads back from a param site
                _local_param_statement(
                    full, p, constraint=constraints.real, event_dim=None, name=full
                )
                continue
            if full not in store or store[full] is not p:
                store[full] = p  # the module's tensor, never the other way round
            pyro.param(full, p)

    def __getstate__(self):
        # Pyro leaves a weakref (``.unconstrained``) on registered tensors: not picklable
        for p in self.parameters():
            p.__dict__.pop("unconstrained", None)
        state = super().__getstate__()
        state.pop("pyro_name", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.pyro_name = _fresh_name(self)  # a copy is a new module: a new name
