"""Static export: a feed's read side as plain files, for any web server or store.

``export_feed`` writes, under ``DIR``, exactly what the server serves under
``/feeds/NAME/``: ``checkpoint`` and ``tile/...``. Any static host serving
``DIR`` at some URL prefix is then a tlog-tiles upstream that mirrors verify
like any other (they trust the publisher's key, never the host).

Order, and what a crash at each step leaves (the tlog-tiles rule: data
first, signed head last):

1. one read transaction (a consistent snapshot of the database);
2. every tile and bundle not already on disk is written to a temporary file
   in its directory, fsynced, and renamed into place -- a crash leaves at
   worst a stray ``.tmp-*`` file and some tiles that no checkpoint names
   yet, which nobody asks for;
3. last, the checkpoint, the same way. Readers see the old checkpoint (whose
   tiles are all present, since tiles are never deleted) or the new one
   (whose tiles were all written in step 2).

Incremental: tiles are immutable (a path names fixed content), so an
existing file of the right length is skipped. An export never rolls the
checkpoint back: a smaller tree than the one on disk is refused.

The source is a publisher database (``feeds``) or a mirror database
(``follows``: a relay exporting a feed it verified).
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .db import connect
from .errors import InputError, MalformedError, StorageError
from .layout import tile_path
from .push import checkpoint_size


@dataclass(frozen=True)
class ExportResult:
    feed: str
    size: int
    written: int
    skipped: int
    checkpoint_changed: bool


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # world-readable: a web server must read it
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def feed_names(db: Path | str) -> list[str]:
    conn = connect(db, readonly=True)
    try:
        tables = _tables(conn)
        table = "feeds" if "feeds" in tables else "follows" if "follows" in tables else None
        if table is None:
            raise InputError(f"{db} is neither a publisher nor a mirror database")
        return [r[0] for r in conn.execute(f"SELECT name FROM {table} ORDER BY name")]
    finally:
        conn.close()


def export_feed(db: Path | str, name: str, out: Path | str, fsync: bool = True) -> ExportResult:
    """Export feed ``name`` of database ``db`` into directory ``out``."""
    out = Path(out)
    try:
        conn = connect(db, readonly=True)
    except StorageError as e:
        raise InputError(str(e)) from None
    try:
        conn.execute("BEGIN")  # step 1: one snapshot for checkpoint and tiles
        tables = _tables(conn)
        table = "feeds" if "feeds" in tables else "follows" if "follows" in tables else None
        if table is None:
            raise InputError(f"{db} is neither a publisher nor a mirror database")
        row = conn.execute(f"SELECT id, checkpoint FROM {table} WHERE name=?", (name,)).fetchone()
        if row is None:
            raise InputError(f"no feed named {name!r} in {db}")
        fid, checkpoint = row
        if checkpoint is None:
            raise InputError(f"feed {name!r} has no complete verified version to export yet")
        size = checkpoint_size(checkpoint)
        cp_path = out / "checkpoint"
        if cp_path.exists():
            try:
                old = cp_path.read_bytes()
                old_size = checkpoint_size(old)
            except (OSError, MalformedError):
                old, old_size = None, -1
            if old_size > size:
                raise InputError(f"{cp_path} holds tree size {old_size}, newer than {size}; refusing to roll back")
        else:
            old = None
        # Step 2: tiles and bundles, skipping immutable files already present.
        written = skipped = 0
        rows = conn.execute("SELECT level, idx, width, length(data) FROM tiles WHERE feed=?", (fid,)).fetchall()
        for level, idx, width, length in rows:
            path = out / tile_path(level, idx, width)
            try:
                if path.stat().st_size == length:
                    skipped += 1
                    continue
            except FileNotFoundError:
                pass
            data = conn.execute("SELECT data FROM tiles WHERE feed=? AND level=? AND idx=? AND width=?",
                                (fid, level, idx, width)).fetchone()[0]
            write_atomic(path, data, fsync)
            written += 1
        # Step 3: the signed head, last.
        changed = old != checkpoint
        if changed:
            write_atomic(cp_path, checkpoint, fsync)
        conn.execute("COMMIT")
        return ExportResult(name, size, written, skipped, changed)
    finally:
        conn.close()
