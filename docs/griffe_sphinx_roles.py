"""Griffe extension for the API reference: pyrovamp's docstrings in Markdown.

pyrovamp's docstrings are Google-style with Sphinx's cross-reference roles
(``:func:`log_likelihood```, ``:class:`~pyrovamp.training.TrainConfig```, ``:pep:`562```), which
``help()`` and IDEs show as they are. Before mkdocstrings renders them, this extension turns

* each role into an *optional* cross-reference of mkdocs-autorefs: a link where the target is
  rendered somewhere in the reference, else the name in code (no warning, so a role naming a
  private helper does not break ``mkdocs build --strict``);
* ``:pep:`N``` into a link to the PEP;
* a docstring completed at import time (a ``{placeholder}`` line that the module fills in,
  as :mod:`pyrovamp.infer.importance` does for its shared arguments) into the imported
  object's ``__doc__``;
* the comment of a module-level constant without a docstring (the comment lines right above
  it -- only the ``#:`` ones, as Sphinx reads them, where there are any -- or else a comment
  after it on its first line) into its docstring;
* a reStructuredText simple table (rows between ``====  ====`` rules) into a code block, and a
  paragraph ending in ``::`` (a literal block follows) into one ending in ``:``.

Names are resolved in the docstring's own scope, as Sphinx does (``:func:`fit``` in
``pyrovamp.training.runner`` is ``pyrovamp.training.runner.fit``); an alias resolves to the object
it names.
"""

from __future__ import annotations

import importlib
import inspect
import io
import re
import tokenize
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(func|class|mod|meth|attr|data|exc|obj|const):`(~?)([\w.]+)(?:\(\))?`")
PEP = re.compile(r":pep:`(\d+)`")
TABLE_RULE = re.compile(r"^\s*=+(?:\s+=+)+\s*$")
PRAGMAS = ("# fmt:", "# noqa", "# type:", "# pragma")
PLACEHOLDER = re.compile(r"^\s*\{\w+\}\s*$", re.MULTILINE)


class SphinxRoles(griffe.Extension):
    """Rewrite the docstrings of a package once it is loaded (see the module's docstring)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            if obj.is_attribute and obj.docstring is None and obj.parent and obj.parent.is_module:
                comment = _comment(obj)
                if comment:
                    obj.docstring = griffe.Docstring(comment, lineno=obj.lineno, parent=obj)
            if obj.docstring is not None:
                if PLACEHOLDER.search(obj.docstring.value):
                    obj.docstring.value = _runtime_docstring(obj)
                obj.docstring.value = _markdown(obj.docstring.value, obj, loader)


def _objects(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_objects(member))  # type: ignore[arg-type]
    return found


def _comment(obj: griffe.Object) -> str:
    """The comment lines right above ``obj``'s assignment (only the ``#:`` ones if there are
    any), else the comment on its first line."""
    lines = obj.lines_collection[obj.filepath]  # type: ignore[index]
    first = obj.lineno - 1  # type: ignore[operator]
    above: list[str] = []
    for line in reversed(lines[:first]):
        stripped = line.strip()
        if not stripped.startswith("#") or stripped.startswith(PRAGMAS):
            break
        above.insert(0, stripped)
    sphinx = [line[2:].strip() for line in above if line.startswith("#:")]
    if above:
        return " ".join(sphinx or [line.lstrip("#").strip() for line in above])
    tokens = tokenize.generate_tokens(io.StringIO(lines[first] + "\n").readline)
    try:
        comments = [t.string for t in tokens if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):  # a statement continued on the next lines
        comments = []
    comments = [c for c in comments if not c.startswith(PRAGMAS)]
    return comments[0].lstrip("#").strip() if comments else ""


def _runtime_docstring(obj: griffe.Object) -> str:
    value: Any = importlib.import_module(obj.module.path)
    for name in obj.path[len(obj.module.path) + 1 :].split("."):
        value = getattr(value, name)
    return inspect.cleandoc(value.__doc__)


def _target(name: str, scope: griffe.Object, loader: griffe.GriffeLoader) -> str:
    head, _, rest = name.partition(".")
    try:
        path = scope.resolve(head) + (f".{rest}" if rest else "")
    except griffe.NameResolutionError:
        path = name
    try:
        return loader.modules_collection.get_member(path).final_target.path
    except Exception:  # not loaded, a lazy name, an unresolvable alias: keep the name
        return path


def _markdown(text: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
    scope = obj if obj.is_module or obj.is_class else obj.parent or obj

    def role(match: re.Match[str]) -> str:
        kind, short, name = match.groups()
        shown = name.rsplit(".", 1)[-1] if short else name
        if kind in ("func", "meth"):
            shown += "()"
        target = _target(name, scope, loader)
        return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'

    text = ROLE.sub(role, text)
    text = PEP.sub(r"[PEP \1](https://peps.python.org/pep-\1/)", text)
    return _literal_blocks(_tables(text))


def _tables(text: str) -> str:
    lines = text.split("\n")
    rules = [i for i, line in enumerate(lines) if TABLE_RULE.match(line)]
    if len(rules) < 2:
        return text
    first, last = rules[0], rules[-1]
    indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
    block = [f"{indent}```text", *lines[first : last + 1], f"{indent}```"]
    return "\n".join(lines[:first] + block + lines[last + 1 :])


def _literal_blocks(text: str) -> str:
    return re.sub(r"(\S)::\n(\s*\n)", r"\1:\n\2", text)
