"""Bootstrap a mirror from a snapshot, verified against the signed log.

A fresh mirror, or one that fell behind the publisher's pruned range, loads
the newest snapshot (``federation.snapshot``) instead of replaying the log,
then follows the log from the snapshot's tree size. The snapshot server is
never trusted. ``bootstrap_feed`` accepts the checkpoint ``C`` and proves the
snapshot's head through an ``acceptance.Acceptance`` (pure:
``core.headproof``); with ``a`` the snapshot's tree size, from hash tiles at
size ``C.size``:

1. the seal closing the snapshot's version (the last entry of its last
   bundle) is in the signed tree: an RFC 6962 inclusion proof to ``C.root``
   (``malformed`` otherwise);
2. the compact range at ``a`` (the Merkle state the mirror continues from),
   read from the tiles, is consistent with ``C``: an RFC 6962 consistency
   proof from ``root(a)`` to ``C.root``; and the bundle's entries, appended
   to the compact range at the bundle's start, reproduce ``root(a)``
   (``malformed`` otherwise);
3. the header's count equals the seal's (``digest`` otherwise).

Then ``load_snapshot`` streams the records into SQLite in primary-key order
and checks, before committing, that their LtHash16 equals the seal's digest
and their number its count (``digest`` otherwise, rolled back). The partial
hash tiles at ``a`` and the last bundle are stored so the mirror can append
and re-serve from there.

Order of writes (one transaction; a crash anywhere leaves the mirror as it
was before the bootstrap): rows, digest check, indexes, tiles, version row,
and last the ``follows`` head (compare-and-swap on the applied size).

The change stream sees a bootstrap as the difference between the old and
the new active set, in the same transaction: ``withdraw`` rows (reason
``rebootstrap``) for records the snapshot no longer holds, ``add`` rows for
new ones, ``relabel`` for changed labels. A consumer therefore never loses a
withdrawal that happened inside the pruned range, and a fresh mirror's
consumers see every record once. A bootstrapped mirror holds no entry
bundles below ``a``; ``federation verify`` replays from ``a`` (the
``base_size``/``base_compact`` stored on the feed).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from federation.core import entries as E
from federation.core.acceptance import Acceptance
from federation.core.checkpoint import Checkpoint
from federation.core.errors import DigestError, MalformedError, NothingNew, StorageError, TransportError
from federation.core.freshness import usable_time
from federation.core.headproof import VerifiedHead
from federation.core.layout import ENTRIES
from federation.core.lthash import ParallelSum
from federation.core.note import MAX_NOTE_BYTES, parse_vkey
from federation.net.fetcher import Fetcher
from federation.store.activeset import join_labels
from federation.store.db import create_tables, write_txn
from federation.store.mirror import Mirror
from federation.store.snapshot import MAX_INDEX_BYTES, SCHEMA as SNAPSHOT_SCHEMA, ZSTD_MAGIC, SnapshotHeader, \
    SnapshotReader, SnapshotRef, mirror_snapshot_dir, parse_index, _progress
from federation.store.tilestore import TileStore
from federation.sync.tilefetcher import TileFetcher

log = logging.getLogger("federation.bootstrap")

MAX_SNAPSHOT_BYTES = 16 << 30
PARALLEL_THRESHOLD = 50_000  # below this many records, worker start-up costs more than it saves


@dataclass(frozen=True)
class BootstrapResult:
    feed: str
    old_size: int
    size: int
    old_version: int
    version: int
    count: int
    snapshot: str
    seconds: float


# ---- loading (blocking; run in a thread) ---------------------------------------

_DROP_INDEXES = ("hashes_by_case",)
_INDEX_SQL = {
    "hashes_by_case": "CREATE INDEX IF NOT EXISTS hashes_by_case ON hashes (feed, case_id)",
}


LOAD_CACHE_KIB = 65536  # page cache while loading: bounded, and enough for sorted appends
SORT_CACHE_KIB = 16384  # per sorter thread while indexes are built


def _sort_pragmas(conn, sorting: bool) -> None:
    """Pragmas for building indexes (``sorting``) or for loading rows."""
    conn.execute(f"PRAGMA threads={(os.cpu_count() or 1) if sorting else 0}")
    conn.execute(f"PRAGMA cache_size=-{SORT_CACHE_KIB if sorting else LOAD_CACHE_KIB}")


@contextlib.contextmanager
def _pragmas_restored(conn):
    """Put the connection's cache size and sorter threads back on exit."""
    cache = conn.execute("PRAGMA cache_size").fetchone()[0]
    try:
        yield
    finally:
        conn.execute(f"PRAGMA cache_size={cache}")
        conn.execute("PRAGMA threads=0")


