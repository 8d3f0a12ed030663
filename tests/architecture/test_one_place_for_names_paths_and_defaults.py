"""One place each for the files of a node home, the feed-name pattern and the config defaults.

* ``node.home.Home`` names every file of a home; the snapshot directories
  are named by ``store.snapshots`` (next to their database), which ``Home``
  uses. No other module joins those names onto a path by hand.
* The feed-name pattern (and the same characters for consumer and webhook
  names) is written only in ``core/names.py``; docs/openapi.yaml restates it
  for clients.
* A node config's defaults are the dataclass defaults of ``node.config``:
  ``parse_config`` states no default of its own, and docs/node.md lists the
  same values.
"""
from __future__ import annotations

import ast
import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

import federation
from federation.core.errors import InputError
from federation.core.freshness import DEFAULT_MAX_AGE
from federation.node import config as C
from federation.node.home import Home

PACKAGE = Path(federation.__file__).parent
DOCS = PACKAGE.parent / "docs"

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
    assert home.mirror_pdq_index == tmp_path / "mirror.db.pdq-index"  # next to the mirror (platform.pdq_file)


# ---- the feed-name pattern -------------------------------------------------------

NAME_SPELLINGS = ("A-Za-z0-9._-", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", "A-Z a-z 0-9 . _ -")


def _code_literals(tree: ast.AST):
    """(line, text) of string literals that are not docstrings."""
    bodies = [node.body for node in ast.walk(tree) if isinstance(getattr(node, "body", None), list)]
    docs = {id(stmt.value) for body in bodies for stmt in body
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def test_the_feed_name_pattern_is_written_once():
    bad = [f"federation/{module}:{line}: {text[:60]!r}" for module, tree in _modules() if module != "core/names.py"
           for line, text in _code_literals(tree) if any(n in text for n in NAME_SPELLINGS)]
    assert not bad, "the feed-name characters restated outside federation/core/names.py:\n" + "\n".join(bad)


def test_consumer_and_webhook_names_keep_their_rule():
    from federation.core.names import check_name
    assert check_name("moderation.v2_a-b", "consumer") == "moderation.v2_a-b"
    assert check_name(".", "webhook") == "."  # never a path, unlike a feed name
    for bad in ("", "a" * 65, "a b", "a/b", "tid\n", "é", None, 3):
        with pytest.raises(InputError, match="must be 1-64 characters of A-Z a-z 0-9 . _ -"):
            check_name(bad, "consumer")


# ---- config defaults ------------------------------------------------------------------


def _literal_defaults(tree: ast.AST):
    """(line, key) of each literal default in ``parse_config``: ``t.get("key", 20.0)``
    or ``_number(t, "key", 20.0, ...)``. None and empty containers mean "absent"."""
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "parse_config")
    for node in ast.walk(fn):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "get" and len(node.args) == 2:
            key, default = node.args
        elif isinstance(node.func, ast.Name) and node.func.id == "_number":
            key, default = node.args[1], node.args[2]
        else:
            continue
        literal = all(isinstance(n, (ast.Constant, ast.BinOp, ast.operator, ast.UnaryOp, ast.unaryop))
                      for n in ast.walk(default))
        empty = isinstance(default, (ast.List, ast.Dict, ast.Tuple)) and not getattr(default, "elts", None) \
            and not getattr(default, "keys", None)
        if literal and not (isinstance(default, ast.Constant) and default.value is None) and not empty:
            yield node.lineno, key.value if isinstance(key, ast.Constant) else "?"


def test_parse_config_states_no_default_of_its_own():
    tree = ast.parse((PACKAGE / "node" / "config.py").read_text(encoding="utf-8"))
    bad = [f"federation/node/config.py:{line}: default of {key!r} written in parse_config"
           for line, key in _literal_defaults(tree)]
    assert not bad, "\n".join(bad)


def _doc_tables() -> list[dict[str, str]]:
    """The key -> default columns of docs/node.md's [node], [[publish]], [[follow]] and [platform] tables."""
    text = (DOCS / "node.md").read_text(encoding="utf-8")
    tables = []
    for block in text.split("| key | default | meaning |")[1:]:
        rows = {}
        for line in block.splitlines()[2:]:
            if not line.startswith("|"):
                break
            keys, default = line.split("|")[1:3]
            names = re.findall(r"`([a-z_]+)`", keys)
            values = [v.strip() for v in default.split(",")] if len(names) > 1 else [default.strip()]
            rows.update(zip(names, values))
        tables.append(rows)
    return tables


def _doc_value(cell: str):
    first = re.match(r"`?([^`;,]+)", cell)[1].strip()
    if first in ("true", "false"):
        return first == "true"
    m = re.fullmatch(r"([0-9.]+)( MiB)?", first)
    if m:
        return float(m[1]) * (1 << 20 if m[2] else 1)
    return first


def test_docs_list_the_defaults_the_code_has():
    node, publish, follow, platform = _doc_tables()
    documented = {**{("node", k): v for k, v in node.items()}, **{("publish", k): v for k, v in publish.items()},
                  **{("follow", k): v for k, v in follow.items()}, **{("platform", k): v for k, v in platform.items()}}
    want = {("node", "listen"): f"{C.NodeConfig.host}:{C.NodeConfig.port}", ("follow", "max_age"): DEFAULT_MAX_AGE}
    for table, cls in (("node", C.NodeConfig), ("publish", C.PublishedFeed), ("follow", C.FollowedFeed),
                       ("platform", C.PlatformConfig)):
        for f in fields(cls):
            if f.default is not MISSING and isinstance(f.default, (bool, int, float, str)) \
                    and (table, f.name) not in {("node", "host"), ("node", "port"),  # documented as listen
                                                ("follow", "access_given")}:  # whether access was stated: no key
                want[(table, f.name)] = f.default
    for key, value in want.items():
        assert key in documented, f"docs/node.md does not list the default of {key}"
        assert _doc_value(documented[key]) == value, (key, documented[key], value)
