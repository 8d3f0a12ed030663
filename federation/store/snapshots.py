"""Writing snapshots of a feed's active set, and pruning the entry bundles they cover.

The format is ``core.snapshot_format``; this module writes snapshot files
next to the publisher database (``snapshot_dir``, one directory per feed
id) and keeps the index rows (``snapshots``) and minimum indexes
(``pruning``): it is the only module with SQL on those two tables. A relay
keeps the snapshot it bootstrapped from in ``mirror_snapshot_dir`` with its
row in the mirror database (``keep_mirror_snapshot``).

**Pruning** (tlog-tiles "minimum index"): once a snapshot covers them, entry
bundles whose end index is at most the feed's minimum index are deleted and
answered with ``410 Gone``. Hash tiles stay, so consistency and inclusion can
still be proved.

Invariants: a snapshot file is listed in the index only after it is fully
written and fsynced; the minimum index never exceeds the size of a listed
snapshot; it never decreases.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

import msgpack

from federation.core.errors import InputError, StorageError
from federation.core.layout import ENTRIES, TILE_WIDTH
from federation.core.snapshot_format import SNAPSHOT_VERSION, ZSTD_MAGIC, SnapshotRef, bundle_range
from federation.store.activeset import ActiveSet
from federation.store.db import connect, create_tables, storage_error, write_txn
from federation.store.publisher import feed_position
from federation.store.tempfiles import locked_tempfile, remove_leftovers
from federation.store.tilestore import TileStore

log = logging.getLogger("federation.snapshot")

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    feed INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    version INTEGER NOT NULL,
    size INTEGER NOT NULL,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    compressed INTEGER NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (feed, sha256)
);
CREATE TABLE IF NOT EXISTS pruning (
    feed INTEGER PRIMARY KEY,
    minimum_index INTEGER NOT NULL,    -- bundles ending at or below it are gone
    updated INTEGER NOT NULL
);
"""



def snapshot_dir(db_path: Path | str) -> Path:
    """Snapshot files live next to the publisher database, one dir per feed id."""
    return Path(db_path).parent / "snapshots"


def mirror_snapshot_dir(mirror_db: Path | str) -> Path:
    """The snapshot a mirror bootstrapped from, kept to re-serve it as a relay;
    one dir per follow id (not ``snapshots``: ids are the mirror's own)."""
    return Path(mirror_db).parent / "mirror-snapshots"



def open_msgpack_stream(path: Path | str):
    """The snapshot file at ``path`` as a readable file of its msgpack stream:
    decompressed if the file is one zstd frame, else the file itself. For
    serving ``snapshot/<sha256>.msgpack`` (our own, already verified files)."""
    f = open(path, "rb")
    try:
        compressed = f.read(4) == ZSTD_MAGIC
        f.seek(0)
        if not compressed:
            return f
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(f, closefd=True, read_across_frames=True)
    except BaseException:
        f.close()
        raise

# ---- publisher side ----------------------------------------------------------

def _feed_row(conn: sqlite3.Connection, name: str, allow_pending: bool = False):
    row = feed_position(conn, name)
    if row is None:
        raise InputError(f"no feed named {name!r}")
    if row[5] is not None and not allow_pending:
        # A snapshot of a version no checkpoint serves yet could not be
        # verified by any mirror; snapshot once it is cosigned and served.
        raise InputError(f"feed {name!r} version {row[3]} is committed but not served yet (awaiting "
                         f"cosignatures: 'federation cosign run {name} --once'); snapshot it after that")
    return row[:5]


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def write_snapshot(db_path: Path | str, name: str, compress: bool = True,
                   progress: bool | None = None) -> SnapshotRef:
    """Write the active set of feed ``name`` at its current version as a snapshot.

    Streams rows in primary-key order from one read transaction (a WAL
    snapshot, so a concurrent publish cannot mix versions), to a temporary
    file, hashing as it goes. Order of writes, and what a crash leaves:

    1. temp file written and fsynced       -> a stray ``.tmp`` file, removed by
       the next ``write_snapshot`` (``store.tempfiles``)
    2. renamed to ``<sha256>.snap``         -> an unlisted file, ignored (rewriting
       the same version yields the same name when uncompressed or same zstd level)
    3. index row inserted (the "head")     -> the snapshot is served
    """
    db_path = Path(db_path)
    try:
        return _write_snapshot(db_path, name, compress, progress)
    except sqlite3.Error as e:  # the database could not grow (disk full) or be read: one line, kind storage
        mapped = storage_error(e, f"feed {name!r}: snapshot: database {db_path}")
        if mapped is None:
            raise
        raise mapped from e


