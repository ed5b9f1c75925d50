"""The package's structure, read from its source with ``ast``: imports flow one way along the
data flow (no cycle, no import of a later stage), few function-local imports and each one
explained, no module over 600 lines, and no private attribute of torch or Lightning in use."""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "pyrovamp"

# the stages in the order data flows through them; a module may import its own subpackage and
# earlier stages only (the floor: cross-cutting helpers that import no other pyrovamp module but
# each other)
FLOOR = {
    "errors",
    "_validate",
    "_lazy",
    "_io",
    "_random",
    "_compat",
    "registration",
    "_arviz",
    "_progress",
    "_version",
    "_rebuild",
    "_blocks",
    "_precision",
    "_card",
}
STAGES = [
    ["data"],
    ["pretrained"],  # save/load of models: the floor and the data sets' names; models use its mixin
    ["nn", "distributions"],
    ["priors"],
    ["models"],
    ["infer"],
    ["training"],
    ["workflow"],
    ["cli"],
    ["__main__"],  # python -m pyrovamp: the command line
]
LAYER = {pkg: i + 1 for i, names in enumerate(STAGES) for pkg in names}
MAX_LOCAL_IMPORTS = 10
MAX_LINES = 600
PRIVATE_ROOTS = ("torch", "lightning", "pytorch_lightning")


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_pkg = MODULES[module].name == "__init__.py"
    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str):
    """``(target, lineno, local)`` for every import of a pyrovamp module in ``module``;
    ``local``: written inside a function."""
    tree = ast.parse(MODULES[module].read_text())
    local_nodes = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
    }
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            # "from pyrovamp.x import y" imports the module pyrovamp.x.y when there is one
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        for t in targets:
            if t == "pyrovamp" or t.startswith("pyrovamp."):
                while t not in MODULES:  # "import pyrovamp.x.y" binds a module; names -> module
                    t = t.rsplit(".", 1)[0]
                yield t, node.lineno, id(node) in local_nodes


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _layer(module: str) -> int | None:
    stage = _stage(module)
    if stage is None:
        return None  # the package's public face imports every stage
    return 0 if stage in FLOOR else LAYER.get(stage)


def test_every_module_belongs_to_a_stage():
    unknown = sorted(m for m in MODULES if m != "pyrovamp" and _layer(m) is None)
    assert not unknown, f"modules outside the stages of the data flow: {unknown}"


def test_imports_flow_one_way_without_cycles():
    graph = {m: set() for m in MODULES}
    against = []
    for m in MODULES:
        for t, line, _ in _imports(m):
            if t == m:
                continue
            graph[m].add(t)
            lm, lt = _layer(m), _layer(t)
            if lm is None:
                continue
            if lt is None:
                against.append(f"{m}:{line} imports the package root")
            elif lt > lm or (lt == lm and lt > 0 and _stage(t) != _stage(m)):
                against.append(f"{m}:{line} imports {t} (a later or parallel stage)")
    assert not against, "\n".join(against)
    # cycles: depth-first search over the module graph
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_function_local_imports_are_few_and_explained():
    found, unexplained = [], []
    for m, path in MODULES.items():
        lines = path.read_text().splitlines()
        for t, line, local in _imports(m):
            if not local:
                continue
            found.append(f"{m}:{line}")
            here, above = lines[line - 1], lines[line - 2] if line >= 2 else ""
            if "#" not in here and not above.strip().startswith("#"):
                unexplained.append(f"{m}:{line} ({t})")
    assert len(set(found)) <= MAX_LOCAL_IMPORTS, (
        f"{len(set(found))} function-local imports: {found}"
    )
    assert not unexplained, f"function-local imports without a comment saying why: {unexplained}"


def test_no_module_is_too_long():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_torch_or_lightning_attribute_is_used():
    """No import from a private module (``torch.utils._pytree``), no ``torch.x._y`` attribute,
    and no class of ours that overrides a private method of a torch or Lightning base class."""
    found = []
    for m, path in MODULES.items():
        tree = ast.parse(path.read_text())
        roots = {}  # local name -> the module path it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    roots[(a.asname or a.name).split(".")[0]] = (
                        a.name if a.asname else a.name.split(".")[0]
                    )
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if node.module.split(".")[0] in PRIVATE_ROOTS:
                    if any(_private(p) for p in node.module.split(".")):
                        found.append(f"{m}:{node.lineno} imports {node.module}")
                    for a in node.names:
                        if _private(a.name):
                            found.append(f"{m}:{node.lineno} imports {node.module}.{a.name}")
                        roots[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "__wrapped__":
                found.append(
                    f"{m}:{node.lineno} unwraps a decorated function ({ast.unparse(node)})"
                )
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                base = node.value
                while isinstance(base, ast.Attribute):
                    base = base.value
                if (
                    isinstance(base, ast.Name)
                    and roots.get(base.id, "").split(".")[0] in PRIVATE_ROOTS
                ):
                    found.append(f"{m}:{node.lineno} uses {ast.unparse(node)}")
    assert not found, "\n".join(found)


def test_no_class_overrides_a_private_method_of_torch_or_lightning():
    found = []
    for m in MODULES:
        if m.startswith("pyrovamp.cli"):
            continue
        module = importlib.import_module(m)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not cls.__module__.startswith("pyrovamp"):
                continue
            for base in cls.__mro__[1:]:
                if base.__module__.split(".")[0] not in PRIVATE_ROOTS:
                    continue
                for name, value in vars(cls).items():
                    written = inspect.isfunction(value) or isinstance(
                        value, (property, staticmethod, classmethod)
                    )  # not a metaclass's entry
                    if written and _private(name) and name in vars(base):
                        found.append(
                            f"{cls.__module__}.{cls.__qualname__}.{name} overrides "
                            f"{base.__module__}.{base.__qualname__}.{name}"
                        )
    assert not found, "\n".join(sorted(set(found)))


@pytest.mark.parametrize("bad", ["import pyrovamp.cli", "from pyrovamp.workflow import runs"])
def test_the_import_check_fails_on_an_import_against_the_flow(tmp_path, monkeypatch, bad):
    """The check itself: a data module importing the command line is reported."""
    fake = dict(MODULES)
    path = tmp_path / "bad.py"
    path.write_text(bad + "\n")
    fake["pyrovamp.data.bad"] = path
    monkeypatch.setattr(sys.modules[__name__], "MODULES", fake)
    with pytest.raises(AssertionError, match="pyrovamp.data.bad"):
        test_imports_flow_one_way_without_cycles()
