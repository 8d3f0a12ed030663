"""Every runtime dependency pyproject.toml declares is imported by the package, and every third-party
import of the package is declared: a dependency nobody imports (sqlite-utils was one) is weight and
attack surface for nothing, and an undeclared one breaks a fresh install."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

import federation
from support.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "federation"


def declared(extras: bool = False) -> set[str]:
    """Runtime dependencies (with ``extras``: also those of the optional extras)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    if extras:
        deps += [d for group in project.get("optional-dependencies", {}).values() for d in group]
    return {canonical(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in deps}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_levels() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"federation"}


def test_every_declared_dependency_is_imported_and_every_import_declared():
    assert federation.__file__.startswith(str(PACKAGE))
    dists = packages_distributions()
    used = {canonical(d) for top in imported_top_levels() for d in dists.get(top, [top])}
    assert declared() - used == set(), "declared in pyproject.toml but never imported by federation/"
    # platform/threatexchange.py is a python-threatexchange extension, loaded by threatexchange itself
    assert used - declared(extras=True) == set(), "imported by federation/ but not declared in pyproject.toml"
