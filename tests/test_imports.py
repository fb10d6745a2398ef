"""Dependencies point one way: no import cycle among kzoo's modules, function-level imports included.

A function-level import hides a cycle from Python (the module is complete by the time the
function runs) but not from the design: `a` needs `b` and `b` needs `a` all the same. So the
graph here is read from the source, not from `sys.modules`, and every import counts: at module
top, inside a function, and `importlib.import_module("kzoo....")` calls (an f-string prefix
such as `f"kzoo.commands.{name}"` stands for every module of that package).

How an import becomes an edge, and why packages need no exemption:

* `import kzoo.a.b` and `from kzoo.a import b` (with `kzoo/a/b.py` a module) are edges to
  `kzoo.a.b`, not to the package `kzoo.a`; `from kzoo.a import NAME` (a name, not a module)
  is an edge to `kzoo.a` itself, whose `__init__` defines or re-exports it.
* Python runs a module's parent packages before the module itself (`kzoo/__init__.py`, then
  `kzoo/a/__init__.py`, then `kzoo/a/b.py`). Those implicit imports are how packages work, and
  they are not edges: drawn, they would put every module on a cycle through `kzoo/__init__.py`,
  which imports every subpackage.
* A package's `__init__` importing (re-exporting) its own submodules, `kzoo.a` -> `kzoo.a.b`, is
  therefore an edge like any other, and it can only close a cycle through a module that reads
  the package's own namespace (`from kzoo.a import NAME`, `import kzoo.a` used whole). That is a
  real cycle, not a packaging artefact: the package's `__init__` is still part-way through when
  its submodules load, so NAME may not exist yet. Import NAME from the submodule defining it.
"""

from __future__ import annotations

import ast
import os
import sys
from collections import deque

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # the tomli backport, a dependency on Python 3.10
    import tomli as tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules(repo: str = REPO) -> dict[str, str]:
    """`{module name: file path}` for every module of the `kzoo` package, mapping folders to
    packages as pyproject's `[tool.setuptools.package-dir]` does (`zoo/` is `kzoo.zoo`)."""
    with open(os.path.join(repo, "pyproject.toml"), "rb") as f:
        package_dir = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    found = {}
    for package, folder in package_dir.items():
        base = os.path.join(repo, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if os.path.isfile(os.path.join(dirpath, d, "__init__.py")))
            rel = os.path.relpath(dirpath, base)
            prefix = [package] + ([] if rel == "." else rel.split(os.sep))
            for name in sorted(filenames):
                if name.endswith(".py"):
                    module = ".".join(prefix + ([] if name == "__init__.py" else [name[:-3]]))
                    found.setdefault(module, os.path.join(dirpath, name))
    return found


class _Imports(ast.NodeVisitor):
    """Collects `(target module, line, in a function)` for every kzoo-internal import of one module."""

    def __init__(self, module: str, is_package: bool, known: set[str]):
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.depth = 0
        self.found: list[tuple[str, int, bool]] = []

    def _add(self, target, node):
        if target:
            self.found.append((target, node.lineno, self.depth > 0))

    def _visit_function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def _longest_module(self, dotted: str):
        while dotted and dotted not in self.known:
            dotted = dotted.rpartition(".")[0]
        return dotted

    def visit_Import(self, node):
        for alias in node.names:
            self._add(self._longest_module(alias.name), node)

    def visit_ImportFrom(self, node):
        if node.level:  # relative: from the module's package, one level up per extra dot
            parts = self.package.split(".")[:len(self.package.split(".")) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            self._add(sub if sub in self.known else self._longest_module(base), node)

    def visit_Call(self, node):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self._add(self._longest_module(arg.value), node)
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                package = str(arg.values[0].value).rpartition(".")[0]  # "kzoo.commands." -> kzoo.commands
                for module in sorted(self.known):
                    if module.rpartition(".")[0] == package:
                        self._add(module, node)
        self.generic_visit(node)


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[str, int, bool]]:
    """The kzoo modules `source` (the text of `module`) imports: `(target, line, in a function)`."""
    visitor = _Imports(module, is_package, known)
    visitor.visit(ast.parse(source))
    return [found for found in visitor.found if found[0] != module]


