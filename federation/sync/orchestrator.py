"""Syncing a followed feed: the upstream loop above acceptance and fetching.

``sync_once`` tries the feed's upstreams in order and records the outcome on
the mirror; for each one, ``sync_with_snapshots`` picks the path (the log,
or a snapshot for a fresh mirror or one behind the pruned range:
``bootstrap.bootstrap_feed``), and ``sync_feed`` is the log path: it drives
an ``acceptance.Acceptance`` (which owns the order of verification), fetches
what it asks for through the one ``TileFetcher``, and writes what it hands
back through the mirror store. Every caller (the CLI's ``sync``, a node's
followers through ``follower.watch_feed``, the platform node's loop, the
demo) syncs through ``sync_once``.

Order of a log sync, and what a failure at each step leaves behind:

1. GET checkpoint, verify signature and origin (and, under a trust file,
   the witness quorum and freshness)                -> mirror unchanged
2. refuse rollback / fork                           -> mirror unchanged
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

import dataclasses
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from federation.core.acceptance import Acceptance
from federation.core.errors import FederationError, InputError, MalformedError, NothingNew, StaleError, StorageError, \
    TransportError, VerificationError
from federation.core.freshness import describe_age, log_timestamp, usable_time
from federation.core.trustfile import clock_skew_allowance
from federation.core.note import MAX_NOTE_BYTES, parse_note, parse_vkey
from federation.core.verify import Spill
from federation.net.fetcher import Fetcher
from federation.store.db import finish_in_thread
from federation.store.mirror import Follow, Mirror
from federation.sync.bootstrap import bootstrap_feed, fetch_index, remove_leftovers_of
from federation.sync.heal import heal_feed, remove_heal_leftovers
from federation.sync.tilefetcher import TileFetcher
from federation.trust.rotation import policy_for

log = logging.getLogger("federation.sync")
outcome_log = logging.getLogger("federation.sync.outcome")  # one line per sync_once (_log_outcome)


@dataclass(frozen=True)
class SyncResult:
    feed: str
    old_size: int
    size: int
    old_version: int
    version: int
    upstream: str | None = None  # sync_once: first upstream of the attempt that served (pinned: its only one)
    healed: bool = False  # sync_once: the feed was damaged and was rebuilt from its upstreams (``heal``)

    @property
    def changed(self) -> bool:
        return self.size != self.old_size


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
    """Bring feed ``name`` up to the upstream's signed checkpoint, through the log.

    ``policy`` (``rotation.TrustPolicy``, for feeds followed with a trust
    file): before anything else it follows the upstream's trust rotations
    (each step stored atomically, replacing the trusted log keys), and every
    checkpoint must carry its witness quorum, fresh enough; a failure there
    (``QuorumError``, ``StaleError``, ...) leaves the feed's data unchanged.

    ``progress``: called with each applied version; if it has a ``target``
    method, that is called first with (applied size, accepted checkpoint's
    size), so a bar can show a total and a percentage.

    Raises a ``VerificationError`` subclass or ``TransportError`` on failure;
    returns a ``SyncResult`` (``changed`` False when nothing was new).
    """
    if policy is not None:
        await policy.refresh(fetcher)
    f = mirror.get(name)
    acc = Acceptance(f.origin, [parse_vkey(k) for k in f.vkeys], f.trusted_state(), quorum=policy is not None)
    # Step 1: the checkpoint's signature and origin, then the trust policy's
    # quorum and freshness -- before progress: an unchanged (frozen)
    # checkpoint must be reported stale, not "up to date".
    signed = acc.open_checkpoint(await fetcher.get("checkpoint", MAX_NOTE_BYTES))
    fresh = policy.check(signed) if policy is not None else None
    if policy is not None and not f.witnessed:
        await finish_in_thread(mirror.mark_witnessed, name)  # a mirror made before the flag existed
        f = mirror.get(name)
    now = int(time.time())
    stamped = _note_time(signed.raw, acc.keys, f, fresh, now)
    try:
        cp = acc.accept_checkpoint(fresh)  # step 2: rollback, fork
    except NothingNew:
        # The same tree, maybe with fresher timestamps (the publisher and its
        # witnesses refresh them while nothing changes): serve the newer
        # note, or a relay's followers would see the feed frozen.
        cp = signed.checkpoint
        if signed.raw != f.checkpoint and _fresher(signed.raw, f, acc.keys, policy, fresh, now):
            await finish_in_thread(mirror.replace_served_note, name, f.checkpoint, signed.raw, cp)
        await finish_in_thread(_check_fresh, mirror, name, cp.size, stamped, now, signed.raw, acc.keys)
        return SyncResult(name, f.applied_size, f.applied_size, f.version, f.version)

    if progress is not None and hasattr(progress, "target"):
        progress.target(f.applied_size, cp.size)
    # Step 3: prove the hash tiles the sync needs against the signed root,
    # then that the new tree extends ours (nothing stored yet).
    tiles = TileFetcher(fetcher)
    async for (lvl, idx, w), data in tiles.hash_tiles(acc.tiles_for_entries()):
        acc.add_tile(lvl, idx, w, data)
    acc.prove_tiles()
    acc.prove_extension()

    # Step 4: entries, version by version.
    version = f.version
    await finish_in_thread(mirror.clear_staging, name)  # leftovers of an interrupted sync
    staged = False
    try:
        async for (idx, w), data in tiles.bundles(acc.bundles()):
            for v in acc.add_bundle(idx, w, data):
                if isinstance(v, Spill):  # part of a version too big for memory
                    await finish_in_thread(mirror.stage, name, v.start, v.encoded)
                    staged = True
                    continue
                await finish_in_thread(mirror.apply_version, name, v, signed.raw, cp)
                version = v.seal.version
                if progress:
                    progress(v)
        acc.finish()
    except Exception:
        if staged:  # rows of a version that will not be applied: do not keep them (up to GBs)
            try:
                await finish_in_thread(mirror.clear_staging, name)
            except Exception:  # noqa: BLE001 -- the next sync clears them; report the first error
                log.warning("feed %s: could not clear staged entries after a failed sync", name)
        raise
    await finish_in_thread(_check_fresh, mirror, name, cp.size, stamped, int(time.time()), signed.raw, acc.keys)
    return SyncResult(name, f.applied_size, cp.size, f.version, version)


async def sync_with_snapshots(mirror: Mirror, name: str, fetcher: Fetcher, progress=None, policy=None) -> SyncResult:
    """``sync_feed``, bootstrapping from a snapshot when that is the way forward:

    * a fresh mirror (nothing applied) starts from the newest snapshot, if the
      upstream offers any (no snapshot index: it replays the log as before);
    * a mirror whose next entry bundle the upstream no longer serves, and whose
      position is below the advertised minimum index, re-bootstraps by itself
      and says so in the log (WARNING), then follows the log again.
    """
    f = mirror.get(name)
    # What a killed bootstrap or heal left (a partial snapshot download, a
    # rebuilt copy), as staged rows are cleared; never what a live one holds.
    await finish_in_thread(remove_leftovers_of, mirror)
    await finish_in_thread(remove_heal_leftovers, mirror)
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


def _note_time(note: bytes, keys, f: Follow, fresh, now: int) -> int | None:
    """The newest verified time on a checkpoint note that vouches for the
    feed's freshness: under a trust file, the witness quorum's (``fresh``)
    alone -- the log's own word must not keep a feed fresh longer than its
    witnesses allow -- else the log's own timestamp."""
    if fresh is not None:
        return fresh.quorum_time
    stamp = log_timestamp(note, keys, now, f.max_age)
    for why in stamp.ignored:
        log.warning("feed %s: ignored a log timestamp line: %s", f.name, why)
    return stamp.time


