"""The documentation: every public name has a docstring and a place in the API reference, and the
README stays short and keeps the two commands.

The API reference (``docs/reference/``) is rendered by mkdocstrings from its ``::: identifier``
directives: a directive of a module renders the names of the module's ``__all__`` (``filters:
public`` in ``mkdocs.yml``) that have a docstring -- a class or function its own, a constant an
attribute docstring or a comment that ``docs/griffe_sphinx_roles.py`` takes for one -- unless its
options say ``members: false``; a directive of any other object renders that object. A public
name is covered when a directive renders that very object under that name. Nothing here builds
the site (``mkdocs build --strict`` does) or needs mkdocs installed.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import pkgutil
import re
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import pyrovamp

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

# pyrovamp and its subpackages and top-level modules: the public API (each one's ``__all__``)
PACKAGES = ["pyrovamp"] + [
    f"pyrovamp.{m.name}" for m in pkgutil.iter_modules(pyrovamp.__path__) if m.name[0] != "_"
]
# every module whose path has no private part: each has its section in the reference
MODULES = ["pyrovamp"] + [
    m.name
    for m in pkgutil.walk_packages(pyrovamp.__path__, "pyrovamp.")
    if not any(part.startswith("_") for part in m.name.split("."))
]

PRAGMAS = ("# fmt:", "# noqa", "# type:", "# pragma")  # comments that document nothing

TWO_COMMANDS = [
    "pip install -e . && pyrovamp train",
    'pip install -e ".[dev]" && pytest',
]


@dataclass(frozen=True)
class Directive:
    page: str
    identifier: str
    members: tuple[str, ...] | None  # None: the module's public names (its __all__)


def _members_option(options: list[str]) -> tuple[str, ...] | None:
    for i, line in enumerate(options):
        key, _, value = line.partition(":")
        if key.strip() != "members":
            continue
        value = value.strip()
        if value in ("false", "no", "[]"):
            return ()
        if value.startswith("["):
            return tuple(v.strip() for v in value.strip("[]").split(",") if v.strip())
        if not value:  # a YAML block list on the following lines
            return tuple(o.lstrip("- ").strip() for o in options[i + 1 :] if o.startswith("- "))
    return None


@cache
def directives() -> tuple[Directive, ...]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = re.fullmatch(r":::\s+([\w.]+)\s*", line)
            if not match:
                continue
            options = []
            for following in lines[i + 1 :]:
                if not following.startswith("    "):
                    break
                options.append(following.strip())
            found.append(Directive(str(page.relative_to(ROOT)), match[1], _members_option(options)))
    return tuple(found)


def resolve(identifier: str) -> Any:
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            value: Any = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name and not module.startswith(error.name):
                raise  # a module that exists and imports something missing
            continue
        for name in parts[cut:]:
            value = getattr(value, name)
        return value
    raise ModuleNotFoundError(identifier)


def _is_code(value: Any) -> bool:
    return inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value)


def own_docstring(value: Any) -> str:
    doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
    return (doc or "").strip()


@cache
def _module_source(module: str) -> tuple[ast.Module, list[str]]:
    text = Path(importlib.import_module(module).__file__).read_text(encoding="utf-8")
    return ast.parse(text), text.splitlines()


def constant_has_docs(module: str, name: str) -> bool:
    """Whether ``module`` documents its constant ``name`` as the reference reads it: a string
    right after the assignment, comment lines right above it, or a comment on its first line;
    for a name the module imports, the module it comes from."""
    tree, lines = _module_source(module)
    for i, node in enumerate(tree.body):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if any((alias.asname or alias.name) == name for alias in node.names):
                original = next(a.name for a in node.names if (a.asname or a.name) == name)
                return constant_has_docs(node.module, original)
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        if name not in targets:
            continue
        following = tree.body[i + 1] if i + 1 < len(tree.body) else None
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            return True
        above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
        if above.startswith("#") and not above.startswith(PRAGMAS):
            return True
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(lines[node.lineno - 1]).readline))
        except (tokenize.TokenError, SyntaxError):
            tokens = []
        return any(t.type == tokenize.COMMENT and not t.string.startswith(PRAGMAS) for t in tokens)
    return False


def _static_all(module: str) -> list[str] | None:
    """The module's ``__all__`` as a literal list of strings (what griffe reads), else None."""
    tree, _ = _module_source(module)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return list(value) if all(isinstance(v, str) for v in value) else None
    return None


