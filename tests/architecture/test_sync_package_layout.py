"""The sync package's modules import each other at module level, without a
cycle (issue 11: ``sync`` <-> ``bootstrap`` was a cycle hidden by
function-level imports), and the acceptance object stays pure."""
from __future__ import annotations

import ast
from pathlib import Path

import federation

ROOT = Path(federation.__file__).parent


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(module-level, function-level) ``federation.*`` modules imported by ``path``."""
    top, inner = set(), set()
    tree = ast.parse(path.read_text())

    def names(node) -> set[str]:
        if isinstance(node, ast.Import):
            return {a.name for a in node.names}
        if isinstance(node, ast.ImportFrom) and node.module:
            return {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        return set()

    for node in tree.body:
        top |= names(node)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                inner |= names(sub)
    return {n for n in top if n.startswith("federation.")}, {n for n in inner if n.startswith("federation.")}


def _sync_modules() -> dict[str, Path]:
    return {f"federation.sync.{p.stem}": p for p in (ROOT / "sync").glob("*.py") if p.stem != "__init__"}


def test_no_function_level_imports_between_sync_modules():
    modules = _sync_modules()
    offenders = {name: sorted(n for n in _imports(p)[1] if n in modules or n.rsplit(".", 1)[0] in modules)
                 for name, p in modules.items()}
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_sync_modules_form_no_cycle():
    """Counting function-level imports too: they hid the cycle before."""
    modules = _sync_modules()
    graph = {name: {n if n in modules else n.rsplit(".", 1)[0] for n in set.union(*_imports(p))} & set(modules)
             for name, p in modules.items()}
    seen, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(node):] + [node])}")
        if node in seen:
            return
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for name in sorted(graph):
        visit(name)


def test_acceptance_is_pure():
    for module in ("acceptance", "verify", "headproof"):
        text = (ROOT / "core" / f"{module}.py").read_text()
        tree = ast.parse(text)
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module if node.module.startswith("federation") else node.module.split(".")[0])
        assert not imported & {"aiohttp", "sqlite3", "asyncio", "socket", "time"}, (module, imported)
        assert all(not m.startswith("federation.") or m.startswith("federation.core") for m in imported), imported
