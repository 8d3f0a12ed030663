"""One sync of a followed feed: fetch, verify, apply (the I/O shell).

Order of a sync, and what a failure at each step leaves behind:

1. GET checkpoint, verify signature and origin      -> mirror unchanged
2. refuse rollback / fork (``verify.check_progress``) -> mirror unchanged
3. GET the hash tiles the sync needs (edges, proofs, level-1 hashes of
   the bundles), prove them against the signed root and prove that the
   new tree extends the mirror's (``fork`` otherwise)  -> mirror unchanged
4. GET bundles in order (bounded concurrency); each must hash to its
   proven tile entry; each complete version is applied in one transaction.
   A failure or a kill here leaves the mirror at the last whole version,
   and the next sync resumes from it.
5. freshness (``federation.freshness``): the newest verified timestamp of
   the tree now held (the log's own, a witness quorum's, the last seal's)
   moves ``fresh_time`` forward; past the feed's maximum age the sync fails
   ``stale`` -- after applying what verified, so a withdrawal still lands --
   and lookups fail closed until a fresh checkpoint arrives.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import logging
import sqlite3
import time
from dataclasses import dataclass

from federation.core.checkpoint import open_checkpoint
from federation.core.errors import FederationError, MalformedError, NothingNew, StaleError, StorageError, VerificationError
from federation.net.fetcher import Fetcher
from federation.core.freshness import describe_age, log_timestamp
from federation.core.layout import tile_path
from federation.store.mirror import Follow, Mirror
from federation.core.note import MAX_NOTE_BYTES, parse_note, parse_vkey
from federation.core.tiles import MAX_ENTRY_BYTES, parse_hash_tile
from federation.core import verify as V

log = logging.getLogger("federation.sync")

MAX_TILE_BYTES = 256 * 32
MAX_BUNDLE_BYTES = 256 * (2 + MAX_ENTRY_BYTES)


@dataclass(frozen=True)
class SyncResult:
    feed: str
    old_size: int
    size: int
    old_version: int
    version: int

    @property
    def changed(self) -> bool:
        return self.size != self.old_size


async def _ordered(fetcher: Fetcher, paths, window: int):
    """Fetch ``paths`` with up to ``window`` requests in flight, yield in order."""
    pending: collections.deque = collections.deque()
    it = iter(paths)
    try:
        for item in it:
            pending.append((item, asyncio.ensure_future(fetcher.get(item[1], item[2]))))
            if len(pending) >= window:
                break
        while pending:
            item, task = pending.popleft()
            data = await task
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, asyncio.ensure_future(fetcher.get(nxt[1], nxt[2]))))
            yield item[0], data
    finally:
        for _, task in pending:
            task.cancel()


def _storage_errors(fn):
    """A SQLite failure of the mirror's own store (e.g. ``database is locked``
    while another process holds the write lock) is a ``StorageError``, so
    callers that handle ``FederationError`` see it with its kind."""
    @functools.wraps(fn)
    async def wrapper(*args, **kw):
        try:
            return await fn(*args, **kw)
        except sqlite3.Error as e:
            name = kw.get("name", args[1] if len(args) > 1 else "?")
            raise StorageError(f"feed {name}: mirror store: {type(e).__name__}: {e}") from e
    return wrapper


@_storage_errors
async def sync_feed(mirror: Mirror, name: str, fetcher: Fetcher, progress=None, policy=None) -> SyncResult:
    """Bring feed ``name`` up to the upstream's signed checkpoint.

    ``policy`` (``rotation.TrustPolicy``, for feeds followed with a trust
    file): before anything else it follows the upstream's trust rotations
    (each step stored atomically, replacing the trusted log keys), and every
    checkpoint must carry its witness quorum, fresh enough; a failure there
    (``QuorumError``, ``StaleError``, ...) leaves the feed's data unchanged.

    Raises a ``VerificationError`` subclass or ``TransportError`` on failure;
    returns a ``SyncResult`` (``changed`` False when nothing was new).
    """
    if policy is not None:
        await policy.refresh(fetcher)
    f = mirror.get(name)
    keys = [parse_vkey(k) for k in f.vkeys]
    state = f.trusted_state()
    raw = await fetcher.get("checkpoint", MAX_NOTE_BYTES)
    signed = open_checkpoint(raw, f.origin, keys)
    fresh = None
    if policy is not None:
        # Before check_progress: an unchanged (frozen) checkpoint must be
        # reported stale, not "up to date".
        fresh = policy.check(signed)
    cp = signed.checkpoint
    now = int(time.time())
    stamped = _note_time(signed.raw, keys, f, fresh, now)
    try:
        V.check_progress(state, cp)
    except NothingNew:
        # The same tree, maybe with fresher timestamps (the publisher and its
        # witnesses refresh them while nothing changes): serve the newer
        # note, or a relay's followers would see the feed frozen.
        if signed.raw != f.checkpoint and _fresher(signed.raw, stamped, f, keys, policy, fresh, now):
            await asyncio.to_thread(mirror.replace_served_note, name, f.checkpoint, signed.raw, cp)
        await asyncio.to_thread(_check_fresh, mirror, name, cp.size, stamped, now)
        return SyncResult(name, f.applied_size, f.applied_size, f.version, f.version)

    # Step 3: prove the hash tiles the sync needs against the signed root,
    # then that the new tree extends ours (nothing stored yet).
    tiles: dict[tuple[int, int], list[bytes]] = {}
    plan = (((lvl, i, w), tile_path(lvl, i, w), MAX_TILE_BYTES) for lvl, i, w in V.tile_plan(state, cp))
    async for (lvl, idx, w), data in _ordered(fetcher, plan, fetcher.concurrency):
        tiles[(lvl, idx)] = parse_hash_tile(data, w, f"{f.origin} {tile_path(lvl, idx, w)}")
    V.authenticate_tiles(cp, tiles)
    V.check_extends(state, cp, tiles)

    # Step 4: entries, version by version.
    checker = V.EntryVerifier(state.applied_size, cp.size, tiles, state.version)
    paths = (((i, w), tile_path(-1, i, w), MAX_BUNDLE_BYTES) for _, i, w in V.bundles(state.applied_size, cp.size))
    version = state.version
    await asyncio.to_thread(mirror.clear_staging, name)  # leftovers of an interrupted sync
    staged = False
    try:
        async for (idx, w), data in _ordered(fetcher, paths, fetcher.concurrency):
            for v in checker.feed_bundle(idx, w, data):
                if isinstance(v, V.Spill):  # part of a version too big for memory
                    await asyncio.to_thread(mirror.stage, name, v.start, v.encoded)
                    staged = True
                    continue
                await asyncio.to_thread(mirror.apply_version, name, v, signed.raw, cp)
                version = v.seal.version
                if progress:
                    progress(v)
        checker.finish()
    except Exception:
        if staged:  # rows of a version that will not be applied: do not keep them (up to GBs)
            try:
                await asyncio.to_thread(mirror.clear_staging, name)
            except Exception:  # noqa: BLE001 -- the next sync clears them; report the first error
                log.warning("feed %s: could not clear staged entries after a failed sync", name)
        raise
    await asyncio.to_thread(_check_fresh, mirror, name, cp.size, stamped, int(time.time()))
    return SyncResult(name, state.applied_size, cp.size, state.version, version)


def _note_time(note: bytes, keys, f: Follow, fresh, now: int) -> int | None:
    """The newest verified time on a checkpoint note: the log's own timestamp
    and, under a trust file, the witness quorum's (``fresh``)."""
    stamp = log_timestamp(note, keys, now, f.max_age)
    for why in stamp.ignored:
        log.warning("feed %s: ignored a log timestamp line: %s", f.name, why)
    times = [t for t in (stamp.time, fresh.quorum_time if fresh is not None else None) if t is not None]
    return max(times) if times else None