def rendered(directive: Directive) -> list[tuple[str, Any]]:
    """The (name, object) pairs the directive renders (see the module's docstring)."""
    value = resolve(directive.identifier)
    found = [(directive.identifier.rsplit(".", 1)[-1], value)]
    if not inspect.ismodule(value) or directive.members == ():
        return found
    names = directive.members if directive.members is not None else value.__all__
    for name in names:
        member = getattr(value, name)
        if directive.members is not None or (
            own_docstring(member) if _is_code(member) else constant_has_docs(value.__name__, name)
        ):
            found.append((name, member))
    return found


@cache
def covered() -> tuple[tuple[str, Any], ...]:
    return tuple(pair for directive in directives() for pair in rendered(directive))


def test_every_directive_resolves():
    assert directives(), "no ::: directive under docs/"
    for directive in directives():
        try:
            resolve(directive.identifier)
        except (ModuleNotFoundError, AttributeError) as error:
            pytest.fail(f"{directive.page}: ::: {directive.identifier} does not resolve: {error}")


def test_module_directives_read_all_as_griffe_does():
    """A module rendered by its ``__all__`` declares it as a literal list (griffe reads the
    source), and that list is the one Python sees."""
    for directive in directives():
        value = resolve(directive.identifier)
        if inspect.ismodule(value) and directive.members is None:
            assert _static_all(value.__name__) == list(value.__all__), (
                f"{directive.page}: ::: {directive.identifier} renders its __all__, which is "
                "not a literal list of strings (griffe would not see the same names)"
            )


def test_every_public_module_is_in_the_reference():
    identifiers = {d.identifier for d in directives()}
    missing = [module for module in MODULES if module not in identifiers]
    assert not missing, f"public modules without a ::: directive in docs/reference: {missing}"


@pytest.mark.parametrize("module", MODULES)
def test_public_module_and_its_classes_and_functions_have_docstrings(module):
    value = importlib.import_module(module)
    assert own_docstring(value), f"{module} has no module docstring"
    undocumented = [
        name
        for name in value.__all__
        if _is_code(getattr(value, name)) and not own_docstring(getattr(value, name))
    ]
    # constants (data) need no docstring: the reference shows their value, and a docstring, or
    # a comment on the assignment, where there is one
    assert not undocumented, f"{module}: public names without a docstring: {undocumented}"


@pytest.mark.parametrize("module", MODULES)
def test_public_constants_are_assigned_one_by_one(module):
    """griffe (the reference) does not see a name assigned by unpacking (``A, B = 1, 2``)."""
    tree, _ = _module_source(module)
    public = set(importlib.import_module(module).__all__)
    unpacked = [
        element.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Tuple)
        for element in target.elts
        if isinstance(element, ast.Name) and element.id in public
    ]
    assert not unpacked, f"{module}: public names assigned by unpacking: {unpacked}"


@pytest.mark.parametrize("module", MODULES)
def test_every_public_name_is_in_the_reference(module):
    """``pyrovamp.__all__``, each subpackage's and each public module's ``__all__``."""
    value = importlib.import_module(module)
    pairs = covered()
    missing = [
        name
        for name in value.__all__
        if not any(n == name and obj is getattr(value, name) for n, obj in pairs)
    ]
    assert not missing, (
        f"{module}: public names the API reference does not render: {missing} (add the module's "
        "::: directive, a docstring, or a ::: directive of the name to docs/reference/)"
    )


def test_the_packages_are_checked():
    assert {"pyrovamp.data", "pyrovamp.training", "pyrovamp.cli", "pyrovamp.errors"} <= set(
        PACKAGES
    )
    assert set(PACKAGES) <= set(MODULES)


def test_readme_is_short_and_keeps_the_two_commands():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines (at most 200)"
    section = text.split("## The two commands", 1)
    assert len(section) == 2, "README.md lost its section '## The two commands'"
    block = re.search(r"```bash\n(.*?)```", section[1], re.DOTALL)
    assert block, "no code block in '## The two commands'"
    commands = [line for line in block[1].splitlines() if line and not line.startswith("#")]
    assert commands == TWO_COMMANDS


def test_readme_links_point_to_files():
    """The README's relative links (to the site's pages, which GitHub shows too) resolve."""
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links to no page of the documentation"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
