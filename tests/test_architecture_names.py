"""One place each for the files of a node home, the feed-name pattern and the config defaults.

* ``node.home.Home`` names every file of a home; the snapshot directories
  are named by ``store.snapshots`` (next to their database), which ``Home``
  uses. No other module joins those names onto a path by hand.
"""
from __future__ import annotations

import ast
from pathlib import Path

import federation
from federation.node.home import Home

PACKAGE = Path(federation.__file__).parent

HOME_FILES = {"publisher.db", "mirror.db", "auth.db", "platform.db", "witness.db", "private"}
SNAPSHOT_DIRS = {"snapshots", "mirror-snapshots"}
PATH_OWNERS = {**{n: "node/home.py" for n in HOME_FILES}, **{n: "store/snapshots.py" for n in SNAPSHOT_DIRS}}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _path_parts(tree: ast.AST):
    """(line, name) of each string joined onto a path: ``x / "name"`` or
    ``os.path.join(..., "name")``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and isinstance(side.value, str):
                    yield node.lineno, side.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield node.lineno, arg.value


def test_only_home_builds_the_paths_of_a_home():
    bad = [f"federation/{module}:{line}: {name!r} joined onto a path; use Home (federation/{PATH_OWNERS[name]})"
           for module, tree in _modules() for line, name in _path_parts(tree)
           if name in PATH_OWNERS and PATH_OWNERS[name] != module]
    assert not bad, "\n".join(bad)


def test_home_knows_every_file(tmp_path):
    home = Home(tmp_path)
    assert {home.publisher_db, home.mirror_db, home.auth_db, home.platform_db, home.witness_db} == \
        {tmp_path / n for n in HOME_FILES - {"private"}}
    assert home.private_dir == tmp_path / "private" and home.key_path("tid") == tmp_path / "private" / "tid.key"
    assert (home.snapshots_dir, home.mirror_snapshots_dir) == (tmp_path / "snapshots", tmp_path / "mirror-snapshots")
