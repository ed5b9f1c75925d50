"""Modules that can be rebuilt from JSON: each records the arguments it was constructed with.

A pretrained model's ``config.json`` (:mod:`pyrovamp.pretrained`) holds everything needed to build
the model again before its weights are loaded: the class and the constructor arguments of the
model and of every module it was given (a prior module, the VampPrior's encoder as a reference to
the model's own). :class:`Rebuildable` records them when an instance is constructed --
``RegisteredModule``, the base of every pyrovamp model and prior, is one, and so is any subclass a
user writes (``class MyPrior(pv.priors.Prior)``) -- :func:`module_config` turns them into JSON and
:func:`build_from_config` builds a new instance from it (fresh parameters: load the weights after).

The JSON form of an argument: a number, string, bool or null as itself; a tuple as
``{"$tuple": [...]}``; a list or a dict of JSON forms; a rebuildable module as
``{"$module": {"class": ..., "arguments": {...}}}``; a module that the model being saved holds
elsewhere as ``{"$ref": "path.in.the.model"}`` (the VampPrior's encoder is the model's encoder, not
a copy). A class may name arguments to be set to a stand-in when rebuilt
(``_rebuild_arguments``, e.g. the VampPrior's training-data initialisation, whose tensor is
replaced by ``"random"``: the weights overwrite the pseudo-inputs anyway) and children to be
rebuilt after it and assigned (``_rebuild_children``, e.g. a model's ``prior``, which may be built
on the model's own encoder and may have been assigned after construction).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import sys
from typing import Any

import numpy as np
from torch import nn

__all__ = ["Rebuildable", "module_config", "build_from_config", "class_path"]

_ARGS = "_constructor_arguments"


def class_path(cls: type) -> str:
    """``"package.module.Class"``: where :func:`build_from_config` imports ``cls`` from."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Rebuildable:
    """Mixin for ``nn.Module`` classes: every instance records its constructor's arguments
    (the outermost ``__init__`` of its class, defaults included) for :func:`module_config`.

    Class attributes a subclass may set:
        _rebuild_arguments: ``{argument: stand-in}`` -- arguments stored as the stand-in (a
            tensor of training data used only to initialise parameters).
        _rebuild_children: ``{attribute: stand-in argument}`` -- children saved with their own
            configuration and assigned after the module is rebuilt with the stand-in.
    """

    _rebuild_arguments: dict[str, Any] = {}
    _rebuild_children: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self, *args, **kw):
            if _ARGS not in self.__dict__:  # the outermost constructor: the instance's class
                try:
                    bound = signature.bind(self, *args, **kw)
                except TypeError:
                    bound = None
                if bound is None:  # the constructor's own error, naming its class, unchained
                    return init(self, *args, **kw)
                bound.apply_defaults()
                arguments: dict[str, Any] = {}
                for i, (name, value) in enumerate(bound.arguments.items()):
                    kind = signature.parameters[name].kind
                    if i == 0:
                        continue  # self
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        arguments.update(value)
                    elif kind is inspect.Parameter.VAR_POSITIONAL:
                        if value:  # refused by module_config: only named arguments are stored
                            arguments[f"*{name}"] = value
                    elif kind is inspect.Parameter.POSITIONAL_ONLY:
                        arguments[f"/{name}"] = value  # passed by position when rebuilt
                    else:
                        arguments[name] = value
                for name, stand_in in type(self)._rebuild_arguments.items():
                    if name in arguments:
                        arguments[name] = stand_in
                object.__setattr__(self, _ARGS, arguments)
            init(self, *args, **kw)

        cls.__init__ = __init__


def _module_paths(root: nn.Module) -> dict[int, str]:
    """``id(module) -> its shortest path in root`` for every submodule of ``root``."""
    paths: dict[int, str] = {}
    for path, m in root.named_modules(remove_duplicate=False):
        if path and (id(m) not in paths or len(path) < len(paths[id(m)])):
            paths[id(m)] = path
    return paths


def _encode(value, where: str, own: str, paths: dict[int, str]):
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}: not storable in config.json")
        return value
    if isinstance(value, np.generic):
        return _encode(value.item(), where, own, paths)
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, f"{where}[{i}]", own, paths) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]", own, paths) for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        if any(k.startswith("$") for k in value):
            raise ValueError(f"{where}: a dict key starting with '$' cannot be stored")
        return {k: _encode(v, f"{where}[{k!r}]", own, paths) for k, v in value.items()}
    if isinstance(value, nn.Module):
        path = paths.get(id(value))
        inside = not own or path == own or (path or "").startswith(own + ".")
        if path is not None and not inside:
            return {"$ref": path}
        if isinstance(value, Rebuildable):
            return {"$module": _config(value, path or own, paths)}
        raise ValueError(
            f"{where} is a {class_path(type(value))}, a module that does not record its "
            "constructor arguments: pyrovamp cannot rebuild it (derive it from "
            "pyrovamp.nn.Network instead of torch.nn.Module, in an importable module)"
        )
    raise ValueError(
        f"{where} is a {type(value).__name__}, which config.json cannot hold (numbers, "
        "strings, tuples, lists, dicts and rebuildable modules can be stored)"
    )


