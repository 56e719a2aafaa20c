"""
The layout's rules, checked on the source: no import circles among peerd's
modules, and no provider importing another provider.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "peerd"


def module_name(path: Path) -> str:
    """``peerd/net/manager.py`` -> ``peerd.net.manager``; packages by their ``__init__``."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py") if "static" not in p.parts}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str) -> set[str]:
    """The peerd modules ``name`` imports (a ``from pkg import mod`` counts as ``pkg.mod``)."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = []
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in MODULES else base)
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_walk_sees_imports() -> None:
    """The checker itself works: known edges are found (so an empty result means something)."""
    assert "peerd.net.manager" in GRAPH["peerd.peer"]
    assert "peerd.peerctl.client" in GRAPH["peerd.providers.files.cli"]
    assert "peerd.providers.files.plugin" in GRAPH["peerd.plugins.peerd_files"]
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    """No two peerd modules import each other, directly or through others."""
    circles = strongly_connected(GRAPH)
    assert circles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


PROVIDERS = sorted(p.name for p in (ROOT / "providers").iterdir() if (p / "__init__.py").exists())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_provider_imports_another(provider: str) -> None:
    """A module under ``peerd/providers/X/`` imports nothing from ``peerd/providers/Y/``."""
    own = f"peerd.providers.{provider}"
    offending = {
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if name == own or name.startswith(own + ".")
        for target in targets
        if target.startswith("peerd.providers.")
        and target != "peerd.providers"
        and not (target == own or target.startswith(own + "."))
    }
    assert not offending, sorted(offending)


def test_every_built_in_provider_is_checked() -> None:
    """The parametrized check above covers each built-in provider."""
    assert {"files", "storage", "relay", "compute"} <= set(PROVIDERS)
