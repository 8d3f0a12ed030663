"""The publisher: a feed's append-only log, its tiles and its signed head.

One SQLite file holds every feed a node publishes. Storage never touches key
files: ``publish`` takes the signer as an argument (injected signer).

Crash safety. ``publish`` runs in one ``BEGIN IMMEDIATE`` transaction, in this
order; a crash (or error) at any step rolls the whole transaction back and
leaves the previous version served, and the next publish starts from it:

1. entries are applied to the active set (rows only),
2. full tiles and bundles are inserted as they fill, then the partial ones,
3. last, the feed row gets the new size, digest and signed checkpoint. The
   checkpoint carries the log's own timestamp (``freshness.stamp_note``);
   ``refresh_timestamp`` renews it while nothing changes, so mirrors can
   tell a quiet feed from a frozen relay.

Feeds with cosigning configured (a ``feed_cosigning`` row, see
``federation.cosign``): step 3 stores the signed checkpoint in
``pending_checkpoint`` and keeps serving the old one, so no mirror ever sees
a checkpoint before its witness cosignatures. The tree is committed (the
next publish builds on it; tiles of a size never change, so serving them
early is harmless); ``cosign.cosign_feed`` (run by ``federation publish``
and ``cosign run``) collects the cosignatures and ``promote_checkpoint``
serves the cosigned note by compare-and-swap.

A restored older database never forks the log: every method that signs
(``publish``, ``refresh_timestamp``, ``rotate_key``; ``create_feed`` of a
name already served) first checks that the feed's tree extends the newest
checkpoint this node ever signed for it, which is recorded OUTSIDE the
database (``store.served``) after each commit that serves it (a held-back
head: at its promotion; one witnesses saw is recorded apart) -- signed head
first, then the record, so a crash between them leaves a record one version behind, which
the tree still extends. A database older than the record refuses
(``UnavailableError``, pointing to ``federation feed recover``).

Readers (the server) see either the old or the new version, never a mix,
because they read the checkpoint and tiles from the same WAL snapshot and
tiles of a size are written before the checkpoint that names it.

This module is the only one with SQL on ``feeds``, ``feed_cosigning`` and
``api_batches`` (the publishing API's batch ids, recorded inside a publish
transaction through ``batch_recorder``). Readers on other connections,
read-only ones included, use the query functions at the end.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from federation.core import entries as E
from federation.store.activeset import SCHEMA as ACTIVE_SCHEMA, ActiveSet
from federation.core.checkpoint import Checkpoint
from federation.store.db import Store, write_txn
from federation.core.errors import ForkError, InputError, StorageError, UnavailableError
from federation.core.freshness import check_origin, stamp_note
from federation.core.lthash import LtHash16
from federation.store.lthash_workers import ParallelSum
from federation.core.merkle import CompactRange
from federation.core.names import check_feed_name
from federation.core.note import Note, NoteSignature, Signer, parse_note
from federation.store.served import check_extends_served, read_served, record_served
from federation.store.tilestore import SCHEMA as TILES_SCHEMA, TileStore

log = logging.getLogger("federation.publisher")

SCHEMA = """
CREATE TABLE IF NOT EXISTS feeds (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL UNIQUE,
    vkey TEXT NOT NULL,
    size INTEGER NOT NULL,
    version INTEGER NOT NULL,
    count INTEGER NOT NULL,
    digest BLOB NOT NULL,
    compact BLOB NOT NULL,
    checkpoint BLOB NOT NULL,
    updated INTEGER NOT NULL,
    pending_checkpoint BLOB,           -- committed, signed, not served until cosigned (NULL: none)
    -- who may read it (federation.access); members-only unless said otherwise
    access TEXT NOT NULL DEFAULT 'members' CHECK (access IN ('public', 'members')),
    key_file TEXT                      -- the log key's file if not HOME/private/NAME.key (its path, never the key)
);
CREATE TABLE IF NOT EXISTS feed_cosigning (
    feed INTEGER PRIMARY KEY REFERENCES feeds(id),
    config TEXT NOT NULL,              -- JSON, read and written by federation.cosign only
    updated INTEGER NOT NULL
);
""" + TILES_SCHEMA + ACTIVE_SCHEMA

# The publishing API's idempotency keys (``net.publish_api``): created by
# ``open_batch_log`` when a node serves the API.
API_BATCHES_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_batches (
    feed TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    body_sha256 BLOB NOT NULL,
    version INTEGER NOT NULL,
    size INTEGER NOT NULL,
    token TEXT,
    time INTEGER NOT NULL,
    PRIMARY KEY (feed, batch_id)
) WITHOUT ROWID;
"""