def _config(module: Rebuildable, own: str, paths: dict[int, str]) -> dict:
    cls = type(module)
    arguments = module.__dict__.get(_ARGS)
    if arguments is None:
        raise ValueError(f"{class_path(cls)} was built without recording its arguments")
    name = class_path(cls)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise ValueError(
            f"{name} is defined in a script or a function: another process cannot import it "
            "to rebuild the model (define it in an importable module)"
        )
    star = [k for k in arguments if k.startswith("*")]  # "/name": positional-only, stored
    if star:
        raise ValueError(f"{name} was given extra positional arguments ({star[0]}): not storable")
    args = dict(arguments)
    children = {}
    for attr, stand_in in cls._rebuild_children.items():
        child = getattr(module, attr, None)
        if child is not None:
            if attr in args:  # a constructor without the argument builds its own child
                args[attr] = stand_in
            path = f"{own}.{attr}" if own else attr
            children[attr] = _encode(child, f"{name}.{attr}", path, paths)
    out = {
        "class": name,
        "arguments": {k: _encode(v, f"{name} argument {k!r}", own, paths) for k, v in args.items()},
    }
    if children:
        out["children"] = children
    return out


def module_config(module: nn.Module) -> dict:
    """The JSON-ready configuration of ``module``: ``{"class", "arguments"[, "children"]}``.

    Raises:
        ValueError: ``module`` (or a module among its arguments) does not record its arguments,
            or an argument is something JSON cannot hold (a function, a tensor without a
            stand-in) -- one line naming the class and the argument.
    """
    if not isinstance(module, Rebuildable):
        raise ValueError(
            f"{class_path(type(module))} does not record its constructor arguments: "
            "pyrovamp cannot rebuild it"
        )
    return _config(module, "", _module_paths(module))


def _import_class(name: str) -> type:
    """The class ``name`` from pyrovamp or from a module the user has already imported: a
    configuration from elsewhere (the Hub) never imports a module of its choosing."""
    module_name, _, qualname = name.rpartition(".")
    cls: Any = None
    while module_name:
        if module_name in sys.modules:
            cls = sys.modules[module_name]
            break
        if module_name == "pyrovamp" or module_name.startswith("pyrovamp."):
            try:
                cls = importlib.import_module(module_name)
                break
            except ImportError:
                pass
        module_name, _, head = module_name.rpartition(".")
        qualname = f"{head}.{qualname}"
    if cls is None:
        raise ValueError(
            f"class {name!r} is not pyrovamp's and its module is not imported: import it first"
        )
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and issubclass(cls, Rebuildable) and issubclass(cls, nn.Module)):
        raise ValueError(f"{name!r} is not a rebuildable pyrovamp module class")
    return cls


def _decode(value, root: nn.Module | None):
    if isinstance(value, list):
        return [_decode(v, root) for v in value]
    if isinstance(value, dict):
        if "$tuple" in value:
            return tuple(_decode(v, root) for v in value["$tuple"])
        if "$ref" in value:
            if root is None:
                raise ValueError(f"reference {value['$ref']!r} outside a module")
            return root.get_submodule(value["$ref"])
        if "$module" in value:
            return _build(value["$module"], root)
        return {k: _decode(v, root) for k, v in value.items()}
    return value


def _build(config: dict, root: nn.Module | None) -> nn.Module:
    if not isinstance(config, dict) or not isinstance(config.get("class"), str):
        raise ValueError("a module configuration must be an object with a 'class' name")
    cls = _import_class(config["class"])
    arguments = config.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise ValueError(f"the arguments of {config['class']} must be an object")
    decoded = {k: _decode(v, root) for k, v in arguments.items()}
    positional = [decoded.pop(k) for k in list(decoded) if k.startswith("/")]
    module = cls(*positional, **decoded)
    for attr, child in (config.get("children") or {}).items():
        setattr(module, attr, _decode(child, root if root is not None else module))
    return module


def build_from_config(config: dict) -> nn.Module:
    """A new module (fresh parameters) of the class and arguments in ``config``, as written by
    :func:`module_config`.

    Only classes derived from :class:`Rebuildable` and ``nn.Module`` are built (a foreign
    configuration cannot call arbitrary functions).

    Raises:
        ValueError: a malformed configuration, a class that cannot be imported or is not a
            rebuildable module; as the class's constructor.
    """
    return _build(config, None)
