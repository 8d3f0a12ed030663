"""SQLite connections with the pragmas every store here relies on."""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from federation.core.errors import StorageError


def connect(path: Path | str, readonly: bool = False) -> sqlite3.Connection:
    """Open a database in WAL mode (readers never block the single writer).

    ``isolation_level=None``: transactions are explicit, via ``write_txn``.
    """
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False, timeout=30)
        else:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed version survives power loss, not only a process crash.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as e:
        raise StorageError(f"cannot open database {path}: {e}") from e
    return conn


async def finish_in_thread(fn: Callable, *args):
    """``fn(*args)`` in a worker thread, as ``asyncio.to_thread``, except that
    cancelling the caller waits for ``fn`` to return before the cancellation
    propagates. A thread cannot be interrupted: a version being applied when
    a node stops commits or rolls back (``write_txn``) on its own, and the
    caller must not close the connection under it meanwhile. (A second
    cancellation while waiting is not waited for.)"""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise


class Store:
    """A SQLite file opened for writing, with ``SCHEMA`` created if new (and
    its directory, mode 0700: a node home holds keys and secrets)."""

    SCHEMA = ""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise StorageError(f"cannot create {self.path.parent}: {e}") from e
        self.conn = connect(self.path)
        self.conn.executescript(self.SCHEMA)

    def close(self) -> None:
        self.conn.close()


def create_tables(conn: sqlite3.Connection, schema: str) -> None:
    """Run ``CREATE ... IF NOT EXISTS`` statements one by one.

    Unlike ``executescript``, this does not COMMIT a transaction that is
    open on the connection first: safe on shared connections.
    """
    for statement in schema.split(";"):
        if statement.strip():
            conn.execute(statement)


@contextmanager
def write_txn(conn: sqlite3.Connection):
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls everything back.

    A failing COMMIT (disk full, I/O error) rolls back too, so the
    connection is never left inside a transaction the next BEGIN trips on.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
