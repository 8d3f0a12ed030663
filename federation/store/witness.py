"""A witness's state in SQLite (the only module with SQL on ``witness_*``).

Per log origin: the log keys the witness accepts (``witness_logs``), the
latest checkpoint it cosigned (``witness_checkpoints``), and refused signed
requests kept as possible evidence of log misbehaviour
(``witness_evidence``). The protocol (``trust.witness``) runs its
check-and-persist in one ``write_txn`` on ``conn``; ``advance`` moves a
log's checkpoint by compare-and-swap on the size it checked against
(``UPDATE ... WHERE origin=? AND size=?``, or an ``INSERT`` for the first),
so a concurrent request that moved the state first makes it return False
instead of overwriting.
"""
from __future__ import annotations

import sqlite3

from federation.store.db import Store, write_txn

SCHEMA = """
CREATE TABLE IF NOT EXISTS witness_logs (
    origin TEXT PRIMARY KEY,
    vkeys TEXT NOT NULL               -- trusted log keys, one per line
);
CREATE TABLE IF NOT EXISTS witness_checkpoints (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note BLOB NOT NULL,               -- the checkpoint as submitted (log signatures)
    updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS witness_evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    body BLOB NOT NULL,               -- the signed request that was refused: possible proof of misbehaviour
    time INTEGER NOT NULL
);
"""


class WitnessStore(Store):
    SCHEMA = SCHEMA

    def set_log(self, origin: str, vkeys: list[str]) -> None:
        """Configure (or reconfigure) the log keys accepted for ``origin``."""
        with write_txn(self.conn):
            self.conn.execute("INSERT INTO witness_logs (origin, vkeys) VALUES (?,?) ON CONFLICT(origin) DO "
                              "UPDATE SET vkeys=excluded.vkeys", (origin, "\n".join(vkeys)))

    def log_keys(self, origin: str) -> list[str] | None:
        """The log keys accepted for ``origin``; None for an unknown origin."""
        row = self.conn.execute("SELECT vkeys FROM witness_logs WHERE origin=?", (origin,)).fetchone()
        return None if row is None else row[0].split("\n")

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        row = self.conn.execute("SELECT size, root FROM witness_checkpoints WHERE origin=?", (origin,)).fetchone()
        return (row[0], row[1]) if row else None

    def record_evidence(self, origin: str, status: int, reason: str, body: bytes, when: int) -> None:
        self.conn.execute("INSERT INTO witness_evidence (origin, status, reason, body, time) VALUES (?,?,?,?,?)",
                          (origin, status, reason, body, when))

    def advance(self, origin: str, old: int | None, size: int, root: bytes, note: bytes, when: int) -> bool:
        """Record ``note`` (of ``size`` and ``root``) as ``origin``'s latest
        cosigned checkpoint, if the latest is still of size ``old`` (None: there
        is none yet). False if a concurrent request moved it first."""
        if old is None:
            try:
                self.conn.execute("INSERT INTO witness_checkpoints (origin, size, root, note, updated) "
                                  "VALUES (?,?,?,?,?)", (origin, size, root, note, when))
            except sqlite3.IntegrityError:
                return False
            return True
        cur = self.conn.execute("UPDATE witness_checkpoints SET size=?, root=?, note=?, updated=? "
                                "WHERE origin=? AND size=?", (size, root, note, when, origin, old))
        return cur.rowcount == 1
