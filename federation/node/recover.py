"""Recover a published feed from its served log (``federation feed recover``).

A feed's log is public and verified wherever it was mirrored: a relay, a
static export, a member's node. When the publisher's database is lost, or
an older backup was restored (``store.served`` then refuses to sign), this
rebuilds the feed from such a copy:

1. the copy's checkpoint is verified against the feed's OWN key (and origin)
   -- the copy is trusted for nothing else -- and must extend the newest
   checkpoint this node recorded as served (``store.served``) and the tree
   the database still holds, if any: ``core.acceptance``, the mirror's own
   acceptance object, refuses a rollback or fork of either;
2. the hash tiles and every entry bundle after the database's size are
   fetched (``sync.tilefetcher``) and verified as a mirror verifies them;
3. the verified versions are replayed into the publisher database through
   its own writers (``store.feed_rebuild``), in one transaction, the head
   last; then the served-checkpoint record moves forward (a record of
   another origin is replaced, with a warning).

A checkpoint that was committed but never served (held back for
cosignatures when the disk died) is in no copy, and need not be: nobody
holds it -- unless a witness was sent it; then signing stays refused
until a copy holding it is recovered, or the operator gives it up
(``abandon_witnessed``, ``--abandon-witnessed``).

The feed then continues the same log with the same key: its next publish
extends the recovered tree, and mirrors accept it as an extension.

Not recovered (they are not in the log): the feed's cosigning
configuration, its snapshots and pruning state, trust chains, and tokens
(``auth.db``). A copy whose early bundles are pruned (it bootstrapped from
a snapshot) cannot serve a recovery; the error says so.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from federation.core.acceptance import Acceptance
from federation.core.errors import NothingNew, StorageError, TransportError, UnavailableError
from federation.core.merkle import CompactRange
from federation.core.note import MAX_NOTE_BYTES, Verifier
from federation.core.verify import TrustedState
from federation.net.fetcher import Fetcher
from federation.store.feed_rebuild import FeedRebuild
from federation.store.publisher import Publisher
from federation.store.db import storage_error
from federation.store.served import forget_witnessed, read_served
from federation.sync.tilefetcher import TileFetcher

log = logging.getLogger("federation.recover")


@dataclass(frozen=True)
class Recovered:
    feed: str
    source: str
    old_size: int  # what the database held before (0: nothing)
    size: int
    old_version: int
    version: int
    count: int

    @property
    def changed(self) -> bool:
        return self.size != self.old_size


async def recover_feed(db_path: Path, name: str, url: str, key: Verifier, access: str = "members",
                       key_file: str | None = None, headers: dict | None = None,
                       concurrency: int = 8, abandon_witnessed: bool = False) -> Recovered:
    """Rebuild feed ``name`` of the publisher database at ``db_path`` from the
    log served at ``url`` (a tlog-tiles prefix), verified against ``key``
    (its name is the feed's origin). ``access`` and ``key_file`` are stored
    for a feed the database no longer has (an existing feed keeps its own).

    The copy must reach the checkpoint this node SERVED (``store.served``).
    A checkpoint only witnesses saw, which the recovered tree does not
    extend, keeps signing refused unless ``abandon_witnessed`` (the operator
    gives it up: the witnesses will see the next tree as a fork of it).
    A served record of ANOTHER origin (the name was once another log's) is
    replaced, with a warning: the record is about this feed's origin.
    """
    pub = Publisher(db_path)
    try:
        try:
            result, note = await _recover(pub, name, url, key, access, key_file, headers, concurrency)
        except sqlite3.Error as e:
            raise storage_error(e, f"feed {name}: publisher database {db_path}") or StorageError(
                f"feed {name}: publisher database {db_path}: {type(e).__name__}: {e}") from None
        if note is not None:
            old = read_served(pub.path, name)
            other = old is not None and old.checkpoint.origin != key.name
            if other:
                log.warning("feed %s: replacing the served-checkpoint record of origin %s (size %d) with the "
                            "recovered log of origin %s", name, old.checkpoint.origin, old.checkpoint.size, key.name)
            pub.record_served(name, note, replace=other)
        _settle_witnessed(pub, name, key.name, abandon_witnessed)
        return result
    finally:
        pub.close()


def _settle_witnessed(pub: Publisher, name: str, origin: str, abandon: bool) -> None:
    """After a recovery: a witnessed record of another origin is dropped;
    one the recovered tree does not extend is dropped if ``abandon`` (said
    loudly), else kept (signing stays refused, with the way out)."""
    seen = read_served(pub.path, name, witnessed=True)
    if seen is None:
        return
    problem = pub.signing_problem(name) if seen.checkpoint.origin == origin else "another origin"
    if problem is None:
        return
    if seen.checkpoint.origin != origin or abandon:
        forget_witnessed(pub.path, name)
        log.warning("feed %s: gave up the checkpoint of size %d (origin %s) that witnesses were sent but no copy "
                    "holds; witnesses that cosigned it will refuse the next checkpoint as a fork until their "
                    "operators reset this log", name, seen.checkpoint.size, seen.checkpoint.origin)
    else:
        log.warning("feed %s: witnesses were sent a checkpoint of size %d that this copy does not hold; signing "
                    "stays refused until it is recovered from a copy that has it, or given up with "
                    "--abandon-witnessed", name, seen.checkpoint.size)


async def _recover(pub: Publisher, name: str, url: str, key: Verifier, access, key_file, headers,
                   concurrency) -> tuple[Recovered, bytes | None]:
    origin = key.name
    served = read_served(pub.path, name)
    floor = served.checkpoint if served is not None and served.checkpoint.origin == origin else None
    with FeedRebuild(pub, name, origin, key.vkey, access, key_file) as rb:
        f = rb.feed
        fresh_row = f.checkpoint == b""
        acc = Acceptance(origin, [key], TrustedState(floor, f.size, CompactRange.from_bytes(f.compact), f.version))
        async with Fetcher([url], concurrency=concurrency, headers=headers) as fetcher:
            signed = acc.open_checkpoint(await fetcher.get("checkpoint", MAX_NOTE_BYTES))
            cp = signed.checkpoint
            if floor is not None and cp.size < floor.size:
                raise UnavailableError(
                    f"feed {name}: {url} serves the log up to size {cp.size}, but this node has served size "
                    f"{floor.size}: that copy is behind. Recover from one that holds at least size {floor.size} "
                    "(a relay or member that synced recently)")
            unchanged = Recovered(name, url, f.size, f.size, f.version, f.version, f.count)
            try:
                acc.accept_checkpoint()  # rollback and fork, against the database's tree and the record
            except NothingNew:
                if not fresh_row:
                    log.info("feed %s: the database already holds the tree of size %d served at %s", name, f.size, url)
                    # Nothing to write in the database (leaving without finish
                    # writes nothing), but a lost record is re-made from it.
                    return unchanged, signed.raw
                rb.finish(signed.raw, cp)  # an empty log (size 0): just its row
                return unchanged, signed.raw
            tiles = TileFetcher(fetcher)
            async for (lvl, idx, w), data in tiles.hash_tiles(acc.tiles_for_entries()):
                acc.add_tile(lvl, idx, w, data)
            acc.prove_tiles()
            acc.prove_extension()
            try:
                async for (idx, w), data in tiles.bundles(acc.bundles()):
                    for item in acc.add_bundle(idx, w, data):
                        rb.add(item)
            except TransportError as e:
                raise TransportError(
                    f"feed {name}: {e}. If {url} prunes its log (it serves snapshots), it cannot serve a recovery "
                    f"from size {f.size}: recover from a copy that holds every entry") from None
            acc.finish()
            rb.finish(signed.raw, cp)
    log.info("feed %s: recovered from %s: size %d -> %d, version %d -> %d", name, url, f.size, cp.size,
             f.version, rb.version)
    return Recovered(name, url, f.size, cp.size, f.version, rb.version, rb.count), signed.raw