def load_snapshot(mirror: Mirror, name: str, expect_size: int, head: VerifiedHead, reader: SnapshotReader,
                  cp_note: bytes, cp: Checkpoint, workers: int | None = None,
                  progress: bool | None = None) -> int:
    """Replace feed ``name``'s active set with the snapshot's records, or change nothing.

    Rows go in in primary-key order (the snapshot's order) with the secondary
    indexes dropped, and the indexes are rebuilt after: SQLite's fast path.
    LtHash work runs in ``workers`` processes meanwhile. Returns the count.
    """
    conn = mirror.conn
    seal = head.seal
    if workers is None:
        workers = (os.cpu_count() or 1) if head.header.count >= PARALLEL_THRESHOLD else 0
    bar = _progress(f"bootstrap {name}", head.header.count, progress)
    with ParallelSum(workers) as summer, _pragmas_restored(conn), write_txn(conn):
        f = mirror.get(name)
        if f.applied_size != expect_size:
            raise StorageError(f"feed {name}: mirror moved from {expect_size} to {f.applied_size} during bootstrap")
        existing = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='hashes'")]
        # 1. rows (old ones out; the indexes are rebuilt once at the end)
        for ix in _DROP_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {ix}")
        # Keep the old active set aside for the change stream (step 3).
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS old_hashes (hash_type TEXT, value BLOB, case_id TEXT,"
                     " labels TEXT, PRIMARY KEY (hash_type, value, case_id)) WITHOUT ROWID")
        conn.execute("DELETE FROM temp.old_hashes")
        conn.execute("INSERT INTO temp.old_hashes SELECT hash_type, value, case_id, labels FROM hashes WHERE feed=?",
                     (f.id,))
        conn.execute("DELETE FROM hashes WHERE feed=?", (f.id,))
        _sort_pragmas(conn, sorting=False)
        n = 0
        insert = "INSERT INTO hashes VALUES (?,?,?,?,?,?,?)"
        try:
            for batch in reader.records():
                conn.executemany(insert, [(f.id, t, v, c, join_labels(labels), seal.version, seal.time)
                                          for t, v, c, labels in batch])
                # Elements are built here, not in the workers: sending bytes is
                # cheaper than re-encoding the records for them to parse.
                summer.add(E.elements_of(batch))
                n += len(batch)
                bar.update(len(batch))
            digest = summer.result()
        except (ValueError, TypeError, AttributeError) as e:
            # element(): a field too long for its u8 length, or a non-str label
            raise MalformedError(f"snapshot record cannot be an active record: {e}") from None
        finally:
            bar.close()
        # 2. the state digest and count, before anything is committed
        if n != seal.count or digest.digest() != seal.digest:
            raise DigestError(f"feed {name} snapshot of version {seal.version}: seal says {seal.count} hashes and "
                              f"digest {seal.digest[:8].hex()}..., snapshot holds {n} with digest "
                              f"{digest.digest()[:8].hex()}...")
        # 3. the change stream: the difference between the old and the new set
        _record_changes(conn, f.id, seal)
        # 3b. indexes rebuilt in one pass each. The LtHash workers are done, so
        #     SQLite's sorter may use the other cores; each sorter thread takes
        #     cache_size of memory, so the cache is cut to keep the peak where
        #     it was (measured at 10M: 17 s with 1 thread and 64 MiB, 9 s with
        #     2 threads and 16 MiB, same peak RSS).
        _sort_pragmas(conn, sorting=True)
        for ix in _DROP_INDEXES:
            if ix in existing:
                conn.execute(_INDEX_SQL[ix])
        # 4. tiles: old entry bundles out (their entries may be withdrawn ones), new
        #    partial tiles and the last bundle in; hash tiles of the old prefix stay valid.
        conn.execute("DELETE FROM tiles WHERE feed=? AND level=?", (f.id, ENTRIES))
        TileStore(conn, f.id).put(head.tiles)
        #    A snapshot kept from an earlier bootstrap no longer fits what is
        #    served (its bundles are gone): not offered any more (keep_snapshot
        #    offers the new one after the commit).
        create_tables(conn, SNAPSHOT_SCHEMA)
        conn.execute("DELETE FROM snapshots WHERE feed=?", (f.id,))
        conn.execute("INSERT OR REPLACE INTO versions VALUES (?,?,?,?,?,?)",
                     (f.id, seal.version, head.header.size, seal.time, n, int(time.time())))
        # 5. last, the head
        served = cp_note if head.header.size == cp.size else None
        now = int(time.time())
        sealed = usable_time(seal.time, now, f.max_age) or 0  # the seal's signed time (freshness)
        cur = conn.execute(
            "UPDATE follows SET verified_checkpoint=?, checkpoint=?, applied_size=?, compact=?, version=?,"
            " count=?, digest=?, updated=?, base_size=?, base_compact=?, fresh_time=max(coalesce(fresh_time, 0), ?)"
            " WHERE id=? AND applied_size=?",
            (cp_note, served, head.header.size, head.compact.to_bytes(), seal.version, n, seal.digest,
             now, head.header.size, head.compact.to_bytes(), sealed, f.id, expect_size))
        if cur.rowcount != 1:
            raise StorageError(f"feed {name} changed during bootstrap; retry")
    return n


