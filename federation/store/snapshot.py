"""Snapshots of a feed's active set, and pruning of the entry bundles they cover.

A **snapshot** is the active set of a feed at one version, written as an
immutable file named by its SHA-256 (content-addressed), so any copy of it,
from any server, is the same bytes or is refused. Format (docs/PROTOCOL.md section 11)::

    file   := [zstd frame]( header || record* )
    header := msgpack map {"v": 1, "origin": str, "size": int, "version": int,
                           "count": int, "bundle": bin}
    record := msgpack array [type: str, hash: bin, case: str, labels: [str]]

Served as ``snapshot/<sha256>`` (the file as written, the name its SHA-256)
and ``snapshot/<sha256>.msgpack`` (its msgpack stream, decompressed: for a
client without zstd). The reader bounds the decompressed stream to the
header (at most ``MAX_HEADER_BYTES``) plus ``count`` records of at most
``MAX_RECORD_BYTES``, and checks each record is *well-formed* (the shape an
LtHash element needs); whether the records are the active set is proved by
the seal's count and digest.

``size`` is the tree size just after the seal of ``version``; ``bundle`` is
the log's last entry bundle at that size (tlog-tiles bytes, 1..256 entries,
the last one being that seal), so a mirror can check the seal by inclusion
proof even after the bundle itself was pruned. Records are sorted strictly
by ``(type, hash, case)`` as bytes: SQLite's primary-key order, and the
strictness makes the record list a set (LtHash would otherwise count a
duplicate twice).

Nothing in a snapshot is trusted: ``bootstrap`` verifies it against the
signed log (seal inclusion, state digest and count). The **index** that lists
snapshots is an unsigned hint for the same reason.

**Pruning** (tlog-tiles "minimum index"): once a snapshot covers them, entry
bundles whose end index is at most the feed's minimum index are deleted and
answered with ``410 Gone``. Hash tiles stay, so consistency and inclusion can
still be proved.

Invariants: a snapshot file is listed in the index only after it is fully
written and fsynced; the minimum index never exceeds the size of a listed
snapshot; it never decreases.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import msgpack
from aiohttp import web

from federation.core.bounded import check_int, json_loads
from federation.store.db import connect, write_txn
from federation.core.errors import GoneError, InputError, MalformedError, NotFoundError, StorageError
from federation.core.layout import ENTRIES, TILE_WIDTH

log = logging.getLogger("federation.snapshot")

SNAPSHOT_VERSION = 1
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The header holds one bundle (at most 256 * (2 + 4096) = 1,049,088 bytes, docs/PROTOCOL.md
# section 2) and an origin (under 64 KiB, the note limit): 2 MiB bounds it with room.
MAX_HEADER_BYTES = 2 << 20
MAX_INDEX_BYTES = 1 << 20
# A valid record is at most 767 bytes of msgpack in the smallest forms (a
# 144-byte PhotoDNA hash, a 64-character case and 16 labels of 32 characters),
# and 833 in the largest (str32/bin32/array32 headers): 1,024 bounds any encoding.
MAX_RECORD_BYTES = 1024
# Well-formed records (docs/PROTOCOL.md section 11): what the LtHash element
# encoding (u8 lengths) can hold.
MAX_ELEMENT_FIELD = 255

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


@dataclass(frozen=True)
class SnapshotRef:
    """One index entry. Unauthenticated: a hint for which file to fetch."""

    sha256: str
    version: int
    size: int
    count: int
    bytes: int
    compressed: bool


@dataclass(frozen=True)
class SnapshotHeader:
    origin: str
    size: int
    version: int
    count: int
    bundle: bytes


def bundle_range(size: int) -> tuple[int, int]:
    """(index, width) of the last entry bundle of a tree of ``size`` > 0."""
    index = (size - 1) // TILE_WIDTH
    return index, size - index * TILE_WIDTH


def snapshot_dir(db_path: Path | str) -> Path:
    """Snapshot files live next to the publisher database, one dir per feed id."""
    return Path(db_path).parent / "snapshots"


def mirror_snapshot_dir(mirror_db: Path | str) -> Path:
    """The snapshot a mirror bootstrapped from, kept to re-serve it as a relay;
    one dir per follow id (not ``snapshots``: ids are the mirror's own)."""
    return Path(mirror_db).parent / "mirror-snapshots"


def relay_minimum_index(base_size: int) -> int:
    """A mirror bootstrapped at ``base_size`` holds the bundle ending there and
    none before it: bundles ending at or below this index are gone."""
    return bundle_range(base_size)[0] * TILE_WIDTH if base_size > 0 else 0


# ---- pure: index and file parsing --------------------------------------------

def encode_index(refs: list[SnapshotRef], minimum_index: int) -> bytes:
    body = {"snapshots": [asdict(r) for r in refs], "minimum_index": minimum_index}
    return json.dumps(body, sort_keys=True).encode() + b"\n"


def parse_index(data: bytes) -> tuple[list[SnapshotRef], int]:
    """Parse a snapshot index; raises ``MalformedError``. Sorted by size.

    Bounded before parsing (``bounded.json_loads``: size, depth, integers
    that fit SQLite, no ``1e400``/``NaN``); every number must be a JSON
    integer >= 0 and ``compressed`` a JSON boolean (what ``encode_index``
    writes), so nothing is coerced.
    """
    body = json_loads(data, "snapshot index", max_bytes=MAX_INDEX_BYTES)
    if not isinstance(body, dict) or not isinstance(body.get("snapshots"), list):
        raise MalformedError("snapshot index: want a JSON object with a 'snapshots' list")
    refs = []
    for i, r in enumerate(body["snapshots"]):
        where = f"snapshot index entry {i}"
        if not isinstance(r, dict):
            raise MalformedError(f"{where}: not a JSON object")
        sha = r.get("sha256")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise MalformedError(f"{where}: bad sha256 {str(sha)[:80]!r}")
        nums = [check_int(r.get(k), f"{where}: {k}", 0, error=MalformedError)
                for k in ("version", "size", "count", "bytes")]
        if type(r.get("compressed")) is not bool:
            raise MalformedError(f"{where}: compressed must be true or false")
        refs.append(SnapshotRef(sha, *nums, r["compressed"]))
    minimum = check_int(body.get("minimum_index", 0), "snapshot index: minimum_index", 0, error=MalformedError)
    return sorted(refs, key=lambda r: r.size), minimum


class _Budget:
    """A read-only file object that refuses to hand out more than ``limit``
    bytes in total: the decompressed size a snapshot may have. The check runs
    after each read, so at most one ``read_size`` chunk beyond the bound is
    ever held (memory stays bounded whatever the compression ratio)."""

    def __init__(self, fileobj, already: int, limit: int, why: str):
        self.fileobj, self.n, self.limit, self.why = fileobj, already, limit, why

    def read(self, size: int) -> bytes:
        chunk = self.fileobj.read(size)
        self.n += len(chunk)
        if self.n > self.limit:
            raise MalformedError(f"snapshot is larger decompressed than the {self.limit} bytes {self.why}")
        return chunk


class SnapshotReader:
    """Streams a snapshot file: header first, then records in batches.

    Pure apart from reading the file object it is given. Raises
    ``MalformedError`` for anything that does not parse, is out of order or
    out of range; it does not judge whether the content is *true* (that is
    ``bootstrap``'s job, against the signed log).

    Bounded: before the header is read, at most ``MAX_HEADER_BYTES`` plus
    one read; after it, the header's size plus ``count`` records of at most
    ``MAX_RECORD_BYTES`` each (``bootstrap`` checks the header's count
    against the signed seal before it reads any record). A zstd
    decompression bomb therefore fails as ``malformed`` at that bound, having
    held no more than one ``read_size`` chunk and one record at a time.
    """

    def __init__(self, fileobj, read_size: int = 1 << 20):
        head = fileobj.read(4)
        if head == ZSTD_MAGIC:
            import zstandard
            fileobj.seek(0)
            # RFC 8878: the stream is what the frames decompress to, one after the other.
            fileobj = zstandard.ZstdDecompressor().stream_reader(fileobj, read_size=read_size,
                                                                 read_across_frames=True)
            head = b""
        self._file = _Budget(fileobj, len(head), MAX_HEADER_BYTES + read_size,
                             "a snapshot header may take")
        self._read_size = read_size
        # Complete objects are consumed before the next chunk is fed, so the
        # buffer holds at most one partial object (<= the header) and a chunk.
        self._unpacker = msgpack.Unpacker(raw=False, use_list=True,
                                          max_buffer_size=MAX_HEADER_BYTES + 2 * read_size + (64 << 10),
                                          max_bin_len=MAX_HEADER_BYTES, max_str_len=4096,
                                          max_array_len=MAX_ELEMENT_FIELD, max_map_len=16)
        if head:
            self._unpacker.feed(head)
        self.header = self._read_header()
        header_bytes = self._unpacker.tell()
        if header_bytes > MAX_HEADER_BYTES:
            raise MalformedError(f"snapshot header is {header_bytes} bytes, over {MAX_HEADER_BYTES}")
        self._file.limit = header_bytes + self.header.count * MAX_RECORD_BYTES
        self._file.why = (f"its header allows ({self.header.count} records of at most {MAX_RECORD_BYTES} bytes "
                          "after the header)")

    def _objects(self) -> Iterator:
        try:
            while True:
                for obj in self._unpacker:
                    yield obj
                chunk = self._file.read(self._read_size)
                if not chunk:
                    return
                self._unpacker.feed(chunk)
        except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as e:
            raise MalformedError(f"snapshot is not valid msgpack: {e}") from None
        except MalformedError:
            raise
        except Exception as e:  # zstandard.ZstdError has no stable import path across versions
            if type(e).__name__ == "ZstdError":
                raise MalformedError(f"snapshot is not valid zstd: {e}") from None
            raise

    def _read_header(self) -> SnapshotHeader:
        self._objects_it = self._objects()
        h = next(self._objects_it, None)
        keys = ["v", "origin", "size", "version", "count", "bundle"]
        if not isinstance(h, dict) or list(h) != keys:
            raise MalformedError(f"snapshot header must be a map with keys {keys}")
        if h["v"] != SNAPSHOT_VERSION:
            raise MalformedError(f"unsupported snapshot version {h['v']!r}")
        for k in ("size", "version", "count"):
            if type(h[k]) is not int or h[k] < 0:
                raise MalformedError(f"snapshot header {k} {h[k]!r} is not a non-negative integer")
        if h["size"] < 1 or h["version"] < 1:
            raise MalformedError("snapshot header: size and version must be at least 1")
        if type(h["origin"]) is not str or type(h["bundle"]) is not bytes:
            raise MalformedError("snapshot header: origin must be str and bundle bin")
        return SnapshotHeader(h["origin"], h["size"], h["version"], h["count"], h["bundle"])

    def records(self, batch: int = 8192) -> Iterator[list[tuple[str, bytes, str, tuple[str, ...]]]]:
        """Yield batches of records ``(type, hash, case, labels)``, checking
        shape and strict ascending key order. At most ``header.count`` records
        are read; more or fewer is ``MalformedError``."""
        if self._file.n > self._file.limit:  # the read that completed the header went past it
            raise MalformedError(f"snapshot is larger decompressed than the {self._file.limit} bytes "
                                 f"{self._file.why}")
        out: list = []
        prev: tuple | None = None
        n = 0
        limit = self.header.count
        for rec in self._objects_it:
            # Cheap shape checks only: whether each record is a valid, active
            # record is proved by the state digest, not by re-running entry
            # validation on millions of rows.
            if type(rec) is not list or len(rec) != 4:
                raise MalformedError(f"snapshot record {n} is not a 4-element array")
            t, v, c, labels = rec
            if type(t) is not str or type(v) is not bytes or type(c) is not str or type(labels) is not list \
                    or not all(type(label) is str for label in labels):
                raise MalformedError(f"snapshot record {n} has wrong field types")
            # (A field over MAX_ELEMENT_FIELD bytes fails in entries.element(), still as malformed.)
            key = (t, v, c)
            if prev is not None and not prev < key:
                raise MalformedError(f"snapshot record {n} is not after record {n - 1} in key order")
            prev = key
            n += 1
            if n > limit:
                raise MalformedError(f"snapshot holds more than the {limit} records its header states")
            out.append((t, v, c, tuple(labels)))
            if len(out) == batch:
                yield out
                out = []
        if out:
            yield out
        if n != limit:
            raise MalformedError(f"snapshot holds {n} records, its header states {limit}")


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
    row = conn.execute("SELECT id, origin, size, version, count, pending_checkpoint FROM feeds WHERE name=?",
                       (name,)).fetchone()
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

    1. temp file written and fsynced       -> a stray ``.tmp`` file, ignored
    2. renamed to ``<sha256>.snap``         -> an unlisted file, ignored (rewriting
       the same version yields the same name when uncompressed or same zstd level)
    3. index row inserted (the "head")     -> the snapshot is served
    """
    db_path = Path(db_path)
    wconn = connect(db_path)
    ensure_schema(wconn)
    conn = connect(db_path, readonly=True)
    try:
        conn.execute("BEGIN")
        feed_id, origin, size, version, count = _feed_row(conn, name)
        if version == 0:
            raise InputError(f"feed {name!r} has no published version to snapshot")
        bidx, bwidth = bundle_range(size)
        row = conn.execute("SELECT data FROM tiles WHERE feed=? AND level=? AND idx=? AND width=?",
                           (feed_id, ENTRIES, bidx, bwidth)).fetchone()
        if row is None:
            raise StorageError(f"feed {name!r}: last bundle {bidx}.p/{bwidth} is missing (pruned?)")
        outdir = snapshot_dir(db_path) / str(feed_id)
        outdir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=outdir, suffix=".tmp")
        digest = hashlib.sha256()
        written = 0
        try:
            with os.fdopen(fd, "wb") as raw:
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
                                          "version": version, "count": count, "bundle": row[0]}))
                bar = _progress(f"snapshot {name}", count, progress)
                rows = conn.execute("SELECT hash_type, value, case_id, labels FROM hashes WHERE feed=?"
                                    " ORDER BY hash_type, value, case_id", (feed_id,))
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
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        conn.execute("COMMIT")
        ref = SnapshotRef(sha, version, size, count, written, compress)
        with write_txn(wconn):
            wconn.execute("INSERT OR IGNORE INTO snapshots VALUES (?,?,?,?,?,?,?,?)",
                          (feed_id, sha, version, size, count, written, int(compress), int(time.time())))
        log.info("feed %s: snapshot of version %d (%d hashes, %d bytes) %s", name, version, count, written, sha)
        return ref
    finally:
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
                    created = dict(conn.execute("SELECT sha256, created FROM snapshots WHERE feed=?", (feed_id,)).fetchall())
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
            keep_idx, keep_w = size // TILE_WIDTH, size % TILE_WIDTH
            cur = conn.execute(
                "DELETE FROM tiles WHERE feed=? AND level=? AND idx * ? + width <= ? AND NOT (idx=? AND width=?)",
                (feed_id, ENTRIES, TILE_WIDTH, minimum, keep_idx, keep_w))
            log.info("feed %s: minimum index %d, %d bundles deleted", name, minimum, cur.rowcount)
        return minimum
    finally:
        conn.close()


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


# ---- serving (an extension of server.create_app) ------------------------------

SNAPSHOT_SOURCES = web.AppKey("snapshot_sources", list)  # [_ServedSnapshots], first match wins


class _ServedSnapshots:
    """Snapshots and minimum indexes of one database's feeds, for serving."""

    def __init__(self, db_path: Path, mirror: bool, names: list[str] | None):
        self.db_path, self.mirror = db_path, mirror
        self.only = None if names is None else set(names)
        self.files = mirror_snapshot_dir(db_path) if mirror else snapshot_dir(db_path)
        self.conn: sqlite3.Connection | None = None

    def open(self) -> None:
        if not self.mirror:  # (a mirror database gets the table when it keeps a snapshot)
            c = connect(self.db_path)  # read-write once, so the schema exists for readers
            ensure_schema(c)
            c.close()
        self.conn = connect(self.db_path, readonly=True)

    def feed_id(self, name: str) -> int | None:
        if self.conn is None or (self.only is not None and name not in self.only):
            return None
        table = "follows" if self.mirror else "feeds"
        row = self.conn.execute(f"SELECT id FROM {table} WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def minimum(self, fid: int) -> int:
        if self.mirror:
            base = self.conn.execute("SELECT base_size FROM follows WHERE id=?", (fid,)).fetchone()[0]
            return relay_minimum_index(base)
        return minimum_index(self.conn, fid)


def server_extension(db_path: Path | str, mirror: bool = False, names: list[str] | None = None):
    """``install(app)`` adding, for feeds of the publisher database ``db_path``
    (with ``mirror``: the followed feeds ``names``, all when None, of a mirror
    database, as a relay re-serves them):

    * ``GET /feeds/NAME/snapshot/index`` -- JSON ``{"snapshots": [...], "minimum_index": N}``,
    * ``GET /feeds/NAME/snapshot/<sha256>`` -- the snapshot file (immutable),
    * ``GET /feeds/NAME/snapshot/<sha256>.msgpack`` -- its msgpack stream,
      decompressed (immutable; the file itself when it is not compressed),
    * a middleware answering ``410 Gone`` for entry bundles whose end index is
      at most the feed's minimum index (tlog-tiles pruning). It runs before
      the tile handler, so the server's in-memory tile cache cannot leak them.

    A relay offers the snapshot it bootstrapped from (``bootstrap`` keeps it)
    and its minimum index is where that left it (``relay_minimum_index``), so
    its own fresh followers bootstrap from it as they would from the origin.
    Installed for several databases, the first that has the feed answers.
    """
    import re

    from federation.core.layout import parse_tile_path

    source = _ServedSnapshots(Path(db_path), mirror, names)
    key = SNAPSHOT_SOURCES
    sha_re = re.compile(r"[0-9a-f]{64}")  # fullmatch

    def find(app: web.Application, name: str) -> tuple[_ServedSnapshots, int] | tuple[None, None]:
        for src in app[key]:
            fid = src.feed_id(name)
            if fid is not None:
                return src, fid
        return None, None

    async def index(request: web.Request) -> web.Response:
        src, fid = find(request.app, request.match_info["name"])
        if src is None:
            raise NotFoundError("no such feed")
        body = encode_index(list_snapshots(src.conn, fid), src.minimum(fid))
        return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "public, max-age=2"})

    async def snapshot_file(request: web.Request) -> web.StreamResponse:
        sha = request.match_info["sha"]
        # <sha256>.msgpack: the same snapshot's msgpack stream without compression
        # (docs/PROTOCOL.md section 11), for clients that cannot read zstd.
        sha, raw = (sha[:-len(".msgpack")], True) if sha.endswith(".msgpack") else (sha, False)
        src, fid = find(request.app, request.match_info["name"])
        refs = [] if src is None or not sha_re.fullmatch(sha) else [r for r in list_snapshots(src.conn, fid)
                                                                     if r.sha256 == sha]
        path = src.files / str(fid) / f"{sha}.snap" if refs else None
        if path is None or not path.exists():
            raise NotFoundError("no such snapshot")
        headers = {"Cache-Control": "public, max-age=31536000, immutable", "Content-Type": "application/octet-stream"}
        if not (raw and refs[0].compressed):
            return web.FileResponse(path, headers=headers)
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        if request.method != "HEAD":
            stream = await asyncio.to_thread(open_msgpack_stream, path)
            try:
                while chunk := await asyncio.to_thread(stream.read, 1 << 20):
                    await resp.write(chunk)
            finally:
                stream.close()
        await resp.write_eof()
        return resp

    @web.middleware
    async def deny_pruned(request: web.Request, handler):
        path = request.path
        if "/tile/entries/" in path and path.startswith("/feeds/"):
            name, _, rest = path[len("/feeds/"):].partition("/")
            try:
                _level, idx, width = parse_tile_path(rest)
            except MalformedError:
                return await handler(request)
            src, fid = find(request.app, name)
            if src is not None and idx * TILE_WIDTH + width <= src.minimum(fid):
                raise GoneError("entry bundle pruned: below the feed's minimum index; "
                                "bootstrap from a snapshot (see snapshot/index)")
        return await handler(request)

    def install(app: web.Application) -> None:
        async def open_conn(app: web.Application):
            source.open()
            yield
            source.conn.close()

        app.cleanup_ctx.append(open_conn)
        if key in app:  # routes and middleware are already there: one more database
            app[key].append(source)
            return
        app[key] = [source]
        app.middlewares.append(deny_pruned)
        app.router.add_get("/feeds/{name}/snapshot/index", index)
        app.router.add_get("/feeds/{name}/snapshot/{sha}", snapshot_file)

    return install