def import_graph(repo: str = REPO) -> dict[str, dict[str, tuple[str, int, bool]]]:
    """`{module: {imported module: (file, line, in a function)}}`, the first import of each pair."""
    found = modules(repo)
    graph = {}
    for module, path in found.items():
        with open(path, encoding="utf-8") as f:
            source = f.read()
        edges = graph.setdefault(module, {})
        for target, line, in_function in imports_of(source, module, path.endswith("__init__.py"), set(found)):
            edges.setdefault(target, (os.path.relpath(path, repo), line, in_function))
    return graph


def cycles(graph) -> list[list[str]]:
    """One shortest cycle per strongly connected component of more than one module (Tarjan's
    algorithm, iterative), as `[a, b, ..., a]`."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_shortest_cycle(graph, component) for component in components]


def _shortest_cycle(graph, component) -> list[str]:
    start = min(component)
    previous, queue = {start: None}, deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph.get(node, ())):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return path[::-1] + [start]
            if child in component and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # unreachable: a component is strongly connected


def _describe(graph, cycle) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        path, line, in_function = graph[a][b]
        steps.append(f"  {a} -> {b}  ({path}:{line}{', inside a function' if in_function else ''})")
    return "\n".join(steps)


KNOWN = {"kzoo", "kzoo.zoo", "kzoo.zoo.activations", "kzoo.zoo.registry", "kzoo.commands", "kzoo.commands.a",
         "kzoo.commands.b", "kzoo.data", "kzoo.data.core"}


@pytest.mark.parametrize("source, module, is_package, expected", [
    ("from kzoo.zoo import activations", "kzoo.zoo.blocks", False, [("kzoo.zoo.activations", 1, False)]),
    ("from kzoo.zoo import MODELS", "kzoo.train", False, [("kzoo.zoo", 1, False)]),
    ("import kzoo.zoo.registry as r", "kzoo.cli", False, [("kzoo.zoo.registry", 1, False)]),
    ("import numpy\nimport keras.ops", "kzoo.cli", False, []),
    ("def f():\n    from kzoo.data.core import load", "kzoo.cli", False, [("kzoo.data.core", 2, True)]),
    ("from . import core", "kzoo.data", True, [("kzoo.data.core", 1, False)]),
    ("from .core import load", "kzoo.data.sources", False, [("kzoo.data.core", 1, False)]),
    ("from ..zoo import registry", "kzoo.data.sources", False, [("kzoo.zoo.registry", 1, False)]),
    ("importlib.import_module('kzoo.data.core')", "kzoo.cli", False, [("kzoo.data.core", 1, False)]),
    ("importlib.import_module(f'kzoo.commands.{m}')", "kzoo.cli", False,
     [("kzoo.commands.a", 1, False), ("kzoo.commands.b", 1, False)]),
])
def test_imports_become_edges_to_the_module_imported(source, module, is_package, expected):
    assert imports_of(source, module, is_package, KNOWN) == expected


def test_the_graph_covers_every_folder_of_the_package():
    graph = import_graph()
    for module in ("kzoo.cli", "kzoo.zoo.hub", "kzoo.zoo.layers", "kzoo.callbacks", "kzoo.tuning.search",
                   "kzoo.recipes.schema", "kzoo.commands.export"):
        assert module in graph, module
    assert "kzoo.commands.export" in graph["kzoo.cli"]  # through importlib.import_module(f"kzoo.commands.{...}")


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    report = "\n\n".join(" -> ".join(c) + "\n" + _describe(graph, c) for c in found)
    assert not found, f"{len(found)} import cycle(s) among kzoo's modules:\n\n{report}"