def _write_snapshot(db_path: Path, name: str, compress: bool, progress: bool | None) -> SnapshotRef:
    wconn = connect(db_path)
    conn = None
    try:
        ensure_schema(wconn)
        conn = connect(db_path, readonly=True)
        conn.execute("BEGIN")
        feed_id, origin, size, version, count = _feed_row(conn, name)
        if version == 0:
            raise InputError(f"feed {name!r} has no published version to snapshot")
        bidx, bwidth = bundle_range(size)
        bundle = TileStore(conn, feed_id).get(ENTRIES, bidx, bwidth)
        if bundle is None:
            raise StorageError(f"feed {name!r}: last bundle {bidx}.p/{bwidth} is missing (pruned?)")
        outdir = snapshot_dir(db_path) / str(feed_id)
        try:
            outdir.mkdir(parents=True, exist_ok=True)
            remove_leftovers(outdir, "", ".tmp")  # what a killed writer left (never a live one's)
            fd, tmp = locked_tempfile(outdir, ".snapshot-", ".tmp")
        except OSError as e:
            raise StorageError(f"feed {name!r}: cannot write a snapshot in {outdir}: {e.strerror or e}") from None
        digest = hashlib.sha256()
        written = 0
        try:
            with os.fdopen(fd, "wb", closefd=False) as raw:
                class _Hashing:
                    def write(self, b):
                        nonlocal written
                        digest.update(b)
                        written += len(b)
                        return raw.write(b)

                    def flush(self):
                        raw.flush()

                sink = _Hashing()
                if compress:
                    import zstandard
                    cctx = zstandard.ZstdCompressor(level=3)
                    stream = cctx.stream_writer(sink, closefd=False)
                else:
                    stream = sink
                packer = msgpack.Packer(use_bin_type=True)
                stream.write(packer.pack({"v": SNAPSHOT_VERSION, "origin": origin, "size": size,
                                          "version": version, "count": count, "bundle": bundle}))
                bar = _progress(f"snapshot {name}", count, progress)
                rows = ActiveSet(conn, feed_id).records()
                n = 0
                buf = bytearray()
                while batch := rows.fetchmany(8192):
                    for t, v, c, labels in batch:
                        buf += packer.pack([t, v, c, labels.split(",") if labels else []])
                    stream.write(bytes(buf))
                    buf.clear()
                    n += len(batch)
                    bar.update(len(batch))
                bar.close()
                if n != count:
                    raise StorageError(f"feed {name!r}: {n} active rows, feed row says {count}")
                if compress:
                    stream.close()
                raw.flush()
                os.fsync(raw.fileno())
            sha = digest.hexdigest()
            os.replace(tmp, outdir / f"{sha}.snap")
        except OSError as e:  # the disk (full, read-only): one error line, the previous snapshots stay
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(f"feed {name!r}: cannot write a snapshot in {outdir}: {e.strerror or e}; "
                               "check the free space and the health of the disk") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        conn.execute("COMMIT")
        ref = SnapshotRef(sha, version, size, count, written, compress)
        with write_txn(wconn):
            wconn.execute("INSERT OR IGNORE INTO snapshots VALUES (?,?,?,?,?,?,?,?)",
                          (feed_id, sha, version, size, count, written, int(compress), int(time.time())))
        log.info("feed %s: snapshot of version %d (%d hashes, %d bytes) %s", name, version, count, written, sha)
        return ref
    finally:
        if conn is not None:
            conn.close()
        wconn.close()


def list_snapshots(conn: sqlite3.Connection, feed_id: int) -> list[SnapshotRef]:
    try:
        rows = conn.execute("SELECT sha256, version, size, count, bytes, compressed FROM snapshots"
                            " WHERE feed=? ORDER BY size", (feed_id,)).fetchall()
    except sqlite3.OperationalError:  # schema not created yet: no snapshots
        return []
    return [SnapshotRef(s, v, z, c, b, bool(x)) for s, v, z, c, b, x in rows]


def minimum_index(conn: sqlite3.Connection, feed_id: int) -> int:
    try:
        row = conn.execute("SELECT minimum_index FROM pruning WHERE feed=?", (feed_id,)).fetchone()
    except sqlite3.OperationalError:
        return 0
    return row[0] if row else 0