ACCESS_LEVELS = ("public", "members")  # feeds.access; what each means: federation.access

CHUNK = 256 * 64  # entries processed per step while streaming a batch


@dataclass(frozen=True)
class Feed:
    id: int
    name: str
    origin: str
    vkey: str
    size: int
    version: int
    count: int
    digest: bytes
    compact: bytes
    checkpoint: bytes
    updated: int
    pending_checkpoint: bytes | None = None  # committed but not yet served (awaiting cosignatures)
    access: str = "members"  # "public" or "members": who may read the feed (federation.access)
    key_file: str | None = None  # where the log key is, if not HOME/private/NAME.key (``Home.feed_key``)


# By name, not ``SELECT *``: migrated databases add columns in their own order.
_FEED_COLUMNS = ", ".join(f.name for f in dataclasses.fields(Feed))


@dataclass(frozen=True)
class PublishResult:
    feed: str
    version: int
    old_size: int
    size: int
    adds: int
    withdrawals: int
    no_effect: int
    count: int
    pending: bool = False  # committed but held back until cosigned (feed has cosigning configured)


class Publisher(Store):
    SCHEMA = SCHEMA

    def __init__(self, path):
        super().__init__(path)
        self._migrate()

    def _migrate(self) -> None:
        """Add ``feeds.pending_checkpoint``, ``feeds.access`` and
        ``feeds.key_file`` to databases made before they existed (an old
        feed's key is where it always was: NULL, ``HOME/private/NAME.key``).

        Feeds of an old database become members-only: before, their access
        lived only in a node config (and plain ``serve`` and ``export`` ignored
        it), so nothing says they may be public. Fail closed; the operator
        opens a public feed with ``federation feed set-access NAME public``.

        Checked again inside the write transaction: two processes opening an
        old database at once must not both add a column.
        """
        columns = {"pending_checkpoint": "BLOB",
                   "access": "TEXT NOT NULL DEFAULT 'members' CHECK (access IN ('public', 'members'))",
                   "key_file": "TEXT"}

        def missing() -> list[str]:
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(feeds)")}
            return [c for c in columns if c not in have]
        if missing():
            with write_txn(self.conn):
                for column in missing():
                    self.conn.execute(f"ALTER TABLE feeds ADD COLUMN {column} {columns[column]}")

    # ---- reads ---------------------------------------------------------------

    def feeds(self) -> list[Feed]:
        return [Feed(*r) for r in self.conn.execute(f"SELECT {_FEED_COLUMNS} FROM feeds ORDER BY name")]

    def feed(self, name: str) -> Feed:
        row = self.conn.execute(f"SELECT {_FEED_COLUMNS} FROM feeds WHERE name=?", (name,)).fetchone()
        if row is None:
            raise InputError(f"no feed named {name!r} in {self.path}")
        return Feed(*row)

    def tile(self, feed_id: int, level: int, index: int, width: int) -> bytes | None:
        return TileStore(self.conn, feed_id).get(level, index, width)

    # ---- writes --------------------------------------------------------------

    def create_feed(self, name: str, origin: str, signer: Signer, access: str = "members",
                    now: int | None = None, key_file: str | None = None) -> Feed:
        """Create an empty feed and sign its size-0 checkpoint (timestamped ``now``).

        ``access`` (``public`` or ``members``) is stored with the feed; the
        default fails closed (see ``federation.access``). ``key_file``: where
        ``signer``'s key file is, when not ``HOME/private/NAME.key`` (the
        path only, so serve, export --watch and feed refresh find it).
        """
        check_feed_name(name)
        if signer.name != origin:
            raise InputError(f"key name {signer.name!r} must equal the feed origin {origin!r}")
        check_access(access)
        check_origin(origin)
        served = read_served(self.path, name)
        if served is not None and served.checkpoint.origin == origin and served.checkpoint.size > 0:
            # The feed was deleted (or its database lost) after serving a log:
            # a new empty log of the same origin is a fork of it.
            raise UnavailableError(
                f"feed {name!r} ({origin}) has served a checkpoint of size {served.checkpoint.size} from this node "
                f"before; creating it anew would fork that log. Rebuild it from the served log instead: "
                f"federation feed recover {name} --from URL")
        now = int(time.time()) if now is None else now
        cp = stamp_note(Checkpoint(origin, 0, CompactRange().root()).sign([signer]), [signer], now)
        with write_txn(self.conn):
            try:
                self.conn.execute(
                    "INSERT INTO feeds (name, origin, vkey, size, version, count, digest, compact, checkpoint, updated,"
                    " access, key_file) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (name, origin, signer.vkey, 0, 0, 0, LtHash16().digest(), CompactRange().to_bytes(), cp, now,
                     access, key_file),
                )
            except sqlite3.IntegrityError:
                raise InputError(f"a feed named {name!r} or with origin {origin!r} already exists") from None
        self._record_served(name, cp, replace=True)
        return self.feed(name)

    def set_access(self, name: str, access: str) -> Feed:
        """Change who may read feed ``name``. Servers read the stored access
        per request, so a change to ``members`` takes effect at once; static
        exports made before it are *not* withdrawn by this."""
        check_access(access)
        with write_txn(self.conn):
            cur = self.conn.execute("UPDATE feeds SET access=? WHERE name=?", (access, name))
            if cur.rowcount != 1:
                raise InputError(f"no feed named {name!r} in {self.path}")
        return self.feed(name)

    def publish(self, name: str, ops: Iterable[E.Add | E.Withdraw], signer: Signer,
                allow_unknown_withdrawals: bool = False, now: int | None = None,
                in_txn=None) -> PublishResult:
        """Append ``ops`` and a seal as the next version, in one transaction.

        ``in_txn(conn, version, size)``, if given, runs inside that
        transaction just before the signed head is written (the publishing
        API records its idempotency key there, so both commit or neither).

        Withdrawals that match nothing active are refused (``InputError``)
        unless ``allow_unknown_withdrawals``: they are almost always a typo,
        and a typo would leave the intended hash blocked.
        """
        stamp = int(time.time()) if now is None else now
        with contextlib.ExitStack() as stack:
            return self._publish(stack, name, ops, signer, allow_unknown_withdrawals, stamp, in_txn)

    def _publish(self, stack, name, ops, signer, allow_unknown_withdrawals, stamp, in_txn) -> PublishResult:
        deferred = None  # LtHash work on the second core, for batches of more than one chunk
        with write_txn(self.conn):
            feed = self.feed(name)
            if signer.vkey != feed.vkey:
                raise InputError(f"signer {signer.vkey} is not the key of feed {name!r} ({feed.vkey})")
            self._check_served(feed)
            active = ActiveSet(self.conn, feed.id)
            digest, count = LtHash16(feed.digest), feed.count
            log = TileStore(self.conn, feed.id).appender(feed.size, CompactRange.from_bytes(feed.compact))
            n_add = n_withdraw = n_none = 0
            gone = _Withdrawn()  # what this batch withdrew so far: a repeat is not a typo
            it = iter(ops)
            while chunk := list(itertools.islice(it, CHUNK)):
                if deferred is None and len(chunk) == CHUNK and (os.cpu_count() or 1) > 1:
                    deferred = stack.enter_context(ParallelSum(workers=1))
                stamped = [E.Add(o.hash_type, o.value, o.case, o.labels, stamp) if isinstance(o, E.Add)
                           else E.Withdraw(o.reason, stamp, o.hash_type, o.value, o.case) for o in chunk]
                res = active.apply(stamped, feed.version + 1, digest, count, deferred)
                gone.note(res.changes)
                if not allow_unknown_withdrawals:
                    bad = next((o for o in res.no_effect if isinstance(o, E.Withdraw) and not gone.covers(o)), None)
                    if bad is not None:
                        what = f"case {bad.case}" if bad.by_case else f"{bad.hash_type} {bad.value.hex()}"
                        raise InputError(f"withdrawal of {what} matches no active hash; nothing was published")
                digest, count = res.digest, res.count
                n_add += sum(1 for o in stamped if isinstance(o, E.Add))
                n_withdraw += sum(1 for o in stamped if isinstance(o, E.Withdraw))
                n_none += len(res.no_effect)
                log.append([E.encode(o) for o in stamped])
            if n_add + n_withdraw == 0:
                raise InputError("the batch is empty; nothing was published")
            if deferred is not None:
                digest = digest.combine(deferred.result())
            seal = E.Seal(feed.version + 1, stamp, count, digest.digest())
            log.append([E.encode(seal)])
            # Partial tiles and bundle of the new size, before the checkpoint that names them.
            log.finish()
            compact = log.compact
            cp = stamp_note(Checkpoint(feed.origin, compact.size, compact.root()).sign([signer]), [signer], stamp)
            if in_txn is not None:
                in_txn(self.conn, seal.version, compact.size)
            # With cosigning configured the new head is held back (pending) and
            # the old, cosigned one stays served; a crash after the commit
            # leaves a pending version that ``cosign run`` finishes.
            held = self.conn.execute("SELECT 1 FROM feed_cosigning WHERE feed=?", (feed.id,)).fetchone() is not None
            column = "pending_checkpoint" if held else "checkpoint"
            # Signed head last. The WHERE clause is a compare-and-swap: a
            # concurrent publisher would have changed size, and we roll back.
            cur = self.conn.execute(
                "UPDATE feeds SET size=?, version=?, count=?, digest=?, compact=?, updated=?, "
                f"{column}=?{'' if held else ', pending_checkpoint=NULL'} WHERE id=? AND size=?",
                (compact.size, seal.version, count, seal.digest, compact.to_bytes(), stamp, cp, feed.id, feed.size),
            )
            if cur.rowcount != 1:
                raise StorageError(f"feed {name!r} changed during publish; retry")
        if not held:  # a held-back head is recorded when it is served (``promote_checkpoint``)
            self._record_served(name, cp)  # after the commit: the signed head first
        return PublishResult(name, seal.version, feed.size, compact.size, n_add, n_withdraw, n_none, count, held)

    def replace_checkpoint(self, name: str, expected: bytes, note: bytes) -> bool:
        """Store ``note`` (the same checkpoint with extra signature lines, e.g.
        witness cosignatures) if the stored note is still ``expected``.

        Compare-and-swap: False when a publish or another refresh got there
        first; the caller's cosignatures are for an old note and are dropped.
        """
        with write_txn(self.conn):
            cur = self.conn.execute("UPDATE feeds SET checkpoint=? WHERE name=? AND checkpoint=?",
                                    (note, name, expected))
            return cur.rowcount == 1

    def refresh_timestamp(self, name: str, signer: Signer, now: int | None = None) -> bytes | None:
        """Re-stamp the served checkpoint of ``name`` with the log's timestamp
        at ``now`` (``freshness``): same tree, same other signature lines.

        Compare-and-swap on the served note (a concurrent publish or cosigning
        round wins; returns None, and the next refresh stamps the new note).
        A pending checkpoint is left alone: it is stamped at its publish.

        While a version is pending (committed, awaiting cosignatures), the
        served tree was the newest only until that version's commit
        (``updated``), so it is stamped no later than that: saying "newest as
        of now" would keep plain-vkey mirrors fresh on a tree that lacks the
        pending version -- maybe a withdrawal. If the version is never
        cosigned, mirrors go stale ``max_age`` after its commit: fail closed.
        """
        feed = self.feed(name)
        if signer.vkey != feed.vkey:
            raise InputError(f"signer {signer.vkey} is not the key of feed {name!r} ({feed.vkey})")
        self._check_served(feed)
        when = int(time.time()) if now is None else now
        if feed.pending_checkpoint is not None:
            when = min(when, feed.updated)
        note = stamp_note(feed.checkpoint, [signer], when)
        if not self.replace_checkpoint(name, feed.checkpoint, note):
            return None
        self._record_served(name, note)  # a feed published before records existed gets one
        return note

    def promote_checkpoint(self, name: str, pending: bytes, note: bytes) -> bool:
        """Serve ``note`` (the pending checkpoint with its cosignatures) if the
        pending checkpoint is still ``pending``; clear it in the same write.

        Compare-and-swap: False when a newer publish replaced the pending
        checkpoint meanwhile (the caller cosigns that one instead).
        """
        with write_txn(self.conn):
            cur = self.conn.execute("UPDATE feeds SET checkpoint=?, pending_checkpoint=NULL "
                                    "WHERE name=? AND pending_checkpoint=?", (note, name, pending))
            promoted = cur.rowcount == 1
        if promoted:
            self._record_served(name, note)  # served from now on: after the commit, as ``publish``
        return promoted

    def record_witnessed(self, name: str, pending: bytes) -> None:
        """Record ``pending`` (a checkpoint not served yet) as seen by a
        witness (``store.served``): called by ``trust.cosign`` after a round
        in which a witness received it. Logged, not raised, on failure, as
        ``_record_served``."""
        try:
            record_served(self.path, name, pending, witnessed=True)
        except StorageError as e:
            log.warning("feed %s: %s (the record of what witnesses saw is behind)", name, e)

    def signing_problem(self, name: str) -> str | None:
        """Why signing for feed ``name`` would be refused (``signing_problems``), or None."""
        return signing_problems(self.conn, self.path, [name]).get(name)

    def rotate_key(self, name: str, old: Signer | None, new: Signer, key_file: str | None = None) -> bytes:
        """Switch feed ``name`` to log key ``new`` (same name: the origin),
        whose file is ``key_file`` (None: ``HOME/private/NAME.key``), recorded
        in the same write as the new key: the feed's key and where to find it
        change together.

        The current checkpoint is re-signed by both keys, so mirrors on the
        old trust version and on the new one both accept it while they
        rotate. The new key must already be in a published trust version.
        Witness cosignatures are kept: they sign the note text, which does
        not change, so a cosigned checkpoint stays cosigned. A pending
        checkpoint (see ``publish``) is re-signed by both keys too.

        ``old=None`` is the lost-key case: the checkpoints are re-signed by
        ``new`` alone, and only mirrors that already hold a trust version
        listing ``new`` accept them (the log itself is unchanged).
        """
        with write_txn(self.conn):
            feed = self.feed(name)
            if old is not None and old.vkey != feed.vkey:
                raise InputError(f"signer {old.vkey} is not the current key of feed {name!r} ({feed.vkey})")
            if new.name != feed.origin:
                raise InputError(f"key name {new.name!r} must equal the feed origin {feed.origin!r}")
            self._check_served(feed)
            signers = [new] if old is None else [new, old]
            now = int(time.time())
            cp = _resign_note(feed.checkpoint, feed.origin, signers, now)
            pending = (None if feed.pending_checkpoint is None
                       else _resign_note(feed.pending_checkpoint, feed.origin, signers, now))
            cur = self.conn.execute("UPDATE feeds SET vkey=?, checkpoint=?, pending_checkpoint=?, key_file=? "
                                    "WHERE id=? AND size=? AND vkey=?",
                                    (new.vkey, cp, pending, key_file, feed.id, feed.size, feed.vkey))
            if cur.rowcount != 1:
                raise StorageError(f"feed {name!r} changed during key rotation; retry")
        self._record_served(name, cp)  # only the served one: a pending one is recorded when promoted
        return cp

    # ---- recovery from the served log (``store.feed_rebuild``, in its transaction) ----

    def recovery_row(self, name: str, origin: str, vkey: str, access: str, key_file: str | None) -> Feed:
        """The row feed ``name`` is rebuilt into, in the caller's transaction:
        the existing one (a restored older database: rebuilt onwards from its
        size), or a new empty one with no checkpoint yet (committed only
        together with ``install_recovered_head``)."""
        _require_txn(self.conn)
        check_feed_name(name)
        check_access(access)
        row = self.conn.execute(f"SELECT {_FEED_COLUMNS} FROM feeds WHERE name=?", (name,)).fetchone()
        if row is not None:
            feed = Feed(*row)
            if feed.origin != origin:
                raise InputError(f"feed {name!r} here has origin {feed.origin!r}, the log to recover is {origin!r}")
            return feed
        try:
            self.conn.execute(
                "INSERT INTO feeds (name, origin, vkey, size, version, count, digest, compact, checkpoint, updated,"
                " access, key_file) VALUES (?,?,?,0,0,0,?,?,?,?,?,?)",
                (name, origin, vkey, LtHash16().digest(), CompactRange().to_bytes(), b"", int(time.time()),
                 access, key_file))
        except sqlite3.IntegrityError:
            raise InputError(f"another feed here already has origin {origin!r}") from None
        return self.feed(name)

    def install_recovered_head(self, feed: Feed, size: int, version: int, count: int, digest: bytes,
                               compact: CompactRange, note: bytes, vkey: str, key_file: str | None) -> None:
        """Last write of a recovery, in the caller's transaction: the head of
        the rebuilt tree, served with ``note`` (the verified checkpoint the
        source served, signed by the feed's key ``vkey``, whose file is
        ``key_file``). Compare-and-swap on the size the rebuild started from."""
        _require_txn(self.conn)
        cur = self.conn.execute(
            "UPDATE feeds SET size=?, version=?, count=?, digest=?, compact=?, checkpoint=?, pending_checkpoint=NULL,"
            " updated=?, vkey=?, key_file=? WHERE id=? AND size=?",
            (size, version, count, digest, compact.to_bytes(), note, int(time.time()), vkey, key_file, feed.id,
             feed.size))
        if cur.rowcount != 1:
            raise StorageError(f"feed {feed.name!r} changed during recovery; retry")

    def record_served(self, name: str, note: bytes, replace: bool = False) -> None:
        """After a recovery committed: record ``note`` as the newest served
        (``replace``: over a record of another origin)."""
        self._record_served(name, note, replace)

    # ---- the newest checkpoint served, kept outside this database (``store.served``) ----

    def _check_served(self, feed: Feed) -> None:
        """Refuse to sign unless ``feed``'s tree extends the newest checkpoint
        this node recorded as signed (``served.check_extends_served``)."""
        check_extends_served(self.conn, self.path, feed.name, feed.id, feed.origin, feed.size,
                             CompactRange.from_bytes(feed.compact))

    def _record_served(self, name: str, note: bytes, replace: bool = False) -> None:
        """Record ``note``, committed just now, as the newest signed for
        ``name``. Its commit already happened, so a failure here is logged,
        not raised: the version is published, and the next signing of this
        feed records it again (the check accepts a record that lags)."""
        try:
            record_served(self.path, name, note, replace=replace)
        except StorageError as e:
            log.warning("feed %s: %s (the version is published; the record catches up at the next signing)",
                        name, e)

    # ---- cosigning configuration (``trust.cosign``) ----------------------------

    def cosigning(self, name: str) -> str | None:
        """Feed ``name``'s stored cosigning configuration (JSON, read and written
        by ``trust.cosign`` only), or None when it has none."""
        row = self.conn.execute("SELECT c.config FROM feed_cosigning c JOIN feeds f ON f.id = c.feed "
                                "WHERE f.name=?", (name,)).fetchone()
        return None if row is None else row[0]

    def set_cosigning(self, name: str, config: str | None) -> None:
        """Set (or, with None, remove) feed ``name``'s cosigning configuration.

        Removing it while a checkpoint is pending is refused: that version
        would then never be served (finish it with ``cosign run`` first).
        """
        with write_txn(self.conn):
            feed = self.feed(name)
            if config is None:
                if feed.pending_checkpoint is not None:
                    raise InputError(f"feed {name!r} has a pending checkpoint (size {feed.size}); "
                                     "finish it with 'federation cosign run NAME --once' before turning cosigning off")
                self.conn.execute("DELETE FROM feed_cosigning WHERE feed=?", (feed.id,))
                return
            self.conn.execute("INSERT INTO feed_cosigning (feed, config, updated) VALUES (?,?,?) "
                              "ON CONFLICT(feed) DO UPDATE SET config=excluded.config, updated=excluded.updated",
                              (feed.id, config, int(time.time())))

    # ---- the publishing API's batch ids (``net.publish_api``) -------------------

    def open_batch_log(self) -> None:
        """Create the ``api_batches`` table if it does not exist yet."""
        self.conn.executescript(API_BATCHES_SCHEMA)

    def batch(self, name: str, batch_id: str) -> tuple[bytes, int, int, int] | None:
        """(body SHA-256, version, size, time) recorded for ``batch_id`` of feed ``name``, or None."""
        return self.conn.execute(
            "SELECT body_sha256, version, size, time FROM api_batches WHERE feed=? AND batch_id=?",
            (name, batch_id)).fetchone()

    @staticmethod
    def batch_recorder(name: str, batch_id: str, body_sha256: bytes,
                       token: str | None) -> Callable[[sqlite3.Connection, int, int], None]:
        """An ``in_txn`` for ``publish`` that records ``batch_id`` with the
        version it becomes, inside the publish transaction: the batch and its
        id commit together or not at all."""
        def record(conn: sqlite3.Connection, version: int, size: int) -> None:
            conn.execute("INSERT INTO api_batches VALUES (?,?,?,?,?,?,?)",
                         (name, batch_id, body_sha256, version, size, token, int(time.time())))
        return record