def _fresher(note: bytes, stamped: int | None, f: Follow, keys, policy, fresh, now: int) -> bool:
    """Whether ``note`` (verified, same tree as the served one) is worth
    serving in place of the served note: a newer timestamp, and no fewer
    signature lines (a refresh replaces lines; an upstream that strips the
    witnesses' ones must not make a relay pass that on)."""
    old = f.checkpoint
    if old is None:
        return True
    if len(parse_note(note).signatures) < len(parse_note(old).signatures):
        return False
    old_time = log_timestamp(old, keys, now, f.max_age).time
    if stamped is not None and (old_time is None or stamped > old_time):
        return True
    return fresh is not None and policy.fresher(fresh, old)


def _check_fresh(mirror: Mirror, name: str, size: int, stamped: int | None, now: int) -> None:
    """Record ``stamped`` for the tree of ``size``; ``StaleError`` when the
    mirror's newest verified time is older than the feed's maximum age."""
    mirror.record_freshness(name, size, stamped)
    f = mirror.get(name)
    age = None if f.fresh_time is None else now - f.fresh_time
    if age is None or age > f.max_age:
        raise StaleError(f"feed {name}: the newest verified timestamp of version {f.version} (size "
                         f"{f.applied_size}) is {describe_age(age)}, over the maximum age of {f.max_age} s: "
                         "the upstream serves a frozen checkpoint, or the publisher stopped refreshing it "
                         "('federation feed refresh')")