def prune(db_path: Path | str, name: str, minimum: int | None = None,
          retention_seconds: int | None = None, now: int | None = None) -> int:
    """Raise feed ``name``'s minimum index and delete the bundles below it.

    ``minimum`` defaults to the size of the newest snapshot; with
    ``retention_seconds``, to the newest snapshot at least that old, so
    withdrawn hashes stay fetchable for the stated window and no longer.
    The minimum must not exceed a listed snapshot's size (a new mirror must
    be able to start somewhere) and never decreases. Returns the new minimum.

    Writes, in one transaction: the ``pruning`` row (the denial takes effect
    for servers reading it), then the deletion of bundle rows. A crash rolls
    both back. The partial bundle of the feed's *current* size is kept on
    disk (the next publish extends it) but denied like the others.
    """
    conn = connect(db_path)
    try:
        ensure_schema(conn)
        with write_txn(conn):
            feed_id, _origin, size, _version, _count = _feed_row(conn, name, allow_pending=True)
            snaps = list_snapshots(conn, feed_id)
            if not snaps:
                raise InputError(f"feed {name!r} has no snapshot; write one first ('federation snapshot write')")
            if minimum is None:
                stamp = int(time.time()) if now is None else now
                cands = snaps
                if retention_seconds is not None:
                    created = dict(conn.execute("SELECT sha256, created FROM snapshots WHERE feed=?",
                                                (feed_id,)).fetchall())
                    cands = [s for s in snaps if created[s.sha256] <= stamp - retention_seconds]
                    if not cands:
                        raise InputError(f"feed {name!r}: no snapshot is older than {retention_seconds} s yet")
                minimum = cands[-1].size
            if minimum > snaps[-1].size:
                raise InputError(f"minimum index {minimum} is above the newest snapshot (size {snaps[-1].size})")
            old = minimum_index(conn, feed_id)
            if minimum < old:
                raise InputError(f"minimum index {minimum} is below the current one ({old}); it never decreases")
            conn.execute("INSERT OR REPLACE INTO pruning VALUES (?,?,?)", (feed_id, minimum, int(time.time())))
            deleted = TileStore(conn, feed_id).prune_bundles(minimum, keep=(size // TILE_WIDTH, size % TILE_WIDTH))
            log.info("feed %s: minimum index %d, %d bundles deleted", name, minimum, deleted)
        return minimum
    finally:
        conn.close()


# ---- mirror side: the snapshot a relay bootstrapped from ----------------------


def forget_snapshots(conn: sqlite3.Connection, feed_id: int) -> None:
    """Stop offering any snapshot of followed feed ``feed_id`` (a bootstrap
    replaced what it covered), inside the caller's transaction."""
    create_tables(conn, SCHEMA)
    conn.execute("DELETE FROM snapshots WHERE feed=?", (feed_id,))


def keep_mirror_snapshot(conn: sqlite3.Connection, feed_id: int, sha256: str, header, size_bytes: int,
                         compressed: bool) -> None:
    """List the snapshot a bootstrap just kept (``header``: its verified
    ``SnapshotHeader``) as followed feed ``feed_id``'s only one, in one
    transaction. The file must be in ``mirror_snapshot_dir`` already."""
    create_tables(conn, SCHEMA)
    with write_txn(conn):
        conn.execute("DELETE FROM snapshots WHERE feed=?", (feed_id,))
        conn.execute("INSERT INTO snapshots VALUES (?,?,?,?,?,?,?,?)",
                     (feed_id, sha256, header.version, header.size, header.count, size_bytes,
                      int(compressed), int(time.time())))


def _progress(desc: str, total: int, enabled: bool | None):
    """tqdm bar on a terminal; otherwise a log line every ~10%."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if enabled:
        from tqdm import tqdm
        return tqdm(desc=desc, total=total, unit=" hashes", unit_scale=True, leave=False)
    return _LogProgress(desc, total)


class _LogProgress:
    def __init__(self, desc: str, total: int):
        self.desc, self.total, self.n, self.next = desc, total, 0, max(total // 10, 1)

    def update(self, k: int) -> None:
        self.n += k
        if self.n >= self.next:
            log.info("%s: %d/%d hashes", self.desc, self.n, self.total)
            self.next += max(self.total // 10, 1)

    def close(self) -> None:
        pass