def _cosigner_times(note: bytes, origin: str) -> dict[tuple[str, int], int]:
    """The timestamps of a note's cosignature lines other than the log's own
    (unverified: a relay without a trust file cannot check them)."""
    return {(s.name, s.key_id): int.from_bytes(s.signature[:8], "big")
            for s in parse_note(note).signatures if s.name != origin and len(s.signature) == 72}


def _fresher(note: bytes, f: Follow, keys, policy, fresh, now: int) -> bool:
    """Whether ``note`` (verified, the same tree as the served note) should
    be served in its place, so a relay's followers see refreshes.

    Under a trust file the witness quorum decides: a newer quorum time, or
    the same one with a newer log timestamp (never an older quorum, so an
    upstream cannot pass off an old round's witness lines with a new log
    timestamp). Without one, the relay cannot check witness lines: it takes
    a newer log timestamp provided no cosigner that both notes carry is
    older in the new one. Lines the new note lacks (a witness removed, or
    stripped by an upstream) are not required: followers that need them
    must find them elsewhere (a relay serving followers under a trust file
    should follow under it too, docs/distribution.md).
    """
    old = f.checkpoint
    if old is None:
        return True
    new_log = log_timestamp(note, keys, now, f.max_age).time
    old_log = log_timestamp(old, keys, now, f.max_age).time
    newer_log = new_log is not None and (old_log is None or new_log > old_log)
    if fresh is not None:
        old_quorum = policy.quorum_time(old)
        if old_quorum is None or fresh.quorum_time > old_quorum:
            return True
        return fresh.quorum_time == old_quorum and newer_log
    new_times, old_times = _cosigner_times(note, f.origin), _cosigner_times(old, f.origin)
    return newer_log and all(new_times[k] >= t for k, t in old_times.items() if k in new_times)


