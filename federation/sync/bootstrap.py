"""Bootstrap a mirror from a snapshot, verified against the signed log.

A fresh mirror, or one that fell behind the publisher's pruned range, loads
the newest snapshot (``core.snapshot_format``) instead of replaying the log,
then follows the log from the snapshot's tree size. The snapshot server is
never trusted. ``bootstrap_feed`` accepts the checkpoint ``C`` and proves the
snapshot's head through an ``acceptance.Acceptance`` (pure:
``core.headproof``, whose docstring lists the three proofs: the seal is in
the signed tree, the compact range at the snapshot's size is consistent with
it, and the header's count is the seal's).

Then ``load_snapshot`` streams the records into SQLite in primary-key order
and checks, before committing, that their LtHash16 equals the seal's digest
and their number its count (``digest`` otherwise, rolled back). The partial
hash tiles at the snapshot's size and the last bundle are stored so the mirror can append
and re-serve from there.

Order of writes (one transaction; a crash anywhere leaves the mirror as it
was before the bootstrap): rows, digest check, indexes, tiles, version row,
and last the ``follows`` head (compare-and-swap on the applied size). Every
write goes through the store that owns its table (``ActiveSet``,
``TileStore``, ``store.snapshots``, and the mirror's ``record_replacement``
and ``install_snapshot_head``); this module keeps the order.

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
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from federation.core import entries as E
from federation.core.acceptance import Acceptance
from federation.core.checkpoint import Checkpoint
from federation.core.errors import DigestError, MalformedError, NothingNew, StorageError, TransportError
from federation.core.headproof import VerifiedHead
from federation.store.lthash_workers import ParallelSum
from federation.core.note import MAX_NOTE_BYTES, parse_vkey
from federation.core.snapshot_format import MAX_INDEX_BYTES, ZSTD_MAGIC, SnapshotHeader, SnapshotReader, SnapshotRef, \
    max_snapshot_bytes, parse_index
from federation.net.fetcher import Fetcher
from federation.store.activeset import ActiveSet
from federation.store.db import finish_in_thread, write_txn
from federation.store.mirror import Mirror
from federation.store.snapshots import _progress, forget_snapshots, keep_mirror_snapshot, mirror_snapshot_dir
from federation.store.tempfiles import locked_tempfile, remove_leftovers
from federation.store.tilestore import TileStore
from federation.sync.tilefetcher import TileFetcher

log = logging.getLogger("federation.bootstrap")

MAX_SNAPSHOT_BYTES = 16 << 30
# A snapshot download's deadline (``snapshot_deadline``): 20 s to start, then
# at least 64 KiB/s (512 kbit/s, a slow link) on average.
SNAPSHOT_START_SECONDS = 20.0
MIN_SNAPSHOT_RATE = 64 << 10
PARALLEL_THRESHOLD = 50_000  # below this many records, worker start-up costs more than it saves
LEFTOVER_PREFIX, LEFTOVER_SUFFIX = ".snapshot-", ".tmp"  # a download in progress, next to the mirror db


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
        active = ActiveSet(conn, f.id)
        existing = active.indexes()
        # 1. rows (old ones out; the indexes are rebuilt once at the end)
        active.drop_indexes()
        # Keep the old active set aside for the change stream (step 3).
        active.set_aside()
        _sort_pragmas(conn, sorting=False)
        n = 0
        try:
            for batch in reader.records():
                active.insert_records(batch, seal.version, seal.time)
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
        mirror.record_replacement(f.id, seal.version, seal.time)
        # 3b. indexes rebuilt in one pass each. The LtHash workers are done, so
        #     SQLite's sorter may use the other cores; each sorter thread takes
        #     cache_size of memory, so the cache is cut to keep the peak where
        #     it was (measured at 10M: 17 s with 1 thread and 64 MiB, 9 s with
        #     2 threads and 16 MiB, same peak RSS).
        _sort_pragmas(conn, sorting=True)
        active.rebuild_indexes(existing)
        # 4. tiles: old entry bundles out (their entries may be withdrawn ones), new
        #    partial tiles and the last bundle in; hash tiles of the old prefix stay valid.
        tiles = TileStore(conn, f.id)
        tiles.delete_bundles()
        tiles.put(head.tiles)
        #    A snapshot kept from an earlier bootstrap no longer fits what is
        #    served (its bundles are gone): not offered any more (keep_snapshot
        #    offers the new one after the commit).
        forget_snapshots(conn, f.id)
        # 5. last, the version row and the head (compare-and-swap on expect_size)
        served = cp_note if head.header.size == cp.size else None
        mirror.install_snapshot_head(f, expect_size, cp_note, served, head.header.size, head.compact, seal, n)
    return n


def keep_snapshot(mirror: Mirror, name: str, path: Path, sha256: str, header: SnapshotHeader) -> None:
    """Keep the snapshot a bootstrap just loaded, so the mirror can offer it as
    a relay (``net.snapshots.server_extension(mirror=True)``), replacing any older.

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
    keep_mirror_snapshot(mirror.conn, f.id, sha256, header, dest.stat().st_size, compressed)
    for old in folder.glob("*.snap"):
        if old != dest:
            old.unlink(missing_ok=True)


# ---- the I/O shell --------------------------------------------------------------

async def fetch_index(fetcher: Fetcher) -> tuple[list[SnapshotRef], int]:
    return parse_index(await fetcher.get("snapshot/index", MAX_INDEX_BYTES))


