"""A damaged mirror heals itself: rebuilt from its upstreams, swapped in whole.

When an audit finds a followed feed's rows, digest or tree wrong (``federation
verify``, or a sync whose digest check failed: ``Mirror.mark_damaged``), the
feed is marked damaged and lookups fail closed (``readiness``). Nothing the
damaged rows say -- not even the applied tree -- is trusted any more, so the
feed is not repaired in place: ``heal_feed`` builds it anew, the way a fresh
mirror would, and swaps the result in.

Steps, and what a failure or a kill at each one leaves:

1. a fresh mirror database in a locked working directory next to the
   mirror (``.heal-*``, ``store.tempfiles``) follows the same feed (origin,
   keys, upstreams, maximum age) and syncs it from the upstreams: snapshot
   bootstrap or full log replay, verified as any sync -> the damaged feed is
   unchanged (and closed); a kill leaves the directory to the next sync;
2. the fresh copy is audited (``mirror_audit``) -> unchanged, if it fails;
3. rollback guard: its tree must not be older than, nor fork from, the last
   checkpoint the damaged feed had verified, if that note still verifies
   under the feed's keys (a damaged note proves nothing and is ignored) ->
   unchanged, ``rollback`` or ``fork``;
4. one transaction on the mirror: the active set replaced (the change
   stream gets the difference, as after a re-bootstrap: ``withdraw`` rows
   with reason ``rebootstrap``, ``relabel``, ``add``), tiles and bundles
   replaced, version rows replaced, kept snapshots forgotten, and last the
   head, compare-and-swap on the damaged head (``Mirror.adopt_head``) ->
   all of it or nothing.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from federation.core.acceptance import Acceptance
from federation.core.errors import DigestError, FederationError, StorageError
from federation.core.merkle import CompactRange
from federation.core.note import parse_vkey
from federation.core.verify import TrustedState, check_progress
from federation.store.activeset import ActiveSet
from federation.store.db import attached, finish_in_thread, write_txn
from federation.store.mirror import Follow, Mirror
from federation.store.snapshots import forget_snapshots
from federation.store.tempfiles import locked_tempdir, remove_leftovers
from federation.store.tilestore import TileStore

log = logging.getLogger("federation.sync")

HEAL_PREFIX = ".heal-"


def remove_heal_leftovers(mirror: Mirror) -> list[Path]:
    """Remove the working directories of heals that were killed."""
    return remove_leftovers(mirror.path.parent, HEAL_PREFIX)


async def heal_feed(mirror: Mirror, name: str, rebuild: Callable[[Mirror], Awaitable[object]]) -> Follow:
    """Rebuild damaged feed ``name`` from its upstreams and swap it in
    (steps above); ``rebuild(fresh)`` syncs the feed into ``fresh``, a new
    mirror following it (``orchestrator.sync_once``). Returns the healed
    feed; raises what failed, leaving the feed damaged (and closed)."""
    damaged = mirror.get(name)
    await finish_in_thread(remove_heal_leftovers, mirror)
    log.warning("feed %s: damaged (%s); rebuilding it from its upstreams", name, damaged.damaged)
    with locked_tempdir(mirror.path.parent, HEAL_PREFIX) as work:
        copy = work / mirror.path.name
        fresh = await finish_in_thread(Mirror, copy)
        try:
            await finish_in_thread(fresh.follow, name, damaged.origin, list(damaged.vkeys), list(damaged.urls),
                                    damaged.max_age, bool(damaged.witnessed), damaged.token_env)
            await rebuild(fresh)
            problems = await finish_in_thread(fresh.audit, name)
            if problems:  # the upstream's verified data does not add up: nothing to swap in
                raise DigestError(f"feed {name}: the rebuilt copy fails its audit: {'; '.join(problems)}")
            healed = fresh.get(name)
            versions = fresh.version_rows(name)
        finally:
            fresh.close()
        _refuse_rollback(damaged, healed)
        await finish_in_thread(_swap, mirror, damaged, healed, versions, copy)
    log.warning("feed %s: healed: version %d (size %d), %d hashes, rebuilt from its upstreams",
                name, healed.version, healed.applied_size, healed.count)
    return mirror.get(name)


def _refuse_rollback(damaged: Follow, healed: Follow) -> None:
    """Step 3: the healed tree is not older than, and does not fork from, the
    newest checkpoint the damaged feed verified (if that note still verifies)."""
    if damaged.verified_checkpoint is None:
        return
    try:
        keys = [parse_vkey(k) for k in damaged.vkeys]
        old = Acceptance(damaged.origin, keys, _NOTHING).open_checkpoint(damaged.verified_checkpoint).checkpoint
    except FederationError as e:  # the note itself is damaged: it proves nothing
        log.warning("feed %s: its stored checkpoint does not verify (%s); not used as a rollback guard",
                    damaged.name, e)
        return
    check_progress(TrustedState(old, 0, CompactRange(), 0), healed.verified())


_NOTHING = TrustedState(None, 0, CompactRange(), 0)


def _swap(mirror: Mirror, damaged: Follow, healed: Follow, versions: list[tuple], source: Path) -> None:
    """Step 4, in one transaction; every write through the table's owner."""
    conn = mirror.conn
    with attached(conn, source), write_txn(conn):
        f = mirror.get(damaged.name)
        if f.applied_size != damaged.applied_size or not f.damaged:
            raise StorageError(f"feed {f.name}: another sync moved or healed it meanwhile; sync again")
        active = ActiveSet(conn, f.id)
        active.set_aside()
        if active.copy_healed(healed.id) != healed.count:
            raise StorageError(f"feed {f.name}: the rebuilt copy changed while it was swapped in; sync again")
        seal_time = versions[-1][3] if versions else 0
        mirror.record_replacement(f.id, healed.version, seal_time)
        TileStore(conn, f.id).replace_healed(healed.id)
        forget_snapshots(conn, f.id)
        mirror.adopt_head(f, healed, versions)