def _check_fresh(mirror: Mirror, name: str, size: int, stamped: int | None, now: int, note: bytes | None = None,
                 keys=()) -> None:
    """Record ``stamped`` for the tree of ``size``; ``StaleError`` when the
    mirror's newest verified time is older than the feed's maximum age.

    When it is stale but the note's log timestamp (``note``, by ``keys``) or
    the applied seal's time verified and lies beyond the clock-skew
    allowance ahead of ``now``, this machine's clock is behind: the error
    says to check it, instead of blaming the upstream for a frozen feed.
    """
    mirror.record_freshness(name, size, stamped)
    f = mirror.get(name)
    age = None if f.fresh_time is None else now - f.fresh_time
    if age is None or age > f.max_age:
        ahead = _ahead_of_clock(mirror, f, note, keys, now)
        if ahead is not None:
            raise StaleError(f"feed {name}: the newest signed timestamps of version {f.version} (size "
                             f"{f.applied_size}) are {ahead} s ahead of this machine's clock, over the "
                             f"{clock_skew_allowance(f.max_age)} s allowed: check this machine's clock (NTP); "
                             "until it is right they count for nothing and the feed is stale")
        raise StaleError(f"feed {name}: the newest verified timestamp of version {f.version} (size "
                         f"{f.applied_size}) is {describe_age(age)}, over the maximum age of {f.max_age} s: "
                         "the upstream serves a frozen checkpoint, or the publisher stopped refreshing it "
                         "('federation feed refresh')")


def _ahead_of_clock(mirror: Mirror, f: Follow, note: bytes | None, keys, now: int) -> int | None:
    """Seconds by which the newest verified time of the tree held (the log's
    timestamp on ``note``, the last seal's) lies beyond the clock-skew
    allowance ahead of ``now``; None if none does."""
    times = [mirror.seal_time(f.name)]
    if note is not None and keys:
        times.append(log_timestamp(note, list(keys), now, f.max_age).future)
    future = [t for t in times if t is not None and usable_time(t, now, f.max_age) is None]
    return max(future) - now if future else None


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


def token_headers(f: Follow) -> dict | None:
    """The upstream's ``Authorization`` for a feed followed with
    ``--token-env VAR``: read from the environment at each sync (the mirror
    stores the variable's name, never the token). ``InputError`` if unset."""
    if f.token_env is None:
        return None
    token = os.environ.get(f.token_env, "").strip()
    if not token:
        raise InputError(f"feed {f.name} is followed with the member token in ${f.token_env}, which is not set "
                         "in this environment")
    return {"Authorization": f"Bearer {token}"}


def _log_outcome(fn):
    """One log line per sync outcome, whoever called (``federation sync``, a
    node's followers, the platform loop): ``outcome`` is ``applied``,
    ``up_to_date`` or ``failed`` (with its ``kind``), with the feed, version
    and size as fields, so JSON logs (``--log-json``) can be counted and
    alerted on without parsing messages."""
    @functools.wraps(fn)
    async def wrapper(mirror, name, *args, **kw):
        try:
            r = await fn(mirror, name, *args, **kw)
        except FederationError as e:
            outcome_log.warning("feed %s: sync failed (%s): %s", name, e.kind, e,
                                extra={"feed": name, "outcome": "failed", "kind": e.kind})
            raise
        fields = {"feed": name, "version": r.version, "size": r.size, "upstream": r.upstream}
        if r.changed:
            outcome_log.info("feed %s: applied version %d -> %d, size %d -> %d from %s", name, r.old_version,
                             r.version, r.old_size, r.size, r.upstream,
                             extra={**fields, "outcome": "applied", "old_version": r.old_version,
                                    "old_size": r.old_size})
        else:
            outcome_log.info("feed %s: up to date at version %d (size %d)", name, r.version, r.size,
                             extra={**fields, "outcome": "up_to_date"})
        return r
    return wrapper