async def _download(fetcher: Fetcher, ref: SnapshotRef, dest: Path, signed_size: int) -> None:
    """Stream ``snapshot/<sha256>`` to ``dest``; the bytes must hash to the name.

    Bounded in size by the signed tree (``max_snapshot_bytes`` of
    ``ref.size``, which the caller checked is at most ``signed_size``, the
    accepted checkpoint's), not only by the unsigned index's ``bytes``: a
    hostile relay cannot fill the disk before the hash is checked. Bounded in
    time by ``snapshot_deadline``: a relay dripping bytes cannot hold a fresh
    follower; past it, the next upstream is tried.
    """
    session = fetcher._session
    if session is None:
        raise TransportError("fetcher is not open")
    if ref.size > signed_size:
        raise TransportError(f"snapshot {ref.sha256[:16]} is of size {ref.size}, beyond the signed tree "
                             f"({signed_size})")
    errors = []
    bound = max_snapshot_bytes(ref.size)
    limit = min(ref.bytes, MAX_SNAPSHOT_BYTES, bound)
    why = "the index states" if limit == ref.bytes else f"a snapshot of a {ref.size}-entry tree can take"
    deadline = snapshot_deadline(limit)
    timeout = aiohttp.ClientTimeout(total=deadline, sock_connect=10, sock_read=60)
    for prefix in fetcher.prefixes:
        url = f"{prefix}snapshot/{ref.sha256}"
        digest, n = hashlib.sha256(), 0
        try:
            async with fetcher.semaphore, session.get(url, headers=fetcher.headers, timeout=timeout) as resp:
                if resp.status != 200:
                    raise TransportError(f"GET {url}: HTTP {resp.status}")
                with _local(dest, "wb") as out:
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        n += len(chunk)
                        if n > limit:
                            raise TransportError(f"GET {url}: more than the {limit} bytes {why}")
                        digest.update(chunk)
                        _write_local(out, chunk, dest)
        except asyncio.TimeoutError:
            errors.append(f"GET {url}: not complete within {deadline:.0f} s ({n} of at most {limit} bytes; "
                          f"a snapshot must arrive at {MIN_SNAPSHOT_RATE >> 10} KiB/s or faster)")
            continue
        except (aiohttp.ClientError, OSError) as e:
            errors.append(f"GET {url}: {type(e).__name__}: {e}")
            continue
        except TransportError as e:
            errors.append(str(e))
            continue
        if digest.hexdigest() != ref.sha256:
            raise MalformedError(f"snapshot from {url} hashes to {digest.hexdigest()}, not its name")
        return
    raise TransportError("; ".join(errors))


def _local(path: Path, mode: str):
    """``open`` of our own file: its failure is ``storage``, not the upstream's."""
    try:
        return open(path, mode, buffering=0)  # unbuffered: a full disk fails the write, not a later close
    except OSError as e:
        raise StorageError(f"cannot write the snapshot download {path}: {e.strerror or e}") from None


def _write_local(out, chunk: bytes, path: Path) -> None:
    """Write all of ``chunk`` to the unbuffered ``out``. A disk that is
    nearly full (or a file size limit) accepts part of a write without an
    error -- the next write fails -- so the rest is written until it does:
    the file never holds less than what was hashed. A full disk is ours to
    report (``storage``), not a failing upstream."""
    view = memoryview(chunk)
    try:
        while view:
            n = out.write(view)
            if not n:
                raise StorageError(f"cannot write the snapshot download {path}: the disk accepts no more bytes")
            view = view[n:]
    except OSError as e:
        raise StorageError(f"cannot write the snapshot download {path}: {e.strerror or e}; check the free space "
                           "and the health of the disk") from None


def snapshot_deadline(limit: int) -> float:
    """Seconds a snapshot download of at most ``limit`` bytes may take: a
    start-up allowance plus the time at ``MIN_SNAPSHOT_RATE`` (a 1 GiB
    snapshot gets about 4.5 h, a 4 KiB one 20 s)."""
    return SNAPSHOT_START_SECONDS + limit / MIN_SNAPSHOT_RATE


def remove_leftovers_of(mirror: Mirror) -> list[Path]:
    """Remove the snapshot downloads that killed bootstraps left next to the
    mirror database (``store.tempfiles``: never one a live bootstrap holds)."""
    return remove_leftovers(mirror.path.parent, LEFTOVER_PREFIX, LEFTOVER_SUFFIX)


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
    # Locked while this bootstrap uses it: a kill leaves it to the next start
    # (``remove_leftovers``), a live bootstrap in another process keeps it.
    fd, tmp = locked_tempfile(mirror.path.parent, LEFTOVER_PREFIX, LEFTOVER_SUFFIX)
    try:
        await _download(fetcher, ref, Path(tmp), cp.size)
        with open(tmp, "rb") as fh:
            reader = SnapshotReader(fh)
            header = reader.header
            async for (lvl, idx, w), data in TileFetcher(fetcher).hash_tiles(acc.tiles_for_head(header)):
                acc.add_tile(lvl, idx, w, data)
            head = acc.prove_head()
            n = await finish_in_thread(load_snapshot, mirror, name, f.applied_size, head, reader,
                                        signed.raw, cp, workers, progress)
        await finish_in_thread(keep_snapshot, mirror, name, Path(tmp), ref.sha256, header)
    finally:
        Path(tmp).unlink(missing_ok=True)
        os.close(fd)
    dt = time.perf_counter() - t0
    log.info("feed %s: bootstrapped from snapshot %s: version %d, size %d, %d hashes in %.1f s",
             name, ref.sha256[:16], head.seal.version, header.size, n, dt)
    return BootstrapResult(name, f.applied_size, header.size, f.version, head.seal.version, n, ref.sha256, dt)