def _record_changes(conn, feed: int, seal) -> None:
    """Change rows for old set -> new set (``temp.old_hashes`` -> ``hashes``)."""
    common = f"INSERT INTO changes (feed, version, action, hash_type, value, case_id, labels, reason, time) SELECT {feed}, {seal.version},"
    same_key = "x.hash_type=y.hash_type AND x.value=y.value AND x.case_id=y.case_id"
    conn.execute(f"{common} 'withdraw', y.hash_type, y.value, y.case_id, y.labels, 'rebootstrap', {seal.time}"
                 f" FROM temp.old_hashes y WHERE NOT EXISTS (SELECT 1 FROM hashes x WHERE x.feed={feed} AND {same_key})")
    conn.execute(f"{common} 'relabel', x.hash_type, x.value, x.case_id, x.labels, NULL, {seal.time}"
                 f" FROM hashes x JOIN temp.old_hashes y ON {same_key} WHERE x.feed={feed} AND x.labels != y.labels")
    conn.execute(f"{common} 'add', x.hash_type, x.value, x.case_id, x.labels, NULL, {seal.time}"
                 f" FROM hashes x WHERE x.feed={feed} AND NOT EXISTS (SELECT 1 FROM temp.old_hashes y WHERE {same_key})")
    conn.execute("DELETE FROM temp.old_hashes")


def keep_snapshot(mirror: Mirror, name: str, path: Path, sha256: str, header: SnapshotHeader) -> None:
    """Keep the snapshot a bootstrap just loaded, so the mirror can offer it as
    a relay (``snapshot.server_extension(mirror=True)``), replacing any older.

    Called after the bootstrap committed (which already withdrew any older
    snapshot's row). Order: file moved into place and fsynced, then its row,
    then older files removed. A crash leaves at worst a file without a row
    (never offered; removed by the next bootstrap), so a relay offers no
    snapshot and its fresh followers use their other upstreams. The file's
    bytes hash to ``sha256`` and its header was proved against the signed
    log by ``verify_head``.
    """
    f = mirror.get(name)
    folder = mirror_snapshot_dir(mirror.path) / str(f.id)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = folder / f"{sha256}.snap"
    os.replace(path, dest)
    dirfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    with dest.open("rb") as fh:
        compressed = fh.read(4) == ZSTD_MAGIC
    create_tables(mirror.conn, SNAPSHOT_SCHEMA)
    with write_txn(mirror.conn):
        mirror.conn.execute("DELETE FROM snapshots WHERE feed=?", (f.id,))
        mirror.conn.execute("INSERT INTO snapshots VALUES (?,?,?,?,?,?,?,?)",
                            (f.id, sha256, header.version, header.size, header.count, dest.stat().st_size,
                             int(compressed), int(time.time())))
    for old in folder.glob("*.snap"):
        if old != dest:
            old.unlink(missing_ok=True)


