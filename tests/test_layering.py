"""The shape of the code, checked.

* The engine stays free of I/O: nothing in ``e2ee/`` outside ``e2ee.keystore`` and
  ``e2ee.client`` imports asyncio, slixmpp, sockets, threads, the keystore or the client
  (ARCHITECTURE: sans-IO core).
* One import namespace: nothing imports the top-level folders ``keystore``, ``client`` or
  ``vectors`` by those names (they are ``e2ee.keystore``, ``e2ee.client`` and data).
* No import cycle between our modules (imports under ``if TYPE_CHECKING:`` are not counted,
  function-local ones are: a cycle hidden in a function is still a cycle).  Between the client's
  modules not even through ``TYPE_CHECKING`` imports: its parts are layered (types, stanzas, pep,
  incoming, catchup, outgoing, muc, plugin, session, cli).
"""

from __future__ import annotations

import ast
import functools
import os
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "e2ee"
LAYERS_WITH_IO = ("e2ee.keystore", "e2ee.client")
FORBIDDEN = {
    "asyncio",
    "slixmpp",
    "socket",
    "ssl",
    "threading",
    "multiprocessing",
    "selectors",
    "subprocess",
    "http",
    "urllib",
    "requests",
    "aiohttp",
    *LAYERS_WITH_IO,
}
OLD_TOP_LEVEL = {"keystore", "client", "vectors"}


@functools.cache
def _modules() -> dict[str, Path]:
    """Every module of the e2ee namespace (through the keystore/ and client/ links)."""
    found: dict[str, Path] = {}
    paths = [Path(d, f) for d, _, files in os.walk(PACKAGE, followlinks=True) for f in files if f.endswith(".py")]
    for path in sorted(paths):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, *, type_checking: bool = False) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of each import, with relative ones resolved; those under
    ``if TYPE_CHECKING:`` only with ``type_checking``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> Iterator[tuple[int, str]]:
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
            for child in node.orelse:
                yield from visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:  # `from pkg import module` imports the module, else pkg
                yield node.lineno, f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in _modules() else prefix
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(tree)


def _graph(prefix: str = "", *, type_checking: bool = False) -> dict[str, set[str]]:
    mods = {m: p for m, p in _modules().items() if m.startswith(prefix)}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for _, name in _imports(mod, path, type_checking=type_checking):
            if name in mods and name != mod:
                graph[mod].add(name)
    return graph


def import_cycles(prefix: str = "", *, type_checking: bool = False) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), among the modules
    whose names start with ``prefix``."""
    graph = _graph(prefix, type_checking=type_checking)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


def test_the_modules_are_found_through_the_links() -> None:
    mods = _modules()
    assert "e2ee.engine" in mods and "e2ee.keystore.store" in mods and "e2ee.client.cli" in mods


def test_engine_imports_nothing_with_io() -> None:
    offenders = []
    for mod, path in _modules().items():
        if mod.startswith(LAYERS_WITH_IO):
            continue
        for line, name in _imports(mod, path):
            if name.split(".")[0] in FORBIDDEN or name.startswith(LAYERS_WITH_IO):
                offenders.append(f"{mod}:{line} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_keystore_does_not_import_the_client() -> None:
    offenders = [
        f"{mod}:{line} imports {name}"
        for mod, path in _modules().items()
        if mod.startswith("e2ee.keystore")
        for line, name in _imports(mod, path)
        if name.startswith("e2ee.client")
    ]
    assert not offenders, "\n".join(offenders)


def test_nothing_imports_the_folders_by_their_old_top_level_names() -> None:
    offenders = []
    for folder in ("e2ee", "keystore", "client", "tests", "bench", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else ([node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                )
                offenders += [
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {n}"
                    for n in names
                    if n.split(".")[0] in OLD_TOP_LEVEL
                ]
    assert not offenders, "\n".join(offenders)


def test_no_import_cycle() -> None:
    cycles = import_cycles()
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_the_omemo_namespaces_are_named_together_only_in_the_registry() -> None:
    """Both OMEMO namespaces are one ``OmemoBackend`` each; the engine branches on no backend
    (an identity test against one backend) and lists them (flavour names or namespaces together) only in
    ``e2ee/registry.py``: everything else iterates ``registry.BACKENDS``."""
    import re

    pairs = re.compile(
        r"""is _(OMEMO2|LEGACY)\b|["']omemo2["']\s*,\s*["']legacy["']|"""
        r"""["']urn:xmpp:omemo:2["']\s*,\s*["']eu\.siacs\.conversations\.axolotl["']"""
    )
    offenders = []
    for mod, path in _modules().items():
        if mod.startswith(LAYERS_WITH_IO) or mod == "e2ee.registry":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pairs.search(line):
                offenders.append(f"{mod}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    from e2ee.registry import BACKENDS, NAMESPACES

    assert NAMESPACES == ("urn:xmpp:omemo:2", "eu.siacs.conversations.axolotl")  # preferred first
    assert all(b.flavour.namespace == b.namespace for b in BACKENDS)


def test_no_import_cycle_in_the_client_even_for_type_checking() -> None:
    graph = _graph("e2ee.client.", type_checking=True)
    # the client's parts are all there, and the plugin is built on them
    assert {"e2ee.client.pep", "e2ee.client.incoming", "e2ee.client.muc", "e2ee.client.session"} <= set(graph)
    assert {"e2ee.client.pep", "e2ee.client.incoming", "e2ee.client.outgoing"} <= graph["e2ee.client.plugin"]
    cycles = import_cycles("e2ee.client.", type_checking=True)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)
