"""The package's shape: no import circle anywhere, and every package says what it mirrors.
(The layers themselves are import-linter's contracts in pyproject.toml; `make test` runs them.)"""

import importlib
import pkgutil

import grimp

import netlab


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_import_circle():
    graph = grimp.build_graph("netlab")
    assert len(graph.modules) > 40
    assert _cycles(graph) == []


def test_the_cycle_finder_sees_a_circle():
    class Graph:
        modules = {"a", "b", "c", "d"}
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m):
            return self.edges[m]
    assert _cycles(Graph()) == [["a", "b", "c"]]


def test_every_package_names_what_it_mirrors():
    packages = [m.name for m in pkgutil.walk_packages(netlab.__path__, "netlab.") if m.ispkg]
    assert {"netlab.api", "netlab.controllers", "netlab.node", "netlab.node.flannel", "netlab.node.proxy",
            "netlab.addons", "netlab.observe", "netlab.kernel", "netlab.values"} <= set(packages)
    for name in packages:
        assert (importlib.import_module(name).__doc__ or "").strip(), f"{name} has no docstring"
