"""Exact lookups use the primary key (feed, hash_type, value, ...) feed by feed.

The mirror keeps no second index over every hash (it doubled bootstrap
index time at 10M rows); lookups must still never scan the hashes table.
"""
from __future__ import annotations

import hashlib

from federation.store.mirror import Mirror


def _plan(conn, sql: str) -> str:
    return " | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))


def test_lookup_searches_the_primary_key_of_each_feed_and_finds_every_feed(tmp_path):
    m = Mirror(tmp_path / "m.db")
    c = m.conn
    for i, name in enumerate(("alpha", "beta", "gamma"), 1):
        c.execute("INSERT INTO follows (name, origin, vkeys, urls, compact, digest) VALUES (?,?,'','',x'',x'')",
                  (name, f"example.org/{name}"))
        rows = [(i, "md5", hashlib.md5(f"{name}{k}".encode()).digest(), f"c{k}", "", 1, 0) for k in range(500)]
        c.executemany("INSERT INTO hashes VALUES (?,?,?,?,?,?,?)", rows)
    shared = hashlib.md5(b"in two feeds").digest()
    c.execute("INSERT INTO hashes VALUES (1,'md5',?,'a1','x',1,0)", (shared,))
    c.execute("INSERT INTO hashes VALUES (3,'md5',?,'g1','y',2,0)", (shared,))
    assert c.execute("SELECT name FROM sqlite_master WHERE name='hashes_by_value'").fetchone() is None

    statements: list[str] = []
    c.set_trace_callback(statements.append)
    matches = m.lookup("md5", shared)
    c.set_trace_callback(None)

    assert [(x.feed, x.case, x.labels, x.added_version) for x in matches] == [
        ("alpha", "a1", ("x",), 1), ("gamma", "g1", ("y",), 2)]
    (sql,) = [s for s in statements if "hashes h" in s]
    plan = _plan(c, sql)
    assert "SEARCH h USING PRIMARY KEY" in plan, plan
    assert "SCAN h" not in plan, plan
    m.close()


def test_an_old_mirror_loses_its_value_index_on_open(tmp_path):
    m = Mirror(tmp_path / "m.db")
    m.conn.execute("CREATE INDEX hashes_by_value ON hashes (hash_type, value)")
    m.close()
    m = Mirror(tmp_path / "m.db")
    assert m.conn.execute("SELECT name FROM sqlite_master WHERE name='hashes_by_value'").fetchone() is None
    m.close()