# ---- the I/O shell --------------------------------------------------------------

async def fetch_index(fetcher: Fetcher) -> tuple[list[SnapshotRef], int]:
    return parse_index(await fetcher.get("snapshot/index", MAX_INDEX_BYTES))


async def _download(fetcher: Fetcher, ref: SnapshotRef, dest: Path) -> None:
    """Stream ``snapshot/<sha256>`` to ``dest``; the bytes must hash to the name."""
    session = fetcher._session
    if session is None:
        raise TransportError("fetcher is not open")
    errors = []
    limit = min(ref.bytes, MAX_SNAPSHOT_BYTES)
    for prefix in fetcher.prefixes:
        url = f"{prefix}snapshot/{ref.sha256}"
        digest, n = hashlib.sha256(), 0
        try:
            async with fetcher.semaphore, session.get(url, headers=fetcher.headers,
                                                      timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as resp:
                if resp.status != 200:
                    raise TransportError(f"GET {url}: HTTP {resp.status}")
                with open(dest, "wb") as out:
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        n += len(chunk)
                        if n > limit:
                            raise TransportError(f"GET {url}: more than the {limit} bytes the index states")
                        digest.update(chunk)
                        out.write(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            errors.append(f"GET {url}: {type(e).__name__}: {e}")
            continue
        except TransportError as e:
            errors.append(str(e))
            continue
        if digest.hexdigest() != ref.sha256:
            raise MalformedError(f"snapshot from {url} hashes to {digest.hexdigest()}, not its name")
        return
    raise TransportError("; ".join(errors))


async def bootstrap_feed(mirror: Mirror, name: str, fetcher: Fetcher, workers: int | None = None,
                         progress: bool | None = None, policy=None) -> BootstrapResult | None:
    """Load the newest usable snapshot of feed ``name`` into the mirror.

    The checkpoint is accepted as for a log sync (``acceptance.Acceptance``:
    signature, the trust policy's quorum, rollback, fork), then the
    snapshot's head is proven against it before any record is loaded.
    Returns None when the mirror is already at the signed checkpoint.
    Raises ``TransportError`` when no snapshot newer than the mirror exists,
    a ``VerificationError`` when one fails verification (mirror unchanged).
    """
    t0 = time.perf_counter()
    if policy is not None:  # rotation.TrustPolicy: follow key rotations first, as sync_feed does
        await policy.refresh(fetcher)
    f = mirror.get(name)
    acc = Acceptance(f.origin, [parse_vkey(k) for k in f.vkeys], f.trusted_state(), quorum=policy is not None)
    signed = acc.open_checkpoint(await fetcher.get("checkpoint", MAX_NOTE_BYTES))
    fresh = policy.check(signed) if policy is not None else None
    try:
        cp = acc.accept_checkpoint(fresh)
    except NothingNew:
        return None
    refs, _minimum = await fetch_index(fetcher)
    usable = [r for r in refs if f.applied_size < r.size <= cp.size]
    if not usable:
        raise TransportError(f"feed {name}: no snapshot between size {f.applied_size} and {cp.size} is offered")
    ref = usable[-1]
    fd, tmp = tempfile.mkstemp(dir=mirror.path.parent, prefix=".snapshot-", suffix=".tmp")
    os.close(fd)
    try:
        await _download(fetcher, ref, Path(tmp))
        with open(tmp, "rb") as fh:
            reader = SnapshotReader(fh)
            header = reader.header
            async for (lvl, idx, w), data in TileFetcher(fetcher).hash_tiles(acc.tiles_for_head(header)):
                acc.add_tile(lvl, idx, w, data)
            head = acc.prove_head()
            n = await asyncio.to_thread(load_snapshot, mirror, name, f.applied_size, head, reader,
                                        signed.raw, cp, workers, progress)
        await asyncio.to_thread(keep_snapshot, mirror, name, Path(tmp), ref.sha256, header)
    finally:
        Path(tmp).unlink(missing_ok=True)
    dt = time.perf_counter() - t0
    log.info("feed %s: bootstrapped from snapshot %s: version %d, size %d, %d hashes in %.1f s",
             name, ref.sha256[:16], head.seal.version, header.size, n, dt)
    return BootstrapResult(name, f.applied_size, header.size, f.version, head.seal.version, n, ref.sha256, dt)
