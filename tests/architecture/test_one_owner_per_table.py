"""One owner per table: a table's name appears in SQL only in its owning module.

Every string literal of every module under ``federation/`` (docstrings
excepted: prose may name a table) is scanned for the places SQL names a
table -- ``FROM``, ``JOIN``, ``INTO``, ``UPDATE``, ``TABLE``, ``INDEX ... ON``
and ``PRAGMA table_info(...)``, in upper case as this codebase writes SQL.
A table named outside its owner, a table in no owner's list, or a table
name interpolated into SQL (``FROM {table}``: the reader cannot tell which
table) fails the test. An owner's methods may be called from anywhere,
through read-only connections too; the SQL stays with the owner.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import federation

PACKAGE = Path(federation.__file__).parent

OWNERS = {
    # mirror store: followed feeds, their change stream, version log, staging
    "follows": "store/mirror.py",
    "changes": "store/mirror.py",
    "versions": "store/mirror.py",
    "staging": "store/mirror.py",
    # publisher store: published feeds, their cosigning configuration, and the
    # publishing API's idempotency keys (recorded inside a publish transaction)
    "feeds": "store/publisher.py",
    "feed_cosigning": "store/publisher.py",
    "api_batches": "store/publisher.py",
    # shared by the publisher and the mirror stores
    "hashes": "store/activeset.py",
    "old_hashes": "store/activeset.py",  # temporary: the active set a snapshot replaces
    "tiles": "store/tilestore.py",
    # snapshots a publisher wrote (or a relay kept), and pruning
    "snapshots": "store/snapshots.py",
    "pruning": "store/snapshots.py",
    # trust rotation: accepted trust versions and witness-quorum freshness
    "trust_chain": "store/trust_chain.py",
    "trust_freshness": "store/trust_chain.py",
    # a witness's state
    "witness_logs": "store/witness.py",
    "witness_checkpoints": "store/witness.py",
    "witness_evidence": "store/witness.py",
    # auth.db: bearer tokens and the audit log
    "tokens": "store/tokens.py",
    "audit": "store/tokens.py",
    # platform.db: consumer cursors and webhooks
    "consumers": "store/platform.py",
    "webhooks": "store/platform.py",
}
SQLITE_OWN = {"sqlite_master", "sqlite_schema"}  # SQLite's catalogue, not ours

_NAME = r"(?:temp\.|main\.)?(\{\}|[a-z_][a-z0-9_]*)"
_PATTERNS = [
    re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+" + _NAME),
    re.compile(r"\bTABLE\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?" + _NAME),
    re.compile(r"\bINDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?[a-z_][a-z0-9_]*\s+ON\s+" + _NAME),
    re.compile(r"\bPRAGMA\s+table_info\(\s*" + _NAME),
]


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings (prose, not SQL)."""
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for stmt in body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                        and isinstance(stmt.value.value, str):
                    out.add(id(stmt.value))
    return out


def _literals(tree: ast.AST):
    """(line, text) of every string literal; an f-string's fields become ``{}``."""
    skip = _docstrings(tree)
    inner = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                inner.add(id(v))
                parts.append(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}")
            yield node.lineno, "".join(parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip | inner:
            yield node.lineno, node.value


def table_uses(source: str) -> list[tuple[int, str]]:
    """(line, table) for each table named in SQL in ``source``."""
    out = []
    for line, text in _literals(ast.parse(source)):
        for pattern in _PATTERNS:
            out += [(line, m.group(1)) for m in pattern.finditer(text)]
    return out


def scan() -> dict[str, list[tuple[int, str]]]:
    return {path.relative_to(PACKAGE).as_posix(): table_uses(path.read_text(encoding="utf-8"))
            for path in sorted(PACKAGE.rglob("*.py"))}


def violations(uses: dict[str, list[tuple[int, str]]]) -> list[str]:
    bad = []
    for module, found in uses.items():
        for line, table in found:
            where = f"federation/{module}:{line}"
            if table == "{}":
                bad.append(f"{where}: table name interpolated into SQL; call the owner of that table")
            elif table in SQLITE_OWN:
                continue
            elif table not in OWNERS:
                bad.append(f"{where}: table {table!r} has no owner in OWNERS")
            elif OWNERS[table] != module:
                bad.append(f"{where}: table {table!r} belongs to federation/{OWNERS[table]}")
    return bad


def test_every_table_is_named_in_sql_only_by_its_owner():
    bad = violations(scan())
    assert not bad, "SQL outside the owning store module:\n" + "\n".join(bad)


def test_every_owner_creates_its_tables():
    """The map is not stale: each owned table is created in its owner module."""
    created = {}
    for module, found in scan().items():
        source = (PACKAGE / module).read_text(encoding="utf-8")
        for m in re.finditer(r"CREATE (?:TEMP )?TABLE IF NOT EXISTS (\w+)", source):
            created.setdefault(m[1], set()).add(module)
    assert {t: {m} for t, m in OWNERS.items()} == created


def test_the_scanner_sees_what_it_must():
    """The scanner itself: SQL in code counts, prose in docstrings does not."""
    src = '''
"""Module prose: rows move FROM follows INTO nothing."""
def f(conn, table):
    """UPDATE follows SET x: prose again."""
    conn.execute("SELECT f.name FROM follows f CROSS JOIN hashes h ON h.feed=f.id")
    conn.execute("INSERT OR REPLACE INTO tiles VALUES (?)")
    conn.execute(f"SELECT id FROM {table} WHERE name=?")
    conn.execute("DELETE FROM temp.old_hashes")
    conn.execute("CREATE INDEX IF NOT EXISTS hashes_by_case ON hashes (feed, case_id)")
    conn.execute("INSERT INTO consumers VALUES (?) ON CONFLICT(name) DO UPDATE SET cursor=1")
'''
    assert sorted(t for _, t in table_uses(src)) == sorted(
        ["follows", "hashes", "tiles", "{}", "old_hashes", "hashes", "consumers"])
    assert violations({"net/server.py": table_uses(src)})
