"""The package tree shows the layers, and the imports keep to them.

Layers, bottom to top (docs/ARCHITECTURE.md): ``core`` (pure) < ``store``
(SQLite) < ``net`` (HTTP) < ``trust`` < ``sync`` < ``platform`` < ``node`` <
``cli``. A module imports from its own package or from lower ones only;
there is no import cycle, not even one hidden in a function; the library
(everything but ``cli``, which imports lazily to start fast) imports our
modules at module level, where a reader sees them; and ``core`` imports
neither aiohttp nor sqlite3 nor anything of ours outside ``core``.
"""
from __future__ import annotations

import ast
import sys

from support.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "federation"
LAYERS = ["core", "store", "net", "trust", "sync", "platform", "node", "cli"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def imports(tree: ast.Module, mods: dict, *, function_level: bool | None = None) -> list[tuple[str, int]]:
    """(our module imported, line) for every import in ``tree``; with
    ``function_level`` True/False only those inside/outside a function."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        if function_level is not None and (id(node) in inside) != function_level:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "federation":
            for target in [node.module] + [f"{node.module}.{a.name}" for a in node.names]:
                if target in mods:
                    out.append((target, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name in mods]
    return out


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_core_is_pure():
    mods = modules()
    found = []
    for name, tree in mods.items():
        if layer(name) != "core":
            continue
        for node in ast.walk(tree):
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for t in targets:
                top = t.split(".")[0]
                if top in ("aiohttp", "sqlite3") or (top == "federation" and t.split(".")[1:2] not in (["core"], [])):
                    found.append(f"{name}:{node.lineno} imports {t}")
    assert found == [], "core must stay pure:\n" + "\n".join(found)


def test_modules_import_only_their_own_layer_or_lower_ones():
    mods = modules()
    found = []
    for name, tree in mods.items():
        mine = layer(name)
        if mine is None:
            continue
        for target, line in imports(tree, mods):
            theirs = layer(target)
            if theirs is not None and RANK[theirs] > RANK[mine]:
                found.append(f"{name}:{line} ({mine}) imports {target} ({theirs})")
    assert found == [], "an import up the layers:\n" + "\n".join(found)


def test_no_import_cycle_even_inside_functions():
    mods = modules()
    edges = {name: {t for t, _ in imports(tree, mods)} - {name} for name, tree in mods.items()}
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_the_library_imports_our_modules_at_module_level():
    mods = modules()
    found = [f"{name}:{line} imports {target} inside a function"
             for name, tree in mods.items() if layer(name) not in ("cli", None)
             for target, line in imports(tree, mods, function_level=True)]
    assert found == [], "\n".join(found)


def test_the_library_imports_the_standard_library_at_module_level():
    """No ``import json`` inside a function outside ``cli``: a standard module costs nothing to import
    up front, and a hidden import hides a module's dependencies (third-party ones imported lazily on
    purpose, e.g. zstandard for snapshots only, are not checked here)."""
    found = []
    for name, tree in modules().items():
        if layer(name) in ("cli", None):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(node):
                    if isinstance(n, ast.Import):
                        found += [f"{name}:{n.lineno} imports {a.name} inside a function" for a in n.names
                                  if a.name.split(".")[0] in sys.stdlib_module_names]
                    elif isinstance(n, ast.ImportFrom) and n.module and \
                            n.module.split(".")[0] in sys.stdlib_module_names:
                        found.append(f"{name}:{n.lineno} imports from {n.module} inside a function")
    assert found == [], "\n".join(found)


def test_the_checker_sees_imports():
    """The scanner itself: a function-level import and an upward one are found."""
    tree = ast.parse("from federation.core import note\n\ndef f():\n    from federation.cli.main import cli\n")
    mods = {"federation.core.note": None, "federation.cli.main": None, "federation.core": None}
    assert imports(tree, mods, function_level=True) == [("federation.cli.main", 4)]
    assert ("federation.core.note", 1) in imports(tree, mods, function_level=False)
