"""The mirror's SQLite store: followed feeds, their active sets and logs.

The only module with SQL on ``follows``, ``changes``, ``versions`` and
``staging``; the active set and the tiles go through ``activeset`` and
``tilestore``. Readers on other connections (read-only ones included) use
the query functions below, which take a connection.

Invariant: for every followed feed, the state columns of its ``follows`` row
(``applied_size``, ``compact``, ``version``, ``count``, ``digest``, the
signed checkpoints, ``base_size``/``base_compact``) describe exactly the rows
in ``hashes``, ``tiles`` and ``changes`` for that feed. They change together,
only inside ``apply_version`` (one transaction per version) or a snapshot
bootstrap's one transaction (``sync.bootstrap.load_snapshot``, which ends
with ``record_replacement`` and ``install_snapshot_head``) or a heal's one
transaction (``sync.heal``, which ends with ``adopt_head``), each ending with
a compare-and-swap of the head on ``applied_size``: a crash leaves the last
applied version and nothing of the next. ``replace_served_note`` swaps the
served note for one of the same tree. Other writes touch only configuration
(``vkeys``: ``follow``, ``set_upstreams``, and ``set_trusted_keys`` inside a
trust rotation step's transaction; ``urls``; ``max_age``) and sync
bookkeeping (``last_sync``, ``last_error``, ``sync_failed``, ``fresh_time``,
``damaged``).

A damaged feed (``damaged`` set by ``mark_damaged`` when an audit finds its
rows, digest or tree wrong) is never answered from (``readiness``); the
next sync rebuilds it from the upstreams into a fresh database and swaps
the result in (``sync.heal``), which clears the mark.

Freshness (``federation.freshness``): ``fresh_time`` is the newest verified
time at which the applied tree was known to be the feed's newest (the log's
own timestamp, a witness quorum's, or the last applied seal's); it only moves
forward, and only for the tree the mirror holds. ``max_age`` bounds its age
for lookups (``readiness``). ``sync_failed`` is the error kind of the last
sync when it failed as a whole (NULL after a success), distinct from
``last_error``, which also keeps evidence about upstreams that failed while
another one succeeded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from federation.core import entries as E
from federation.store.activeset import SCHEMA as ACTIVE_SCHEMA, ActiveSet, distinct_value_batches, distinct_values, \
    find, join_labels
from federation.core.checkpoint import Checkpoint, parse_checkpoint_body
from federation.store.db import Store, write_txn
from federation.store.mirror_audit import audit_follow
from federation.core.errors import DigestError, InputError, StorageError, UnavailableError
from federation.core.freshness import DEFAULT_MAX_AGE, check_origin, usable_time
from federation.core.lthash import LtHash16
from federation.core.merkle import CompactRange, leaf_hash
from federation.core.names import check_feed_name
from federation.core.note import parse_note, parse_vkey
from federation.store.tilestore import SCHEMA as TILES_SCHEMA, TileStore
from federation.core.verify import TrustedState, Version

SCHEMA = """
CREATE TABLE IF NOT EXISTS follows (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL UNIQUE,
    vkeys TEXT NOT NULL,               -- trusted log keys, one per line
    urls TEXT NOT NULL,                -- tlog-tiles prefixes, one per line, tried in order
    verified_checkpoint BLOB,          -- newest verified signed note (may be ahead of applied)
    checkpoint BLOB,                   -- newest signed note with size <= applied_size (re-served by relays)
    applied_size INTEGER NOT NULL DEFAULT 0,
    compact BLOB NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    count INTEGER NOT NULL DEFAULT 0,
    digest BLOB NOT NULL,
    updated INTEGER,
    last_sync INTEGER,
    last_error TEXT,
    base_size INTEGER NOT NULL DEFAULT 0,  -- first entry held (> 0 after a snapshot bootstrap)
    base_compact BLOB,                     -- compact range at base_size
    max_age INTEGER NOT NULL DEFAULT 86400,  -- seconds a lookup may trust fresh_time (follow --max-age)
    fresh_time INTEGER,                    -- newest verified time the applied tree was current
    sync_failed TEXT,                      -- kind of the error that failed the last sync, NULL if it succeeded
    witnessed INTEGER NOT NULL DEFAULT 0,  -- 1: followed under a trust file: only a witness quorum vouches freshness
    token_env TEXT,                        -- environment variable holding the upstream member token (never the token)
    damaged TEXT                           -- what an audit found wrong (lookups fail closed until a sync heals it)
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    feed INTEGER NOT NULL,
    version INTEGER NOT NULL,
    action TEXT NOT NULL,              -- add | relabel | withdraw
    hash_type TEXT NOT NULL,
    value BLOB NOT NULL,
    case_id TEXT NOT NULL,
    labels TEXT NOT NULL,
    reason TEXT,
    time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    feed INTEGER NOT NULL,
    version INTEGER NOT NULL,
    size INTEGER NOT NULL,
    time INTEGER NOT NULL,
    count INTEGER NOT NULL,
    applied_at INTEGER NOT NULL,
    PRIMARY KEY (feed, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS staging (        -- verified entries of a version too big for memory
    feed INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (feed, idx)
) WITHOUT ROWID;
-- Lookups by value go through follows (a handful of rows) into the primary
-- key (feed, hash_type, value, ...): no second index over every hash. Older
-- mirrors had one; it is dropped.
DROP INDEX IF EXISTS hashes_by_value;
""" 


@dataclass(frozen=True)
class Follow:
    id: int
    name: str
    origin: str
    vkeys: tuple[str, ...]
    urls: tuple[str, ...]
    verified_checkpoint: bytes | None
    checkpoint: bytes | None
    applied_size: int
    compact: bytes
    version: int
    count: int
    digest: bytes
    updated: int | None
    last_sync: int | None
    last_error: str | None
    base_size: int
    base_compact: bytes | None
    max_age: int = DEFAULT_MAX_AGE
    fresh_time: int | None = None
    sync_failed: str | None = None
    witnessed: int = 0  # under a trust file: fresh_time comes from witness quorums only
    token_env: str | None = None  # name of the variable holding the upstream member token (follow --token-env)
    damaged: str | None = None  # problems an audit found in the rows (``mark_damaged``); None: none known

    def verified(self) -> Checkpoint | None:
        if self.verified_checkpoint is None:
            return None
        return parse_checkpoint_body(parse_note(self.verified_checkpoint).text)

    def trusted_state(self) -> TrustedState:
        return TrustedState(self.verified(), self.applied_size, CompactRange.from_bytes(self.compact), self.version)


# Columns by name, never ``SELECT *``: databases migrated at different times
# hold the added columns in different orders.
FOLLOW_COLUMNS = ", ".join(f.name for f in dataclasses.fields(Follow))


def _follow(row) -> Follow:
    r = list(row)
    r[3] = tuple(r[3].split("\n"))
    r[4] = tuple(r[4].split("\n"))
    return Follow(*r)


def read_follows(conn: sqlite3.Connection) -> list[Follow]:
    """Every followed feed, by name, through any connection (read-only ones too)."""
    return [_follow(r) for r in conn.execute(f"SELECT {FOLLOW_COLUMNS} FROM follows ORDER BY name")]


# ---- queries on any connection (read-only ones too) ----------------------------


def holds_follows(conn: sqlite3.Connection) -> bool:
    """Whether the database is a mirror's (it has a ``follows`` table)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='follows'").fetchone() is not None


def follow_id(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute("SELECT id FROM follows WHERE name=?", (name,)).fetchone()
    return row[0] if row else None


def follow_names(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM follows ORDER BY name")]


def follow_ids(conn: sqlite3.Connection) -> dict[int, str]:
    """Followed feed id -> name."""
    return dict(conn.execute("SELECT id, name FROM follows"))


def origins(conn: sqlite3.Connection) -> dict[str, str]:
    """Followed feed name -> origin."""
    return dict(conn.execute("SELECT name, origin FROM follows"))


def follow_versions(conn: sqlite3.Connection) -> dict[int, int]:
    """Followed feed id -> last applied version."""
    return dict(conn.execute("SELECT id, version FROM follows"))


def follow_checkpoint(conn: sqlite3.Connection, name: str) -> tuple[int, bytes | None] | None:
    """(id, served checkpoint) of followed feed ``name``, or None. The served
    checkpoint is the newest signed note the mirror holds every tile of
    (``apply_version``); None before the first complete version."""
    return conn.execute("SELECT id, checkpoint FROM follows WHERE name=?", (name,)).fetchone()


def served_follows(conn: sqlite3.Connection) -> list[tuple[str, str, str, int, int, bytes | None]]:
    """(name, origin, vkeys, applied_size, version, checkpoint) of every
    followed feed, by name: what a relay lists."""
    return conn.execute("SELECT name, origin, vkeys, applied_size, version, checkpoint FROM follows "
                        "ORDER BY name").fetchall()


def base_size(conn: sqlite3.Connection, feed_id: int) -> int:
    """The first entry followed feed ``feed_id`` holds (> 0 after a snapshot bootstrap)."""
    return conn.execute("SELECT base_size FROM follows WHERE id=?", (feed_id,)).fetchone()[0]


def sync_status(conn: sqlite3.Connection) -> list[tuple]:
    """(name, version, applied_size, verified_checkpoint, count, last_sync,
    sync_failed, updated) of every followed feed, by name (metrics).
    ``sync_failed``: the kind of error that failed the last sync as a whole,
    None after a success (even one that needed a later upstream)."""
    return conn.execute("SELECT name, version, applied_size, verified_checkpoint, count, last_sync, sync_failed,"
                        " updated FROM follows ORDER BY name").fetchall()


def lookup_rows(conn: sqlite3.Connection, hash_type: str, value: bytes,
                feeds: dict[int, str] | None = None) -> list[tuple[str, str, str, int]]:
    """(feed name, case, labels, added version) of the active records of
    ``hash_type`` ``value`` in every followed feed (those of ``feeds``, id ->
    name from ``follow_ids``, when given), by feed name and case.

    Through the followed feeds into the primary key of ``hashes``
    (``feed, hash_type, value, ...``): no index over every hash is needed.
    """
    feeds = follow_ids(conn) if feeds is None else feeds
    rows = find(conn, feeds, hash_type, value)
    if not rows:  # the usual answer: no match
        return []
    return sorted([(feeds[f], case, labels, version) for f, case, labels, version in rows])


def active_values(conn: sqlite3.Connection, hash_type: str) -> list[bytes]:
    """The distinct values of active ``hash_type`` records of every followed feed."""
    return distinct_values(conn, follow_ids(conn), hash_type)


def active_value_batches(conn: sqlite3.Connection, hash_type: str, size: int = 1 << 16):
    """``active_values`` in lists of at most ``size`` values."""
    return distinct_value_batches(conn, follow_ids(conn), hash_type, size)


def follow_states(conn: sqlite3.Connection) -> dict[int, tuple[str, int, bytes]]:
    """Followed feed id -> (origin, applied version, active-set digest): what a
    derived structure (the PDQ index file) records to know which mirror state
    it was built from."""
    return {i: (o, v, bytes(d)) for i, o, v, d in conn.execute("SELECT id, origin, version, digest FROM follows")}


def change_fingerprint(conn: sqlite3.Connection, seq: int) -> bytes | None:
    """SHA-256 of change row ``seq`` (None if there is none, e.g. pruned).
    Sequence numbers are never reused (AUTOINCREMENT), so a row with the same
    fingerprint at ``seq`` means the same change stream up to ``seq``."""
    row = conn.execute("SELECT seq, feed, version, action, hash_type, value, case_id, labels FROM changes"
                       " WHERE seq=?", (seq,)).fetchone()
    if row is None:
        return None
    h = hashlib.sha256()
    for field_ in row:
        b = field_ if isinstance(field_, bytes) else str(field_).encode()
        h.update(len(b).to_bytes(8, "big") + b)
    return h.digest()


def first_change_seq(conn: sqlite3.Connection) -> int | None:
    """The oldest change row's ``seq`` (None when there is none)."""
    return conn.execute("SELECT min(seq) FROM changes").fetchone()[0]


def change_rows(conn: sqlite3.Connection, after: int, limit: int, feed: str | None = None, upto: int | None = None,
                feeds: frozenset[str] | None = None) -> list[tuple]:
    """Change stream rows with ``after < seq [<= upto]``, oldest first, at most
    ``limit``, with their feed's name and origin: (seq, name, origin, version,
    action, hash_type, value, case_id, labels, reason, time). Only of
    ``feed``, and of the feeds in ``feeds``, when given."""
    sql = ("SELECT c.seq, f.name, f.origin, c.version, c.action, c.hash_type, c.value, c.case_id, c.labels,"
           " c.reason, c.time FROM changes c JOIN follows f ON f.id=c.feed WHERE c.seq>?")
    args: list = [after]
    if upto is not None:
        sql += " AND c.seq<=?"
        args.append(upto)
    if feed is not None:
        sql += " AND f.name=?"
        args.append(feed)
    if feeds is not None:
        names = sorted(feeds)
        sql += f" AND f.name IN ({','.join('?' * len(names))})"
        args.extend(names)
    sql += " ORDER BY c.seq LIMIT ?"
    args.append(limit)
    return conn.execute(sql, args).fetchall()


def changes_head(conn: sqlite3.Connection) -> int:
    """The newest change stream ``seq`` (0 when empty)."""
    return conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]


def change_values(conn: sqlite3.Connection, hash_type: str, after: int, upto: int) -> list[tuple[int, str, bytes]]:
    """(seq, action, value) of the changes of ``hash_type`` records with ``after < seq <= upto``, in order."""
    return conn.execute("SELECT seq, action, value FROM changes WHERE seq>? AND seq<=? AND hash_type=? ORDER BY seq",
                        (after, upto, hash_type)).fetchall()


def has_changes(conn: sqlite3.Connection, feed_id: int, version: int) -> bool:
    """Whether version ``version`` of feed ``feed_id`` left any change row."""
    return conn.execute("SELECT 1 FROM changes WHERE feed=? AND version=? LIMIT 1",
                        (feed_id, version)).fetchone() is not None


def recent_changes(conn: sqlite3.Connection, feed_id: int, limit: int) -> list[tuple]:
    """The newest ``limit`` changes of followed feed ``feed_id``, newest first:
    (seq, version, action, hash_type, value, case_id, reason, time)."""
    return conn.execute("SELECT seq, version, action, hash_type, value, case_id, reason, time FROM changes"
                        " WHERE feed=? ORDER BY seq DESC LIMIT ?", (feed_id, limit)).fetchall()


def set_trusted_keys(conn: sqlite3.Connection, name: str, origin: str, vkeys: list[str],
                     window: tuple[int, int] | None = None) -> None:
    """Replace followed feed ``name``'s trusted log keys, inside the caller's
    write transaction: a trust rotation step (``trust.rotation``) stores the
    new trust version and these keys together, or neither.

    ``window`` (old, new ``max_staleness_seconds``): the feed's maximum age
    follows the trust file -- it becomes the new window if it was the old
    one (the default under a trust file), else the shorter of the two, so a
    rotation that shortens the window reaches lookups at once."""
    _require_txn(conn)
    old, new = window if window is not None else (None, None)
    cur = conn.execute("UPDATE follows SET vkeys=?, max_age=CASE WHEN ? IS NULL THEN max_age WHEN max_age=? THEN ?"
                       " ELSE min(max_age, ?) END WHERE name=? AND origin=?",
                       ("\n".join(vkeys), new, old, new, new, name, origin))
    if cur.rowcount != 1:
        raise StorageError(f"no followed feed {name} with origin {origin}")


def _require_txn(conn: sqlite3.Connection) -> None:
    if not conn.in_transaction:
        raise StorageError("a mirror write that belongs to a larger transaction was called outside one")


MAX_MAX_AGE = 366 * 86400
# fresh_time moved forward to a time bound twice (NULL: no usable time, unchanged).
_FORWARD = "CASE WHEN ? IS NULL THEN fresh_time ELSE max(coalesce(fresh_time, 0), ?) END"
# The kinds a failed sync records (``FederationError.kind`` of what it raised).
RECORDED_KINDS = frozenset({"verification", "signature", "rollback", "fork", "digest", "malformed", "stale",
                            "transport", "auth", "storage", "input", "internal", "unavailable"})


def check_token_env(name) -> None:
    """A token variable is an environment variable name (or None)."""
    if name is not None and (not isinstance(name, str) or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name) is None):
        raise InputError(f"token variable must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got {name!r}")


def check_max_age(max_age) -> int:
    if type(max_age) is not int or not 1 <= max_age <= MAX_MAX_AGE:
        raise InputError(f"maximum age must be 1..{MAX_MAX_AGE} seconds, got {max_age!r}")
    return max_age


@dataclass(frozen=True)
class Match:
    feed: str
    hash_type: str
    value: bytes
    case: str
    labels: tuple[str, ...]
    added_version: int


class Mirror(Store):
    SCHEMA = TILES_SCHEMA + ACTIVE_SCHEMA + SCHEMA

    def __init__(self, path: Path | str):
        super().__init__(path)
        self._migrate()

    @classmethod
    def existing(cls, path: Path | str) -> "Mirror":
        """Open a mirror database that must already exist (read-only commands:
        they never create one). ``UnavailableError`` if it does not."""
        if not Path(path).is_file():
            raise UnavailableError(f"no mirror database at {path}: this node follows no feed "
                                   "(see 'federation follow', or check --home / FEDERATION_HOME)")
        return cls(path)

    def _migrate(self) -> None:
        """Columns added after a database may have been created, in one write
        transaction (checked again inside it: two processes opening an old
        database at once must not both add a column).

        A mirror that predates freshness starts from its last applied seal's
        time. One that predates ``sync_failed`` recorded a failed sync as
        ``"<kind>: <message>"`` in ``last_error`` (and cleared it on success),
        so that kind becomes ``sync_failed``: a feed whose last sync found a
        fork stays closed across the upgrade (``readiness``).
        """
        columns = (("base_size", "INTEGER NOT NULL DEFAULT 0"), ("base_compact", "BLOB"),
                   ("max_age", f"INTEGER NOT NULL DEFAULT {DEFAULT_MAX_AGE}"), ("fresh_time", "INTEGER"),
                   ("sync_failed", "TEXT"), ("witnessed", "INTEGER NOT NULL DEFAULT 0"),
                   ("token_env", "TEXT"), ("damaged", "TEXT"))

        def missing() -> list[tuple[str, str]]:
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(follows)")}
            return [(c, decl) for c, decl in columns if c not in have]
        if not missing():
            return
        with write_txn(self.conn):
            added = {c for c, _ in missing()}
            for column, decl in missing():
                self.conn.execute(f"ALTER TABLE follows ADD COLUMN {column} {decl}")
            if "fresh_time" in added:
                self.conn.execute("UPDATE follows SET fresh_time=(SELECT max(v.time) FROM versions v "
                                  "WHERE v.feed=follows.id)")
            if "sync_failed" in added:
                for fid, error in self.conn.execute("SELECT id, last_error FROM follows "
                                                    "WHERE last_error IS NOT NULL").fetchall():
                    kind = error.partition(":")[0]
                    if kind in RECORDED_KINDS:
                        self.conn.execute("UPDATE follows SET sync_failed=? WHERE id=?", (kind, fid))

    def close(self) -> None:
        self.conn.close()

    # ---- follows ---------------------------------------------------------------

    def follow(self, name: str, origin: str, vkeys: list[str], urls: list[str],
               max_age: int = DEFAULT_MAX_AGE, witnessed: bool = False, token_env: str | None = None) -> Follow:
        """Start following a feed. ``max_age``: seconds after the newest
        verified timestamp that lookups still trust the feed (``freshness``).
        ``witnessed`` (a feed followed under a trust file): only a witness
        quorum's time counts as that timestamp, never the log's own word.
        ``token_env``: the environment variable a sync reads the upstream's
        member token from (a members-only feed); the token is never stored."""
        check_feed_name(name)
        check_token_env(token_env)
        for v in vkeys:
            parse_vkey(v)  # InputError on a bad key
        if not urls:
            raise InputError("at least one upstream URL is needed")
        check_origin(origin)
        check_max_age(max_age)
        with write_txn(self.conn):
            try:
                self.conn.execute(
                    "INSERT INTO follows (name, origin, vkeys, urls, compact, digest, max_age, witnessed, token_env)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    (name, origin, "\n".join(vkeys), "\n".join(urls), CompactRange().to_bytes(), LtHash16().digest(),
                     max_age, int(witnessed), token_env),
                )
            except sqlite3.IntegrityError:
                raise InputError(f"already following a feed named {name!r} or with origin {origin!r}") from None
        return self.get(name)

    def get(self, name: str) -> Follow:
        row = self.conn.execute(f"SELECT {FOLLOW_COLUMNS} FROM follows WHERE name=?", (name,)).fetchone()
        if row is None:
            raise InputError(f"not following a feed named {name!r} (see 'federation follow')")
        return self._follow(row)

    def all(self) -> list[Follow]:
        return read_follows(self.conn)

    @staticmethod
    def _follow(row) -> Follow:
        return _follow(row)

    def replace_served_note(self, name: str, expected: bytes | None, note: bytes, verified: Checkpoint) -> bool:
        """Serve ``note``, a verified signed note of the tree the mirror holds
        (same size and root, e.g. with fresher witness cosignatures), in place
        of ``expected``. Compare-and-swap: False if the mirror moved or the
        served note changed meanwhile. Relays re-serve this note, so their
        followers see the publisher's refreshed cosignatures, not a freeze."""
        with write_txn(self.conn):
            f = self.get(name)
            if (f.checkpoint != expected or f.applied_size != verified.size
                    or CompactRange.from_bytes(f.compact).root() != verified.root):
                return False
            self.conn.execute("UPDATE follows SET checkpoint=?, verified_checkpoint=? WHERE id=?",
                              (note, note, f.id))
            return True

    def record_sync(self, name: str, error: str | None, failed: str | None = None) -> None:
        """Record a sync's outcome: ``error``, evidence about failing upstreams
        (also after a success from another one); ``failed``, the error kind
        when the sync as a whole failed (None: it succeeded)."""
        self.conn.execute("UPDATE follows SET last_sync=?, last_error=?, sync_failed=? WHERE name=?",
                          (int(time.time()), error, failed, name))

    def mark_witnessed(self, name: str) -> None:
        """From now on only witness quorums vouch for ``name``'s freshness
        (a feed followed under a trust file; older mirrors learn it here)."""
        self.conn.execute("UPDATE follows SET witnessed=1 WHERE name=? AND witnessed=0", (name,))

    def mark_damaged(self, name: str, problems: list[str]) -> None:
        """Record that an audit found feed ``name``'s rows wrong: lookups
        fail closed (``readiness``) until a sync heals it (``sync.heal``)."""
        self.conn.execute("UPDATE follows SET damaged=? WHERE name=?", ("; ".join(problems) or "damaged", name))

    def seal_time(self, name: str) -> int | None:
        """The signed time of the last version applied to feed ``name`` (None: none)."""
        row = self.conn.execute("SELECT v.time FROM versions v JOIN follows f ON f.id = v.feed WHERE f.name=? "
                                "ORDER BY v.version DESC LIMIT 1", (name,)).fetchone()
        return row[0] if row else None

    def record_freshness(self, name: str, size: int, when: int | None) -> None:
        """The tree of ``size`` was verified current at ``when``: move
        ``fresh_time`` forward, if the mirror still holds that tree."""
        if when is None:
            return
        self.conn.execute("UPDATE follows SET fresh_time=max(coalesce(fresh_time, 0), ?) "
                          "WHERE name=? AND applied_size=?", (when, name, size))

    def set_max_age(self, name: str, max_age: int) -> None:
        check_max_age(max_age)
        self.get(name)
        self.conn.execute("UPDATE follows SET max_age=? WHERE name=?", (max_age, name))

    def set_upstreams(self, name: str, vkeys: list[str], urls: list[str]) -> None:
        """Replace feed ``name``'s trusted log keys and upstream URLs (a node
        config is the truth for them: ``node.config.prepare_mirror``)."""
        with write_txn(self.conn):
            self.conn.execute("UPDATE follows SET vkeys=?, urls=? WHERE id=?",
                              ("\n".join(vkeys), "\n".join(urls), self.get(name).id))

    # ---- applying --------------------------------------------------------------

    def stage(self, name: str, start: int, encoded: list[bytes]) -> None:
        """Keep verified entries of a version that is too big for memory, in
        their own short transaction. Staged rows are not part of the mirror:
        only ``apply_version`` of the whole version makes them count, and a
        crash leaves rows the next sync overwrites (``clear_staging``)."""
        with write_txn(self.conn):
            fid = self.get(name).id
            self.conn.executemany("INSERT OR REPLACE INTO staging VALUES (?,?,?)",
                                  [(fid, start + i, raw) for i, raw in enumerate(encoded)])

    def clear_staging(self, name: str) -> None:
        with write_txn(self.conn):
            self.conn.execute("DELETE FROM staging WHERE feed=?", (self.get(name).id,))

    def _staged(self, feed: int, start: int, end: int, chunk: int = 16_384):
        """(ops, encoded, leaf hashes) of staged entries [start, end), in chunks."""
        for lo in range(start, end, chunk):
            hi = min(end, lo + chunk)
            encoded = [d for (d,) in self.conn.execute(
                "SELECT data FROM staging WHERE feed=? AND idx>=? AND idx<? ORDER BY idx", (feed, lo, hi))]
            if len(encoded) != hi - lo:
                raise StorageError(f"staged entries {lo}..{hi} of feed {feed} are missing; sync again")
            entries = [E.decode(raw) for raw in encoded]
            yield [e for e in entries if not isinstance(e, E.Seal)], encoded, [leaf_hash(raw) for raw in encoded]

    def apply_version(self, name: str, v: Version, verified_note: bytes, verified: Checkpoint) -> None:
        """Apply one verified version in one transaction, or nothing.

        ``v``'s entries were already authenticated against ``verified`` (a
        staged version's were staged after that); here the seal's count and
        digest are checked against the mirror's own state after applying, and
        any mismatch rolls back (``DigestError``). A staged version is read
        back in chunks, so memory stays bounded whatever its size.
        """
        with write_txn(self.conn):
            f = self.get(name)
            if f.applied_size != v.start:
                raise StorageError(f"feed {name}: mirror is at {f.applied_size}, version starts at {v.start}; "
                                   "another sync ran concurrently")
            active = ActiveSet(self.conn, f.id)
            digest, count = LtHash16(f.digest), f.count
            log = TileStore(self.conn, f.id).appender(f.applied_size, CompactRange.from_bytes(f.compact))
            chunks = self._staged(f.id, v.start, v.end) if v.staged else [(v.ops, v.encoded, v.hashes)]
            staged = hashlib.sha256()
            for ops, encoded, hashes in chunks:
                staged.update(b"".join(hashes))
                # 1. rows of the active set
                res = active.apply(ops, v.seal.version, digest, count)
                digest, count = res.digest, res.count
                # 2. change stream rows
                self.conn.executemany(
                    "INSERT INTO changes (feed, version, action, hash_type, value, case_id, labels, reason, time)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    [(f.id, v.seal.version, c.action, c.hash_type, c.value, c.case, join_labels(c.labels),
                      c.reason, v.seal.time) for c in res.changes],
                )
                # 3. tiles and bundles, rebuilt from the verified entries
                log.append(encoded, hashes)
            if v.staged and staged.digest() != v.staged_digest:
                # Rows another sync of this mirror staged (from another view of
                # the log) in place of ours: not what this sync verified.
                raise StorageError(f"feed {name}: staged entries {v.start}..{v.end} are not the ones this sync "
                                   "verified (another sync ran concurrently); sync again")
            if count != v.seal.count or digest.digest() != v.seal.digest:
                raise DigestError(
                    f"feed {name} version {v.seal.version}: seal says {v.seal.count} hashes and digest "
                    f"{v.seal.digest[:8].hex()}..., mirror computes {count} and {digest.digest()[:8].hex()}...")
            log.finish()
            if v.staged:
                self.conn.execute("DELETE FROM staging WHERE feed=? AND idx>=? AND idx<?", (f.id, v.start, v.end))
            # 4. last, the head: position, digest, and the signed checkpoints.
            # A relay re-serves `checkpoint`: during a multi-version catch-up it
            # keeps the last complete one (its tiles stay stored) until the
            # verified one is fully applied.
            served = verified_note if v.end == verified.size else f.checkpoint
            now = int(time.time())
            self.conn.execute(
                "INSERT INTO versions VALUES (?,?,?,?,?,?)",
                (f.id, v.seal.version, v.end, v.seal.time, count, now),
            )
            # The seal's time is signed (it is in the log): at that time this
            # version was the feed's newest, so the applied tree was current --
            # the log's word, which a feed under a trust file does not take.
            # One beyond the clock-skew allowance (this machine's clock behind)
            # counts for nothing: fresh_time stays as it was (NULL stays NULL).
            sealed = None if f.witnessed else usable_time(v.seal.time, now, f.max_age)
            cur = self.conn.execute(
                "UPDATE follows SET verified_checkpoint=?, checkpoint=?, applied_size=?, compact=?, version=?,"
                f" count=?, digest=?, updated=?, fresh_time={_FORWARD} WHERE id=? AND applied_size=?",
                (verified_note, served, v.end, log.compact.to_bytes(), v.seal.version, count,
                 digest.digest(), now, sealed, sealed, f.id, f.applied_size),
            )
            if cur.rowcount != 1:
                raise StorageError(f"feed {name} changed during apply; retry")

    # ---- a snapshot bootstrap (inside ``sync.bootstrap.load_snapshot``'s transaction) ----

    def record_replacement(self, feed_id: int, version: int, when: int) -> None:
        """Change rows for the active set a snapshot replaced (``ActiveSet.set_aside``)
        -> the rows now held, stamped with the snapshot's seal: ``withdraw``
        (reason ``rebootstrap``) for records gone, ``relabel``, then ``add``.
        In the caller's transaction, so consumers see the bootstrap with it."""
        _require_txn(self.conn)
        active = ActiveSet(self.conn, feed_id)
        for select, params in active.replacement_changes():
            self.conn.execute("INSERT INTO changes (feed, version, time, action, hash_type, value, case_id, labels,"
                              " reason) SELECT ?, ?, ?, " + select, (feed_id, version, when, *params))
        active.clear_aside()

    def install_snapshot_head(self, f: Follow, expect_size: int, note: bytes, served: bytes | None, size: int,
                              compact: CompactRange, seal: E.Seal, count: int) -> None:
        """Last writes of a snapshot bootstrap, in the caller's transaction: the
        version row, then the head (position, digest, signed checkpoints and
        the base the mirror now starts from), compare-and-swap on
        ``expect_size``: ``StorageError`` if another sync moved the feed."""
        _require_txn(self.conn)
        self.conn.execute("INSERT OR REPLACE INTO versions VALUES (?,?,?,?,?,?)",
                          (f.id, seal.version, size, seal.time, count, int(time.time())))
        now = int(time.time())
        # The seal's signed time (freshness; None: unusable), unless only witnesses vouch for this feed.
        sealed = None if f.witnessed else usable_time(seal.time, now, f.max_age)
        cur = self.conn.execute(
            "UPDATE follows SET verified_checkpoint=?, checkpoint=?, applied_size=?, compact=?, version=?,"
            f" count=?, digest=?, updated=?, base_size=?, base_compact=?, fresh_time={_FORWARD}"
            " WHERE id=? AND applied_size=?",
            (note, served, size, compact.to_bytes(), seal.version, count, seal.digest,
             now, size, compact.to_bytes(), sealed, sealed, f.id, expect_size))
        if cur.rowcount != 1:
            raise StorageError(f"feed {f.name} changed during bootstrap; retry")

    def adopt_head(self, f: Follow, healed: Follow, versions: list[tuple]) -> None:
        """Last writes of a heal, in the caller's transaction (``sync.heal``,
        after the active set and the tiles were replaced): the version rows
        and staged rows of damaged feed ``f`` replaced by ``versions`` (the
        healed copy's), then its head set to ``healed``'s (the same feed,
        rebuilt and audited in another database) and the damage mark
        cleared. Compare-and-swap on ``f``'s applied size and mark:
        ``StorageError`` if another sync moved or healed the feed."""
        _require_txn(self.conn)
        self.conn.execute("DELETE FROM staging WHERE feed=?", (f.id,))
        self.conn.execute("DELETE FROM versions WHERE feed=?", (f.id,))
        self.conn.executemany("INSERT INTO versions VALUES (?,?,?,?,?,?)", [(f.id, *v[1:]) for v in versions])
        cur = self.conn.execute(
            "UPDATE follows SET verified_checkpoint=?, checkpoint=?, applied_size=?, compact=?, version=?, count=?,"
            " digest=?, updated=?, base_size=?, base_compact=?, fresh_time=?, damaged=NULL, sync_failed=NULL,"
            " last_error=NULL WHERE id=? AND applied_size=? AND damaged IS NOT NULL",
            (healed.verified_checkpoint, healed.checkpoint, healed.applied_size, healed.compact, healed.version,
             healed.count, healed.digest, int(time.time()), healed.base_size, healed.base_compact,
             healed.fresh_time, f.id, f.applied_size))
        if cur.rowcount != 1:
            raise StorageError(f"feed {f.name} changed during the heal; sync again")

    def version_rows(self, name: str) -> list[tuple]:
        """The ``versions`` rows of feed ``name``, oldest first (a heal copies them)."""
        return self.conn.execute("SELECT v.* FROM versions v JOIN follows f ON f.id=v.feed WHERE f.name=?"
                                 " ORDER BY v.version", (name,)).fetchall()

    # ---- queries ----------------------------------------------------------------

    def lookup(self, hash_type: str, value: bytes) -> list[Match]:
        return [Match(n, hash_type, value, c, tuple(x for x in labels.split(",") if x), ver)
                for n, c, labels, ver in lookup_rows(self.conn, hash_type, value)]

    def changes(self, name: str, after: int = 0, limit: int = 1000) -> list[dict]:
        f = self.get(name)
        rows = self.conn.execute(
            "SELECT seq, version, action, hash_type, value, case_id, labels, reason, time FROM changes"
            " WHERE feed=? AND seq>? ORDER BY seq LIMIT ?", (f.id, after, limit)).fetchall()
        return [dict(seq=s, version=v, action=a, type=t, hash=val.hex(), case=c,
                     labels=[x for x in lab.split(",") if x], reason=r, time=tm)
                for s, v, a, t, val, c, lab, r, tm in rows]

    def audit(self, name: str) -> list[str]:
        """Recompute digest, count and root from the mirror's own rows
        (``mirror_audit``). Returns the problems found (none: consistent)."""
        return audit_follow(self.conn, self.get(name))