@_log_outcome
@_storage_errors
async def sync_once(mirror: Mirror, name: str, concurrency: int = 8, headers: dict | None = None,
                    progress=None, policy=None, snapshots: bool = True, *, urls: list[str] | None = None,
                    pinned: bool = False,
                    on_failure: Callable[[str, FederationError], None] | None = None) -> SyncResult:
    """Sync feed ``name`` from its upstreams, recording the outcome on the feed.

    ``urls``: the upstreams, in order (default: the feed's own). A feed
    followed with a trust file syncs under its policy
    (``rotation.policy_for``) unless ``policy`` is given. With ``snapshots``
    (default), a fresh mirror starts from the upstream's newest snapshot if
    it offers one, and a mirror behind the upstream's pruned range
    re-bootstraps by itself (``sync_with_snapshots``).

    Upstreams are tried in order. A verification failure (a relay that
    tampers, withholds or rolls back) abandons that upstream for this sync
    and starts again from the next one. A transport failure moves to the
    next upstream request by request (``Fetcher`` holds the remaining
    upstreams), so it ends the sync; with ``pinned`` (a node's follower,
    which long-polls the upstream that served it) each attempt uses one
    upstream only, and any failure moves to the next. Nothing an upstream
    sent that failed verification was applied, so each attempt starts from
    the mirror's last verified version.

    The outcome is recorded with ``Mirror.record_sync``: after a success,
    the earlier upstreams' failures stay in ``last_error`` (evidence about
    those upstreams); after a failure, the first verification failure (else
    the last failure) is ``last_error`` and its kind ``sync_failed``, and is
    raised. Any other exception while handling an upstream's data counts
    against that upstream as ``malformed`` (``upstream_failure``): the next
    upstream is still tried. ``on_failure(url, error)`` is called for each
    upstream that failed.
    """
    f = mirror.get(name)
    if headers is None:
        headers = token_headers(f)
    if policy is None:
        policy = policy_for(mirror, name)
    urls = list(f.urls if urls is None else urls)
    if not urls:
        raise InputError(f"feed {name}: no upstream URL to sync from")
    if f.damaged:
        async def rebuild(fresh: Mirror):
            await sync_once(fresh, name, concurrency, headers, None, policy, snapshots, urls=urls, pinned=pinned,
                            on_failure=on_failure)
        try:
            await heal_feed(mirror, name, rebuild)
        except Exception as raised:  # noqa: BLE001 -- recorded like any failed sync; the feed stays closed
            e = upstream_failure(raised, name, urls[0])
            mirror.record_sync(name, f"{e.kind}: the damaged feed could not be rebuilt: {e}", failed=e.kind)
            raise e from None
        result = await sync_once(mirror, name, concurrency, headers, progress, policy, snapshots, urls=urls,
                                 pinned=pinned, on_failure=on_failure)
        return dataclasses.replace(result, old_size=f.applied_size, old_version=f.version, healed=True)
    step = sync_with_snapshots if snapshots else sync_feed
    failures: list[tuple[str, FederationError]] = []
    for i, url in enumerate(urls):
        async with Fetcher([url] if pinned else urls[i:], concurrency=concurrency, headers=headers) as fetcher:
            try:
                result = await step(mirror, name, fetcher, progress, policy=policy)
            except Exception as raised:  # noqa: BLE001 -- a follower never dies (see upstream_failure)
                e = upstream_failure(raised, name, url)
                failures.append((url, e))
                if on_failure is not None:
                    on_failure(url, e)
                if isinstance(e, VerificationError):
                    log.warning("feed %s: upstream %s failed verification (%s): %s", name, url, e.kind, e)
                elif pinned:
                    log.warning("feed %s: upstream %s failed (%s): %s", name, url, e.kind, e)
                else:
                    break  # transport: Fetcher already tried every remaining upstream
                continue
        earlier = "; ".join(f"upstream {u} failed ({e.kind}): {e}" for u, e in failures)
        mirror.record_sync(name, earlier or None)
        return dataclasses.replace(result, upstream=url)
    first = next((e for _, e in failures if isinstance(e, VerificationError)), failures[-1][1])
    mirror.record_sync(name, f"{first.kind}: {first}", failed=first.kind)
    if first.kind == "digest":
        await finish_in_thread(_audit_after_digest_failure, mirror, name)
    raise first


def _audit_after_digest_failure(mirror: Mirror, name: str) -> None:
    """A version whose entries verified against the signed tree did not add
    up to its seal's digest: either the publisher sealed a wrong digest, or
    the mirror's own rows are damaged. An audit tells them apart; damaged
    rows mark the feed (``heal``: the next sync rebuilds it)."""
    problems = mirror.audit(name)
    if problems:
        log.error("feed %s: the mirror's rows are damaged (%s); the next sync rebuilds it from its upstreams",
                  name, "; ".join(problems))
        mirror.mark_damaged(name, problems)
