"""Accepted trust versions of each feed, and witness-quorum freshness, in SQLite.

The only module with SQL on ``trust_chain`` and ``trust_freshness``. The
tables live in the same file as the feed (mirror.db for followed feeds,
publisher.db for published ones, so a publisher and relays can serve the
chain). Which versions are acceptable is ``trust.rotation``'s business (the
TUF-style rule); this store keeps them in order:

* ``start`` stores the operator-supplied first file (idempotent for the
  same bytes);
* ``append`` inserts version N+1 only while N is the newest, in one
  transaction (with the caller's ``in_txn``, e.g. a mirror's new log keys),
  so a concurrent rotation fails instead of forking the chain;
* ``record_freshness`` only moves the quorum time forward.

The query functions at the end read through any connection, read-only ones
included, and treat a database without the tables as holding no chain.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from federation.core.errors import InputError, StorageError
from federation.core.trustfile import TrustFile, parse_trust
from federation.store.db import create_tables, write_txn

SCHEMA = """
CREATE TABLE IF NOT EXISTS trust_chain (
    feed TEXT NOT NULL,                -- feed (or followed feed) name
    version INTEGER NOT NULL,
    origin TEXT NOT NULL,
    data BLOB NOT NULL,                -- the signed trust file, exactly as verified
    accepted_at INTEGER NOT NULL,
    PRIMARY KEY (feed, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trust_freshness (
    feed TEXT PRIMARY KEY,
    quorum_time INTEGER NOT NULL,      -- newest time a witness quorum vouched for a served checkpoint
    checked_at INTEGER NOT NULL
);
"""


class TrustChain:
    """The accepted trust versions of one feed in ``trust_chain``."""

    def __init__(self, conn: sqlite3.Connection, feed: str):
        self.conn = conn
        self.feed = feed
        # Not executescript: it COMMITs whatever transaction is open on the
        # connection first, and callers construct this on shared connections
        # (a publisher's, in the middle of a publish or a cosigning round).
        create_tables(conn, SCHEMA)

    def current(self) -> TrustFile | None:
        row = self.conn.execute("SELECT data FROM trust_chain WHERE feed=? ORDER BY version DESC LIMIT 1",
                                (self.feed,)).fetchone()
        if row is None:
            return None
        try:
            return parse_trust(row[0], strict=False)  # accepted earlier, under the rules of its time
        except Exception as e:  # our own store: any failure is local corruption
            raise StorageError(f"stored trust file of feed {self.feed} is unreadable: {e}") from None

    def get(self, version: int) -> bytes | None:
        row = self.conn.execute("SELECT data FROM trust_chain WHERE feed=? AND version=?",
                                (self.feed, version)).fetchone()
        return row[0] if row else None

    def start(self, trust: TrustFile) -> None:
        """Store the operator-supplied first trust file (any version: an operator
        may start from a later one). Idempotent for the identical file."""
        with write_txn(self.conn):
            row = self.conn.execute("SELECT version, data FROM trust_chain WHERE feed=? ORDER BY version DESC "
                                    "LIMIT 1", (self.feed,)).fetchone()
            if row is not None:
                if row[1] == trust.raw:
                    return
                raise InputError(f"feed {self.feed} already has trust version {row[0]}; "
                                 "use rotation to move to a new one")
            self._insert(trust)

    def append(self, trust: TrustFile, in_txn: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Persist one verified rotation step atomically.

        ``in_txn(conn)``, if given, runs in the same transaction after the
        insert: a mirror's rotation replaces the feed's trusted log keys there
        (``mirror.set_trusted_keys``), so plain syncs never trust a key the
        new version revoked, and a crash leaves version N with N's keys or
        N+1 with N+1's.
        """
        with write_txn(self.conn):
            row = self.conn.execute("SELECT max(version) FROM trust_chain WHERE feed=?", (self.feed,)).fetchone()
            if row[0] != trust.version - 1:
                raise StorageError(f"feed {self.feed}: trust chain is at version {row[0]}, cannot add "
                                   f"{trust.version}; another process rotated concurrently")
            self._insert(trust)
            if in_txn is not None:
                in_txn(self.conn)

    def _insert(self, trust: TrustFile) -> None:
        self.conn.execute("INSERT INTO trust_chain (feed, version, origin, data, accepted_at) VALUES (?,?,?,?,?)",
                          (self.feed, trust.version, trust.origin, trust.raw, int(time.time())))

    def record_freshness(self, quorum_time: int) -> None:
        self.conn.execute(
            "INSERT INTO trust_freshness (feed, quorum_time, checked_at) VALUES (?,?,?) ON CONFLICT(feed) DO "
            "UPDATE SET quorum_time=max(quorum_time, excluded.quorum_time), checked_at=excluded.checked_at",
            (self.feed, quorum_time, int(time.time())))

    def freshness(self) -> int | None:
        row = self.conn.execute("SELECT quorum_time FROM trust_freshness WHERE feed=?", (self.feed,)).fetchone()
        return row[0] if row else None


# ---- queries on any connection (read-only ones too) ----------------------------


def latest_trust(conn: sqlite3.Connection, feed: str) -> bytes | None:
    """The newest accepted trust file of ``feed``, or None (no chain, no table)."""
    try:
        row = conn.execute("SELECT data FROM trust_chain WHERE feed=? ORDER BY version DESC LIMIT 1",
                           (feed,)).fetchone()
    except sqlite3.OperationalError:  # no trust_chain table in this database
        return None
    return row[0] if row else None


def quorum_time(conn: sqlite3.Connection, feed: str) -> int | None:
    """The newest time a witness quorum vouched for ``feed`` (None: never, no table)."""
    try:
        row = conn.execute("SELECT quorum_time FROM trust_freshness WHERE feed=?", (feed,)).fetchone()
    except sqlite3.OperationalError:  # no trust_freshness table in this database
        return None
    return row[0] if row else None


def trust_version(conn: sqlite3.Connection, feed: str, version: int) -> bytes | None:
    """Trust version ``version`` of ``feed``, or None."""
    try:
        row = conn.execute("SELECT data FROM trust_chain WHERE feed=? AND version=?", (feed, version)).fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def trust_versions(conn: sqlite3.Connection, feed: str) -> list[tuple[int, bytes]]:
    """(version, file) of every accepted trust version of ``feed``, oldest first."""
    try:
        return conn.execute("SELECT version, data FROM trust_chain WHERE feed=? ORDER BY version",
                            (feed,)).fetchall()
    except sqlite3.OperationalError:  # no trust_chain table: the feed has no trust chain
        return []


def newest_trust_files(conn: sqlite3.Connection) -> dict[str, bytes]:
    """Feed -> its newest accepted trust file, for every feed with a chain."""
    try:
        return dict(conn.execute("SELECT feed, data FROM trust_chain t WHERE version = "
                                 "(SELECT max(version) FROM trust_chain u WHERE u.feed = t.feed)").fetchall())
    except sqlite3.OperationalError:  # no trust_chain table: no feed has a trust file
        return {}
