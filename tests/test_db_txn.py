"""``db.write_txn``: a COMMIT that fails leaves no transaction open."""
from __future__ import annotations

import sqlite3

import pytest

from federation.store.db import connect, write_txn


def test_failed_commit_rolls_back_and_the_next_transaction_works(tmp_path):
    conn = connect(tmp_path / "x.db")
    conn.executescript("""
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
    """)
    # A deferred foreign key is checked at COMMIT: the COMMIT itself fails.
    with pytest.raises(sqlite3.IntegrityError):
        with write_txn(conn):
            conn.execute("INSERT INTO child VALUES (42)")
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    with write_txn(conn):
        conn.execute("INSERT INTO parent VALUES (1)")
        conn.execute("INSERT INTO child VALUES (1)")
    assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 1
    conn.close()