def check_access(access: str) -> None:
    if access not in ACCESS_LEVELS:
        raise InputError(f"access must be one of {', '.join(ACCESS_LEVELS)}, got {access!r}")


def stored_access(conn: sqlite3.Connection, name: str) -> str | None:
    """The stored access of feed ``name`` on any connection to a publisher
    database (read-only ones included), or None if there is no such feed.

    A database made before the column existed (not yet migrated: read-only
    readers cannot migrate) has members-only feeds, as ``_migrate`` makes them.
    """
    try:
        row = conn.execute("SELECT access FROM feeds WHERE name=?", (name,)).fetchone()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return None
        if "no such column" not in str(e):
            raise StorageError(f"cannot read the access of feed {name!r}: {e}") from None
        row = conn.execute("SELECT 'members' FROM feeds WHERE name=?", (name,)).fetchone()
    return row[0] if row else None


# ---- queries on any connection (read-only ones too) ----------------------------


def holds_feeds(conn: sqlite3.Connection) -> bool:
    """Whether the database is a publisher's (it has a ``feeds`` table)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='feeds'").fetchone() is not None


def signing_problems(conn: sqlite3.Connection, db_path, names: list[str] | None = None) -> dict[str, str]:
    """Feed name -> why signing for it would be refused (its tree does not
    extend what this node served or sent to witnesses: ``store.served``),
    for the feeds (of ``names``, default all) that cannot sign; on any
    connection, read-only ones too (``doctor``, ``status``)."""
    out = {}
    for fid, name, origin, size, compact in conn.execute("SELECT id, name, origin, size, compact FROM feeds "
                                                         "ORDER BY name").fetchall():
        if names is not None and name not in names:
            continue
        try:
            check_extends_served(conn, db_path, name, fid, origin, size, CompactRange.from_bytes(compact))
        except (UnavailableError, ForkError, StorageError) as e:
            out[name] = str(e)
    return out


def feed_id(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute("SELECT id FROM feeds WHERE name=?", (name,)).fetchone()
    return row[0] if row else None


def feed_names(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM feeds ORDER BY name")]


def feed_keys(conn: sqlite3.Connection) -> dict[str, str]:
    """Feed name -> the vkey its checkpoints are signed with."""
    return dict(conn.execute("SELECT name, vkey FROM feeds").fetchall())


def feed_key_files(conn: sqlite3.Connection) -> dict[str, str | None]:
    """Feed name -> its recorded key file (None: ``HOME/private/NAME.key``);
    a database not migrated yet records none."""
    try:
        return dict(conn.execute("SELECT name, key_file FROM feeds").fetchall())
    except sqlite3.OperationalError as e:
        if "no such column" not in str(e):
            raise StorageError(f"cannot read the feeds' key files: {e}") from None
        return {n: None for n in feed_names(conn)}


def feed_checkpoint(conn: sqlite3.Connection, name: str) -> tuple[int, bytes] | None:
    """(id, served checkpoint) of feed ``name``, or None."""
    return conn.execute("SELECT id, checkpoint FROM feeds WHERE name=?", (name,)).fetchone()


def served_feeds(conn: sqlite3.Connection) -> list[tuple[str, str, str, int, int, bytes | None, bytes]]:
    """(name, origin, vkey, size, version, pending_checkpoint, checkpoint) of
    every feed, by name: what a server lists."""
    return conn.execute("SELECT name, origin, vkey, size, version, pending_checkpoint, checkpoint FROM feeds "
                        "ORDER BY name").fetchall()


def feed_position(conn: sqlite3.Connection, name: str) -> tuple[int, str, int, int, int, bytes | None] | None:
    """(id, origin, size, version, count, pending_checkpoint) of feed ``name``, or None."""
    return conn.execute("SELECT id, origin, size, version, count, pending_checkpoint FROM feeds WHERE name=?",
                        (name,)).fetchone()


def status_feeds(conn: sqlite3.Connection) -> list[Feed]:
    """Every feed with all its columns, by name, through any connection (the
    status page, ``net.status_page``). A database not migrated yet has no
    ``access`` column: the app factories migrate before serving."""
    return [Feed(*r) for r in conn.execute(f"SELECT {_FEED_COLUMNS} FROM feeds ORDER BY name")]


def cosigning_configs(conn: sqlite3.Connection) -> dict[str, str]:
    """Feed name -> its stored cosigning configuration (JSON, ``trust.cosign``'s)."""
    return dict(conn.execute("SELECT f.name, c.config FROM feed_cosigning c JOIN feeds f ON f.id = c.feed"))


def _require_txn(conn: sqlite3.Connection) -> None:
    if not conn.in_transaction:
        raise StorageError("a publisher write that belongs to a larger transaction was called outside one")


class _Withdrawn:
    """Records withdrawn by one publish, to tell a repeated withdrawal (an
    earlier op of the batch already removed its target) from a typo."""

    def __init__(self):
        self.hashes: dict[tuple[str, bytes], set[str]] = {}  # (type, value) -> cases withdrawn
        self.cases: set[str] = set()

    def note(self, changes) -> None:
        for c in changes:
            if c.action == "withdraw":
                self.hashes.setdefault((c.hash_type, c.value), set()).add(c.case)
                self.cases.add(c.case)

    def covers(self, w: E.Withdraw) -> bool:
        if w.by_case:
            return w.case in self.cases
        cases = self.hashes.get((w.hash_type, w.value), set())
        return bool(cases) if w.case is None else w.case in cases


def _resign_note(note_bytes: bytes, origin: str, signers: list[Signer], now: int) -> bytes:
    """``note_bytes`` with its log signatures and log timestamps replaced by
    ``signers``' ones (timestamped ``now``).

    The log's lines are those by keys named after the origin (Ed25519, 64
    bytes, and its timestamps, 72); witness cosignatures are kept.
    """
    note = parse_note(note_bytes)
    cosigs = tuple(s for s in note.signatures if s.name != origin)
    mine = tuple(NoteSignature(s.name, s.verifier.key_id, s.sign(note.text)[4:]) for s in signers)
    return stamp_note(Note(note.text, mine + cosigs).to_bytes(), signers, now)
