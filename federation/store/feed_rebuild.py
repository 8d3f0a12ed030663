"""Rebuilding a published feed's state from verified versions of its served log.

``federation feed recover`` (``node.recover``) verifies the log a relay, a
static export or a member node serves, exactly as a mirror does
(``core.acceptance``), and hands the verified versions here, in log order.
They go through the publisher's own writers -- ``ActiveSet.apply`` for the
active set and its digest, ``TileStore``'s appender for tiles and bundles,
``Publisher`` for the feed row -- so the rebuilt state is what publishing
those versions made, byte for byte (tiles are a function of the tree).

Crash order: everything happens in ONE transaction on the publisher's
connection (``BEGIN IMMEDIATE`` at ``__enter__``, ``COMMIT`` at
``__exit__``): entries, tiles and the active set first, the head (size,
digest, compact range, the served checkpoint note) last by
compare-and-swap. A crash or error anywhere rolls all of it back: the
database is as before the recovery (no feed, or the old restored one). The
served-checkpoint record (``store.served``) is written after the commit.

Invariant checked here, not trusted: after every version the active set's
count and digest equal the seal's (``DigestError`` otherwise), and at the
end the tree's root equals the verified checkpoint's.
"""
from __future__ import annotations

from federation.core import entries as E
from federation.core.checkpoint import Checkpoint
from federation.core.errors import DigestError, ForkError, StorageError
from federation.core.lthash import LtHash16
from federation.core.merkle import CompactRange
from federation.core.verify import Spill, Version
from federation.store.activeset import ActiveSet
from federation.store.db import write_txn
from federation.store.publisher import Feed, Publisher
from federation.store.tilestore import TileStore


class FeedRebuild:
    """``with FeedRebuild(pub, ...) as r: r.add(v) ...; r.finish(note, cp)``.

    Starts from the feed's row if the database has one (a restored older
    copy: only the versions after its size are replayed), else from a new
    empty row. ``finish`` must be called for anything to be committed.
    """

    def __init__(self, pub: Publisher, name: str, origin: str, vkey: str, access: str = "members",
                 key_file: str | None = None):
        self.pub = pub
        self.name = name
        self.origin = origin
        self.vkey = vkey
        self.access = access
        self.key_file = key_file
        self.feed: Feed | None = None
        self._txn = None
        self._finished = False

    def __enter__(self) -> "FeedRebuild":
        self._txn = write_txn(self.pub.conn)
        self._txn.__enter__()
        try:
            self.feed = self.pub.recovery_row(self.name, self.origin, self.vkey, self.access, self.key_file)
            f = self.feed
            self.version, self.count, self.digest = f.version, f.count, LtHash16(f.digest)
            self.active = ActiveSet(self.pub.conn, f.id)
            self.log = TileStore(self.pub.conn, f.id).appender(f.size, CompactRange.from_bytes(f.compact))
        except BaseException as e:
            self._txn.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def __exit__(self, *exc) -> bool:
        if exc[0] is None and not self._finished:
            # Left without finish (the caller stopped early): commit nothing.
            # Thrown into write_txn, which rolls back and re-raises it to us.
            unfinished = StorageError(f"feed {self.name}: recovery stopped before its head; nothing was written")
            self._txn.__exit__(StorageError, unfinished, None)
            return False
        return bool(self._txn.__exit__(*exc))

    @property
    def size(self) -> int:
        return self.log.compact.size

    def add(self, item: Version | Spill) -> None:
        """Apply one verified item: a ``Spill`` (part of a version too big for
        memory: its entries, applied now) or a ``Version`` (the rest of it and
        its seal, checked against the active set)."""
        if isinstance(item, Spill):
            entries = [E.decode(raw) for raw in item.encoded]
            self._apply([e for e in entries if not isinstance(e, E.Seal)], item.encoded)
            return
        if not item.staged:
            self._apply(item.ops, item.encoded)
        seal = item.seal
        if self.count != seal.count or self.digest.digest() != seal.digest:
            raise DigestError(f"feed {self.name} version {seal.version}: seal says {seal.count} hashes and digest "
                              f"{seal.digest[:8].hex()}..., the rebuild computes {self.count} and "
                              f"{self.digest.digest()[:8].hex()}...")
        self.version = seal.version

    def _apply(self, ops: list, encoded: list[bytes]) -> None:
        res = self.active.apply(ops, self.version + 1, self.digest, self.count)
        self.digest, self.count = res.digest, res.count
        self.log.append(encoded)

    def finish(self, note: bytes, checkpoint: Checkpoint) -> None:
        """Write the partial tiles and, last, the head served with ``note``."""
        self.log.finish()
        if self.size != checkpoint.size or self.log.compact.root() != checkpoint.root:
            raise ForkError(f"feed {self.name}: the rebuilt tree (size {self.size}) does not hash to the verified "
                            f"checkpoint of size {checkpoint.size}")
        # The key that signs the served log now; a restored row keeps its key
        # file unless the key changed since its backup (rotated, or lost: --vkey).
        key_file = self.feed.key_file if self.vkey == self.feed.vkey else self.key_file
        self.pub.install_recovered_head(self.feed, self.size, self.version, self.count, self.digest.digest(),
                                        self.log.compact, note, self.vkey, key_file)
        self._finished = True

