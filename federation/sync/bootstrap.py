"""Bootstrap a mirror from a snapshot, verified against the signed log.

A fresh mirror, or one that fell behind the publisher's pruned range, loads
the newest snapshot (``core.snapshot_format``) instead of replaying the log,
then follows the log from the snapshot's tree size. The snapshot server is
never trusted. With ``C`` the verified checkpoint and ``a`` the snapshot's
tree size, ``verify_head`` (pure) proves from hash tiles at size ``C.size``:

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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from federation.core import entries as E
from federation.store.activeset import ActiveSet
from federation.core.checkpoint import Checkpoint, open_checkpoint
from federation.store.db import write_txn
from federation.core.errors import DigestError, MalformedError, NothingNew, StorageError, TransportError
from federation.net.fetcher import Fetcher
from federation.core.layout import ENTRIES, TILE_WIDTH, tile_path
from federation.core.lthash import ParallelSum
from federation.core.merkle import CompactRange, consistency_proof, inclusion_proof, leaf_hash, verify_consistency, verify_inclusion
from federation.store.mirror import Mirror
from federation.core.note import MAX_NOTE_BYTES, parse_vkey
from federation.core.snapshot_format import MAX_INDEX_BYTES, ZSTD_MAGIC, SnapshotHeader, SnapshotReader, SnapshotRef, \
    bundle_range, parse_index
from federation.store.snapshots import _progress, forget_snapshots, keep_mirror_snapshot, mirror_snapshot_dir
from federation.core.tiles import TileHashes, needed_tiles, parse_bundle, parse_hash_tile
from federation.store.tilestore import TileStore
from federation.core import verify as V

log = logging.getLogger("federation.bootstrap")

MAX_TILE_BYTES = 256 * 32
MAX_SNAPSHOT_BYTES = 16 << 30
PARALLEL_THRESHOLD = 50_000  # below this many records, worker start-up costs more than it saves


@dataclass(frozen=True)
class VerifiedHead:
    """A snapshot header proven against a signed checkpoint."""

    header: SnapshotHeader
    seal: E.Seal
    compact: CompactRange  # at header.size
    tiles: dict[tuple[int, int, int], bytes]  # partial hash tiles at header.size, and the last bundle


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


# ---- pure verification --------------------------------------------------------

def _compact_nodes(size: int) -> list[tuple[int, int]]:
    """[start, end) of the perfect subtrees of a tree of ``size``, largest first."""
    out, start = [], 0
    for k in range(size.bit_length() - 1, -1, -1):
        if size >> k & 1:
            out.append((start, start + (1 << k)))
            start += 1 << k
    return out


def _head_proofs(th: TileHashes, header: SnapshotHeader, cp: Checkpoint):
    """Everything ``verify_head`` reads from tiles: the compact ranges at the
    snapshot's size and at the start of its last bundle, the consistency
    proof to ``cp`` and the seal's inclusion proof."""
    a = header.size
    first = bundle_range(a)[0] * TILE_WIDTH
    nodes = [th.mth(s, e) for s, e in _compact_nodes(a)]
    before = [th.mth(s, e) for s, e in _compact_nodes(first)]
    consistency = consistency_proof(a, cp.size, th.mth)
    seal_proof = inclusion_proof(a - 1, cp.size, th.mth)
    return nodes, before, consistency, seal_proof


def head_tiles(header: SnapshotHeader, cp: Checkpoint) -> set[tuple[int, int, int]]:
    """Hash tiles (level, index, width at ``cp.size``) that ``verify_head`` reads."""
    if not 0 < header.size <= cp.size:
        return set()
    return needed_tiles(cp.size, lambda th: _head_proofs(th, header, cp))


