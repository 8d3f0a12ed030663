"""The mirror's SQLite store: followed feeds, their active sets and logs.

Invariant: for every followed feed, the row in ``follows`` describes exactly
the rows in ``hashes``, ``tiles`` and ``changes`` for that feed. Both change
only inside ``apply_version``, one transaction per version, so a crash leaves
the last applied version and nothing of the next.

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

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from federation.core import entries as E
from federation.store.activeset import SCHEMA as ACTIVE_SCHEMA, ActiveSet, join_labels
from federation.core.checkpoint import Checkpoint, parse_checkpoint_body
from federation.store.db import Store, write_txn
from federation.core.errors import DigestError, InputError, StorageError, UnavailableError
from federation.core.freshness import DEFAULT_MAX_AGE, check_origin, usable_time
from federation.core.lthash import LtHash16
from federation.core.merkle import CompactRange, leaf_hash
from federation.core.names import check_feed_name
from federation.core.note import parse_note, parse_vkey
from federation.core.tiles import parse_bundle
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
    sync_failed TEXT                       -- kind of the error that failed the last sync, NULL if it succeeded
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

    def verified(self) -> Checkpoint | None:
        if self.verified_checkpoint is None:
            return None
        return parse_checkpoint_body(parse_note(self.verified_checkpoint).text)

    def trusted_state(self) -> TrustedState:
        return TrustedState(self.verified(), self.applied_size, CompactRange.from_bytes(self.compact), self.version)


def _follow(row) -> Follow:
    r = list(row)
    r[3] = tuple(r[3].split("\n"))
    r[4] = tuple(r[4].split("\n"))
    return Follow(*r)


def read_follows(conn: sqlite3.Connection) -> list[Follow]:
    """Every followed feed, by name, through any connection (read-only ones too)."""
    return [_follow(r) for r in conn.execute("SELECT * FROM follows ORDER BY name")]


MAX_MAX_AGE = 366 * 86400


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
        """Columns added after a database may have been created. A mirror that
        predates freshness starts from its last applied seal's time."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(follows)")}
        added = False
        for column, decl in (("base_size", "INTEGER NOT NULL DEFAULT 0"), ("base_compact", "BLOB"),
                             ("max_age", f"INTEGER NOT NULL DEFAULT {DEFAULT_MAX_AGE}"), ("fresh_time", "INTEGER"),
                             ("sync_failed", "TEXT")):
            if column not in have:
                self.conn.execute(f"ALTER TABLE follows ADD COLUMN {column} {decl}")
                added = added or column == "fresh_time"
        if added:
            self.conn.execute("UPDATE follows SET fresh_time=(SELECT max(v.time) FROM versions v WHERE v.feed=follows.id)")

    def close(self) -> None:
        self.conn.close()

    # ---- follows ---------------------------------------------------------------

    def follow(self, name: str, origin: str, vkeys: list[str], urls: list[str],
               max_age: int = DEFAULT_MAX_AGE) -> Follow:
        """Start following a feed. ``max_age``: seconds after the newest
        verified timestamp that lookups still trust the feed (``freshness``)."""
        check_feed_name(name)
        for v in vkeys:
            parse_vkey(v)  # InputError on a bad key
        if not urls:
            raise InputError("at least one upstream URL is needed")
        check_origin(origin)
        check_max_age(max_age)
        with write_txn(self.conn):
            try:
                self.conn.execute(
                    "INSERT INTO follows (name, origin, vkeys, urls, compact, digest, max_age) VALUES (?,?,?,?,?,?,?)",
                    (name, origin, "\n".join(vkeys), "\n".join(urls), CompactRange().to_bytes(), LtHash16().digest(),
                     max_age),
                )
            except sqlite3.IntegrityError:
                raise InputError(f"already following a feed named {name!r} or with origin {origin!r}") from None
        return self.get(name)

    def get(self, name: str) -> Follow:
        row = self.conn.execute("SELECT * FROM follows WHERE name=?", (name,)).fetchone()
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
            # version was the feed's newest, so the applied tree was current.
            sealed = usable_time(v.seal.time, now, f.max_age) or 0
            cur = self.conn.execute(
                "UPDATE follows SET verified_checkpoint=?, checkpoint=?, applied_size=?, compact=?, version=?,"
                " count=?, digest=?, updated=?, fresh_time=max(coalesce(fresh_time, 0), ?)"
                " WHERE id=? AND applied_size=?",
                (verified_note, served, v.end, log.compact.to_bytes(), v.seal.version, count,
                 digest.digest(), now, sealed, f.id, f.applied_size),
            )
            if cur.rowcount != 1:
                raise StorageError(f"feed {name} changed during apply; retry")

    # ---- queries ----------------------------------------------------------------

    def lookup(self, hash_type: str, value: bytes) -> list[Match]:
        rows = self.conn.execute(
            "SELECT f.name, h.hash_type, h.value, h.case_id, h.labels, h.added_version FROM follows f"
            " CROSS JOIN hashes h ON h.feed = f.id WHERE h.hash_type=? AND h.value=? ORDER BY f.name, h.case_id",
            (hash_type, value),
        ).fetchall()
        return [Match(n, t, val, c, tuple(x for x in labels.split(",") if x), ver) for n, t, val, c, labels, ver in rows]

    def changes(self, name: str, after: int = 0, limit: int = 1000) -> list[dict]:
        f = self.get(name)
        rows = self.conn.execute(
            "SELECT seq, version, action, hash_type, value, case_id, labels, reason, time FROM changes"
            " WHERE feed=? AND seq>? ORDER BY seq LIMIT ?", (f.id, after, limit)).fetchall()
        return [dict(seq=s, version=v, action=a, type=t, hash=val.hex(), case=c,
                     labels=[x for x in lab.split(",") if x], reason=r, time=tm)
                for s, v, a, t, val, c, lab, r, tm in rows]

    def audit(self, name: str) -> list[str]:
        """Recompute digest, count and root from the mirror's own rows.

        Returns a list of problems (empty when the mirror is consistent).
        """
        f = self.get(name)
        problems = []
        digest, count = ActiveSet(self.conn, f.id).recompute_digest()
        if count != f.count:
            problems.append(f"active rows: {count}, head says {f.count}")
        if digest.digest() != f.digest:
            problems.append("state digest recomputed from rows differs from the applied seal's digest")
        # Root: replay every stored entry bundle into a compact range, from the
        # start of the log or, after a snapshot bootstrap, from its base.
        tiles = TileStore(self.conn, f.id)
        base = f.base_size
        cr = CompactRange.from_bytes(f.base_compact) if base else CompactRange()
        last_seal = None
        first = (base - 1) // 256 if base else 0  # the bundle holding the base's seal, if stored
        for index in range(first, (f.applied_size + 255) // 256):
            width = min(256, f.applied_size - index * 256)
            data = tiles.get(-1, index, width)
            if data is None:
                if (index + 1) * 256 <= base:
                    continue  # wholly below the snapshot: never fetched
                problems.append(f"entry bundle {index} (width {width}) missing")
                break
            for offset, raw in enumerate(parse_bundle(data, width)):
                if index * 256 + offset >= base:
                    cr.append(leaf_hash(raw))
                entry = E.decode(raw)
                if isinstance(entry, E.Seal):
                    last_seal = entry
        else:
            if cr.root() != CompactRange.from_bytes(f.compact).root():
                problems.append("Merkle root recomputed from stored entries differs from the stored tree")
            if f.checkpoint is not None:
                cp = parse_checkpoint_body(parse_note(f.checkpoint).text)
                if cp.size == f.applied_size and cp.root != cr.root():
                    problems.append("Merkle root recomputed from stored entries differs from the signed checkpoint")
            if last_seal is not None and (last_seal.digest != digest.digest() or last_seal.count != count):
                problems.append(f"rows disagree with the last seal (version {last_seal.version})")
        return problems