def upstream_failure(e: Exception, name: str, url: str) -> FederationError:
    """An exception from syncing ``name`` from ``url`` as one of ours.

    Parsers turn hostile bytes into ``MalformedError`` themselves; anything
    else that escapes while handling an upstream's data is a bug of ours,
    but one that upstream triggered. It is logged (traceback at DEBUG) and
    counted against that upstream as ``malformed``, so a follower moves on
    to the next upstream instead of dying (issue 10: a follower loop never dies).
    """
    if isinstance(e, FederationError):
        return e
    if isinstance(e, sqlite3.Error):  # our own store, not the upstream's fault
        return StorageError(f"feed {name}: mirror store: {type(e).__name__}: {e}")
    log.error("feed %s: unexpected %s while checking data from %s (treated as malformed; please report): %s",
              name, type(e).__name__, url, e)
    log.debug("feed %s: traceback of the unexpected error", name, exc_info=e)
    return MalformedError(f"unexpected {type(e).__name__} while checking data from {url}: {str(e)[:200]}")


@_storage_errors
async def sync_once(mirror: Mirror, name: str, concurrency: int = 8, headers: dict | None = None,
                    progress=None, policy=None, snapshots: bool = True) -> SyncResult:
    """Sync with a fetcher of our own, recording the outcome on the feed.

    A feed followed with a trust file syncs under its policy
    (``rotation.policy_for``) unless ``policy`` is given.
    With ``snapshots`` (default), a fresh mirror starts from the upstream's
    newest snapshot if it offers one, and a mirror behind the upstream's
    pruned range re-bootstraps by itself (``bootstrap.sync_with_snapshots``).

    Upstreams are tried in order. A transport failure moves to the next one
    request by request (inside ``Fetcher``); a verification failure (a relay
    that tampers, withholds or rolls back) abandons that upstream for this
    sync and starts again from the next one. Nothing an upstream sent that
    failed verification was applied, so the retry starts from the mirror's
    last verified version. The failure is kept in ``last_error`` even when a
    later upstream succeeds: it is evidence about that upstream. Any other
    exception while handling an upstream's data counts against that upstream
    as ``malformed`` (``upstream_failure``): the next upstream is still tried.
    """
    f = mirror.get(name)
    if policy is None:
        from federation.trust.rotation import policy_for
        policy = policy_for(mirror, name)
    urls = list(f.urls)
    failures: list[tuple[str, FederationError]] = []
    for i in range(len(urls)):
        async with Fetcher(urls[i:], concurrency=concurrency, headers=headers) as fetcher:
            try:
                if snapshots:
                    from federation.sync.bootstrap import sync_with_snapshots
                    result = await sync_with_snapshots(mirror, name, fetcher, progress, policy=policy)
                else:
                    result = await sync_feed(mirror, name, fetcher, progress, policy=policy)
            except Exception as raised:  # noqa: BLE001 -- a follower never dies (see upstream_failure)
                e = upstream_failure(raised, name, urls[i])
                if not isinstance(e, VerificationError):
                    failures.append((urls[i], e))
                    break  # transport: Fetcher already tried every remaining upstream
                log.warning("feed %s: upstream %s failed verification (%s): %s", name, urls[i], e.kind, e)
                failures.append((urls[i], e))
                continue
        earlier = "; ".join(f"upstream {u} failed ({e.kind}): {e}" for u, e in failures)
        mirror.record_sync(name, earlier or None)
        return result
    first = next((e for _, e in failures if isinstance(e, VerificationError)), failures[-1][1])
    mirror.record_sync(name, f"{first.kind}: {first}", failed=first.kind)
    raise first