def verify_head(header: SnapshotHeader, origin: str, cp: Checkpoint,
                tiles: dict[tuple[int, int], list[bytes]]) -> VerifiedHead:
    """Prove a snapshot header against verified checkpoint ``cp``. Pure.

    ``tiles`` maps (level, index) to the hashes of the tiles ``head_tiles``
    named. Raises ``MalformedError`` (not in the signed tree, bad bytes) or
    ``DigestError`` (header count differs from the seal's).
    """
    a = header.size
    if header.origin != origin:
        raise MalformedError(f"snapshot is of origin {header.origin!r}, want {origin!r}")
    if not 0 < a <= cp.size:
        raise MalformedError(f"snapshot tree size {a} is outside the signed tree of size {cp.size}")
    bidx, bwidth = bundle_range(a)
    where = f"snapshot of {origin} at size {a}: bundle {tile_path(ENTRIES, bidx, bwidth)}"
    entries = parse_bundle(header.bundle, bwidth, where)
    th = TileHashes(cp.size, tiles)
    nodes, before, consistency, seal_proof = _head_proofs(th, header, cp)
    if th.needed:
        raise MalformedError(f"{where}: hash tiles missing for the proofs: {sorted(th.needed)[:4]}")
    # 1. the seal closing the snapshot's version is in the signed tree.
    if not verify_inclusion(leaf_hash(entries[-1]), a - 1, cp.size, seal_proof, cp.root):
        raise MalformedError(f"{where}: the seal at entry {a - 1} is not in the signed tree "
                             f"of size {cp.size} (inclusion proof fails)")
    try:
        seal = E.decode(entries[-1])
    except MalformedError as e:
        raise MalformedError(f"{where}: last entry: {e}") from None
    if not isinstance(seal, E.Seal) or seal.version != header.version:
        raise MalformedError(f"{where}: last entry is not the seal of version {header.version}")
    # 2. the Merkle state at size a, from the tiles, is a prefix of the signed tree.
    compact = CompactRange(a, nodes)
    if not verify_consistency(a, cp.size, compact.root(), cp.root, consistency):
        raise MalformedError(f"hash tiles at size {a} are not consistent with the signed root of size {cp.size}")
    # ... and the bundle's other entries are its leaves [first, a): appended to
    # the tree before the bundle, they reproduce that verified root.
    rebuilt = CompactRange(bidx * TILE_WIDTH, before)
    for raw in entries:
        rebuilt.append(leaf_hash(raw))
    if rebuilt.root() != compact.root():
        raise MalformedError(f"{where}: entries are not the signed tree's leaves {bidx * TILE_WIDTH}..{a - 1}")
    # 3. the count the loader will check records against is the seal's.
    if header.count != seal.count:
        raise DigestError(f"snapshot of {origin} version {seal.version} states {header.count} hashes, "
                          f"its seal says {seal.count}")
    # Partial tiles at size a, for the mirror's appender (tlog-tiles widths at a);
    # every hash in them was read into the compact range just verified.
    out: dict[tuple[int, int, int], bytes] = {(ENTRIES, bidx, bwidth): header.bundle}
    level = 0
    while a >> (8 * level):
        count = a >> (8 * level)
        w = count % TILE_WIDTH
        if w:
            out[(level, count // TILE_WIDTH, w)] = b"".join(tiles[(level, count // TILE_WIDTH)][:w])
        level += 1
    return VerifiedHead(header, seal, compact, out)


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

    Returns None when the mirror is already at the signed checkpoint.
    Raises ``TransportError`` when no snapshot newer than the mirror exists,
    a ``VerificationError`` when one fails verification (mirror unchanged).
    """
    t0 = time.perf_counter()
    if policy is not None:  # rotation.TrustPolicy: follow key rotations first, as sync_feed does
        await policy.refresh(fetcher)
    f = mirror.get(name)
    keys = [parse_vkey(k) for k in f.vkeys]
    signed = open_checkpoint(await fetcher.get("checkpoint", MAX_NOTE_BYTES), f.origin, keys)
    if policy is not None:
        policy.check(signed)
    cp = signed.checkpoint
    try:
        V.check_progress(f.trusted_state(), cp)
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
            needed = sorted(head_tiles(header, cp)) if 0 < header.size <= cp.size else []
            datas = await asyncio.gather(*(fetcher.get(tile_path(lvl, idx, w), MAX_TILE_BYTES) for lvl, idx, w in needed))
            tiles = {(lvl, idx): parse_hash_tile(d, w, tile_path(lvl, idx, w)) for (lvl, idx, w), d in zip(needed, datas)}
            head = verify_head(header, f.origin, cp, tiles)
            n = await asyncio.to_thread(load_snapshot, mirror, name, f.applied_size, head, reader,
                                        signed.raw, cp, workers, progress)
        await asyncio.to_thread(keep_snapshot, mirror, name, Path(tmp), ref.sha256, header)
    finally:
        Path(tmp).unlink(missing_ok=True)
    dt = time.perf_counter() - t0
    log.info("feed %s: bootstrapped from snapshot %s: version %d, size %d, %d hashes in %.1f s",
             name, ref.sha256[:16], head.seal.version, header.size, n, dt)
    return BootstrapResult(name, f.applied_size, header.size, f.version, head.seal.version, n, ref.sha256, dt)


async def sync_with_snapshots(mirror: Mirror, name: str, fetcher: Fetcher, progress=None, policy=None):
    """``sync.sync_feed``, bootstrapping from a snapshot when that is the way forward:

    * a fresh mirror (nothing applied) starts from the newest snapshot, if the
      upstream offers any (no snapshot index: it replays the log as before);
    * a mirror whose next entry bundle the upstream no longer serves, and whose
      position is below the advertised minimum index, re-bootstraps by itself
      and says so in the log (WARNING), then follows the log again.
    """
    from federation.sync.orchestrator import SyncResult, sync_feed

    f = mirror.get(name)
    if f.applied_size == 0:
        try:
            refs, _ = await fetch_index(fetcher)
        except (TransportError, MalformedError) as e:
            log.debug("feed %s: no snapshot index (%s); replaying the log", name, e)
            refs = []
        if refs:
            try:
                await bootstrap_feed(mirror, name, fetcher, policy=policy)
            except TransportError as e:  # e.g. every snapshot is newer than the checkpoint
                log.info("feed %s: snapshot not usable (%s); replaying the log", name, e)
    try:
        r = await sync_feed(mirror, name, fetcher, progress, policy=policy)
    except TransportError as failure:
        # Was it a pruned bundle? Ask the (unsigned) index; at worst a lying
        # index makes us bootstrap, which is verified like any other.
        try:
            _, minimum = await fetch_index(fetcher)
        except (TransportError, MalformedError):
            raise failure from None
        now = mirror.get(name)
        if minimum <= now.applied_size:
            raise
        log.warning("feed %s: fell behind the upstream's pruned range (minimum index %d > applied size %d); "
                    "re-bootstrapping from a snapshot", name, minimum, now.applied_size)
        await bootstrap_feed(mirror, name, fetcher, policy=policy)
        r = await sync_feed(mirror, name, fetcher, progress, policy=policy)
    return SyncResult(name, f.applied_size, r.size, f.version, r.version)
