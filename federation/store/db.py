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


# SQLite result codes that mean the environment failed us (not our SQL):
# BUSY, LOCKED, READONLY, IOERR, CORRUPT, CANTOPEN, FULL, PROTOCOL, NOTADB
# (``sqlite3.Error.sqlite_errorcode``, extended codes masked to the primary one).
_ENVIRONMENT_CODES = frozenset({5, 6, 8, 10, 11, 14, 13, 15, 26})
_IOERR, _FULL = 10, 13


def storage_error(e: sqlite3.Error, where: str = "") -> StorageError | None:
    """``e`` as a ``StorageError`` when the disk, the file or another process
    is to blame (disk full, I/O error, corrupt file, locked), else None: a
    constraint or a programming error stays what it is for the caller."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is None or (code & 0xFF) not in _ENVIRONMENT_CODES:
        return None
    # A full disk reads "database or disk is full" (ENOSPC) or "disk I/O
    # error" (EFBIG, a file size limit; EIO): say what to check.
    hint = "; check the free space and the health of the disk" if code & 0xFF in (_IOERR, _FULL) else ""
    return StorageError(f"{where}{': ' if where else ''}{e}{hint}")


HEALED = "healed"  # the schema a rebuilt copy of a mirror is attached as (``sync.heal``)


@contextmanager
def attached(conn: sqlite3.Connection, path: Path | str, schema: str = HEALED):
    """``path`` attached to ``conn`` as ``schema`` while the block runs
    (outside any transaction: SQLite cannot attach inside one)."""
    try:
        conn.execute(f"ATTACH DATABASE ? AS {schema}", (str(path),))
    except sqlite3.Error as e:
        raise storage_error(e, f"cannot attach {path}") or StorageError(f"cannot attach {path}: {e}") from e
    try:
        yield conn
    finally:
        conn.execute(f"DETACH DATABASE {schema}")


@contextmanager
def write_txn(conn: sqlite3.Connection):
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls everything back.

    A failing COMMIT (disk full, I/O error) rolls back too, so the
    connection is never left inside a transaction the next BEGIN trips on.
    SQLite rolls a transaction back by itself on some of these errors
    (``database or disk is full``), so the ROLLBACK here runs only if one is
    still open and its own failure is swallowed: the error raised is always
    the one that failed the write, never "cannot rollback - no transaction
    is active". Failures of the environment (``storage_error``) are raised
    as ``StorageError`` naming the database file.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        _raise_mapped(e, conn)
        raise
    try:
        yield conn
    except BaseException as e:
        _rollback(conn)
        if isinstance(e, sqlite3.Error):
            _raise_mapped(e, conn)
        raise
    try:
        conn.execute("COMMIT")
    except BaseException as e:
        _rollback(conn)
        if isinstance(e, sqlite3.Error):
            _raise_mapped(e, conn)
        raise


def _raise_mapped(e: sqlite3.Error, conn: sqlite3.Connection) -> None:
    """Raise ``e`` as a ``StorageError`` if the environment is to blame; else return."""
    mapped = storage_error(e, _name(conn))
    if mapped is not None:
        raise mapped from e


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back whatever transaction is still open; a failure to do so is
    not the error the caller needs to see (the first one is raised)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolls back on its own when the connection's next statement runs


def _name(conn: sqlite3.Connection) -> str:
    """The database file of ``conn`` (for error messages)."""
    try:
        row = conn.execute("PRAGMA database_list").fetchone()
    except sqlite3.Error:
        return "database"
    return f"database {row[2]}" if row and row[2] else "database"
