"""The active set of one feed, kept in SQLite, with the semantics of the log.

Publisher and mirror both apply entries through ``ActiveSet.apply``, so the
rules below hold identically on both sides and the seal's digest computed by
the publisher is what the mirror recomputes:

* ``add`` of a record key ``(hash_type, value, case)`` that is not active
  inserts it. If the key is active with the same labels it is a no-op
  (duplicate). If it is active with other labels, the labels are replaced.
* ``withdraw`` by hash removes every active record with that hash (in every
  case, or in the one case named). ``withdraw`` by case removes every active
  record of the case. Withdrawing something not active is a no-op.
* The state digest is the LtHash16 of the active records' elements
  (``entries.element``); the count is the number of active records.

The caller owns the transaction: ``apply`` only issues statements. This
module is the only one with SQL on ``hashes`` (and on ``temp.old_hashes``,
the set a snapshot bootstrap replaces); the mirror's and the publisher's
queries across feeds go through ``find`` and ``distinct_values``.
"""
from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from federation.core.entries import Add, Withdraw, element
from federation.core.lthash import LtHash16

SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (
    feed INTEGER NOT NULL,
    hash_type TEXT NOT NULL,
    value BLOB NOT NULL,
    case_id TEXT NOT NULL,
    labels TEXT NOT NULL,          -- labels joined by ','
    added_version INTEGER NOT NULL,
    added_time INTEGER NOT NULL,
    PRIMARY KEY (feed, hash_type, value, case_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hashes_by_case ON hashes (feed, case_id);
"""


# Secondary indexes a snapshot bootstrap drops while it loads, and rebuilds after.
_REBUILT_INDEXES = {
    "hashes_by_case": "CREATE INDEX IF NOT EXISTS hashes_by_case ON hashes (feed, case_id)",
}

BULK_MIN = 16  # shorter runs of adds go one by one (the savepoint costs more)


def _runs(ops: Iterable[Add | Withdraw]):
    """Split ``ops`` into lists (runs of >= BULK_MIN adds with distinct keys)
    and single ops, preserving order."""
    run: list[Add] = []
    keys: set = set()

    def flush():
        nonlocal run, keys
        out = [run] if len(run) >= BULK_MIN else list(run)
        run, keys = [], set()
        return out

    for op in ops:
        if isinstance(op, Add) and op.key not in keys:
            run.append(op)
            keys.add(op.key)
            continue
        yield from flush()
        if isinstance(op, Add):
            run.append(op)
            keys.add(op.key)
        else:
            yield op
    yield from flush()


def join_labels(labels: Iterable[str]) -> str:
    return ",".join(labels)


def split_labels(text: str) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


@dataclass
class Change:
    action: str  # "add", "relabel" or "withdraw"
    hash_type: str
    value: bytes
    case: str
    labels: tuple[str, ...]
    reason: str | None = None


@dataclass
class ApplyResult:
    digest: LtHash16
    count: int
    changes: list[Change] = field(default_factory=list)
    no_effect: list = field(default_factory=list)  # ops that changed nothing


class ActiveSet:
    def __init__(self, conn: sqlite3.Connection, feed: int):
        self.conn = conn
        self.feed = feed

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM hashes WHERE feed=?", (self.feed,)).fetchone()[0]

    def apply(self, ops: Iterable[Add | Withdraw], version: int, digest: LtHash16, count: int,
              deferred=None) -> ApplyResult:
        """Apply ops in order; returns the new digest, count and changes.

        With ``deferred`` (an ``lthash.ParallelSum``), the element hashes of
        bulk-added records go there, to be hashed on another core, and are
        *not* in the returned digest: the caller combines the two.
        """
        digest = digest.copy()
        res = ApplyResult(digest, count)
        added: list[bytes] = []
        removed: list[bytes] = []
        for run in _runs(ops):
            if isinstance(run, list):
                if self._bulk_add(run, version, res, added, deferred):
                    continue
                run_ops = run
            else:
                run_ops = [run]
            for op in run_ops:
                self._apply_one(op, version, res, added, removed)
        digest.add(added)
        digest.remove(removed)
        return res

    def _bulk_add(self, run: list[Add], version: int, res: ApplyResult, added: list[bytes], deferred=None) -> bool:
        """Fast path for a run of adds of keys not yet active: one executemany.

        ``INSERT OR IGNORE`` under a savepoint; if any key was already active
        (a duplicate or a relabel), the savepoint is rolled back and the
        caller applies the run one op at a time, so semantics are unchanged.
        """
        c = self.conn
        c.execute("SAVEPOINT bulk_add")
        before = c.total_changes
        # In key order: B-tree pages are then touched once each, not at random
        # (inserting 100k into 300k rows: 0.64 s against 0.80 s unsorted).
        rows = sorted((self.feed, op.hash_type, op.value, op.case, join_labels(op.labels), version, op.time)
                      for op in run)
        c.executemany("INSERT OR IGNORE INTO hashes VALUES (?,?,?,?,?,?,?)", rows)
        if c.total_changes - before != len(run):
            c.execute("ROLLBACK TO bulk_add")
            c.execute("RELEASE bulk_add")
            return False
        c.execute("RELEASE bulk_add")
        if deferred is not None:
            deferred.add_records([(op.hash_type, op.value, op.case, op.labels) for op in run])
        else:
            added.extend(element(op.hash_type, op.value, op.case, op.labels) for op in run)
        for op in run:
            res.changes.append(Change("add", op.hash_type, op.value, op.case, op.labels))
        res.count += len(run)
        return True

    def _apply_one(self, op: Add | Withdraw, version: int, res: ApplyResult,
                   added: list[bytes], removed: list[bytes]) -> None:
        c = self.conn
        if isinstance(op, Add):
            row = c.execute(
                "SELECT labels FROM hashes WHERE feed=? AND hash_type=? AND value=? AND case_id=?",
                (self.feed, op.hash_type, op.value, op.case),
            ).fetchone()
            labels = join_labels(op.labels)
            if row is None:
                c.execute(
                    "INSERT INTO hashes VALUES (?,?,?,?,?,?,?)",
                    (self.feed, op.hash_type, op.value, op.case, labels, version, op.time),
                )
                added.append(element(op.hash_type, op.value, op.case, op.labels))
                res.count += 1
                res.changes.append(Change("add", op.hash_type, op.value, op.case, op.labels))
            elif row[0] != labels:
                c.execute(
                    "UPDATE hashes SET labels=? WHERE feed=? AND hash_type=? AND value=? AND case_id=?",
                    (labels, self.feed, op.hash_type, op.value, op.case),
                )
                removed.append(element(op.hash_type, op.value, op.case, split_labels(row[0])))
                added.append(element(op.hash_type, op.value, op.case, op.labels))
                res.changes.append(Change("relabel", op.hash_type, op.value, op.case, op.labels))
            else:
                res.no_effect.append(op)
        else:
            rows = self._matching(op)
            if not rows:
                res.no_effect.append(op)
            for hash_type, value, case, labels in rows:
                c.execute(
                    "DELETE FROM hashes WHERE feed=? AND hash_type=? AND value=? AND case_id=?",
                    (self.feed, hash_type, value, case),
                )
                labs = split_labels(labels)
                removed.append(element(hash_type, value, case, labs))
                res.count -= 1
                res.changes.append(Change("withdraw", hash_type, value, case, labs, op.reason))

    def _matching(self, op: Withdraw) -> list[tuple]:
        if op.by_case:
            sql = "SELECT hash_type, value, case_id, labels FROM hashes WHERE feed=? AND case_id=?"
            return self.conn.execute(sql, (self.feed, op.case)).fetchall()
        sql = "SELECT hash_type, value, case_id, labels FROM hashes WHERE feed=? AND hash_type=? AND value=?"
        args: tuple = (self.feed, op.hash_type, op.value)
        if op.case is not None:
            sql += " AND case_id=?"
            args += (op.case,)
        return self.conn.execute(sql, args).fetchall()

    def recompute_digest(self) -> tuple[LtHash16, int]:
        """Digest and count from the rows alone (used by audits)."""
        rows = self.conn.execute(
            "SELECT hash_type, value, case_id, labels FROM hashes WHERE feed=?", (self.feed,)
        )
        n = 0

        def elements():
            nonlocal n
            for hash_type, value, case, labels in rows:
                n += 1
                yield element(hash_type, value, case, split_labels(labels))

        d = LtHash16().add(elements())
        return d, n

    def records(self) -> sqlite3.Cursor:
        """Every active record ``(hash_type, value, case_id, labels)`` in
        primary-key order (a snapshot's record order), as a cursor to stream."""
        return self.conn.execute("SELECT hash_type, value, case_id, labels FROM hashes WHERE feed=?"
                                 " ORDER BY hash_type, value, case_id", (self.feed,))

    # ---- replacing the whole set (a snapshot bootstrap; the caller owns the transaction) ----

    def indexes(self) -> list[str]:
        """Names of the indexes on ``hashes`` that exist now."""
        return [r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='hashes'")]

    def drop_indexes(self) -> None:
        """Drop the secondary indexes (rows load faster without them)."""
        for ix in _REBUILT_INDEXES:
            self.conn.execute(f"DROP INDEX IF EXISTS {ix}")

    def rebuild_indexes(self, existing: list[str]) -> None:
        """Rebuild, in one pass each, the dropped indexes that were in ``existing``."""
        for ix, sql in _REBUILT_INDEXES.items():
            if ix in existing:
                self.conn.execute(sql)

    def set_aside(self) -> None:
        """Move this feed's active records to ``temp.old_hashes`` (kept for the
        change stream: ``replacement_changes``), leaving the feed empty."""
        c = self.conn
        c.execute("CREATE TEMP TABLE IF NOT EXISTS old_hashes (hash_type TEXT, value BLOB, case_id TEXT,"
                  " labels TEXT, PRIMARY KEY (hash_type, value, case_id)) WITHOUT ROWID")
        c.execute("DELETE FROM temp.old_hashes")
        c.execute("INSERT INTO temp.old_hashes SELECT hash_type, value, case_id, labels FROM hashes WHERE feed=?",
                  (self.feed,))
        c.execute("DELETE FROM hashes WHERE feed=?", (self.feed,))

    def insert_records(self, records: list[tuple[str, bytes, str, tuple[str, ...]]], version: int, time: int) -> None:
        """Insert records ``(type, hash, case, labels)`` not yet active, as added
        at ``version`` and ``time`` (a snapshot's records, in key order)."""
        self.conn.executemany("INSERT INTO hashes VALUES (?,?,?,?,?,?,?)",
                              [(self.feed, t, v, c, join_labels(labels), version, time) for t, v, c, labels in records])

    def replacement_changes(self) -> list[tuple[str, tuple]]:
        """The changes from the set aside to the current rows, as ``(select,
        params)``: queries of ``action, hash_type, value, case_id, labels,
        reason`` (the ``changes`` columns they describe), in the order the
        stream lists them: withdrawals (reason ``rebootstrap``), relabels, adds."""
        same_key = "x.hash_type=y.hash_type AND x.value=y.value AND x.case_id=y.case_id"
        return [
            ("'withdraw', y.hash_type, y.value, y.case_id, y.labels, 'rebootstrap' FROM temp.old_hashes y"
             f" WHERE NOT EXISTS (SELECT 1 FROM hashes x WHERE x.feed=? AND {same_key})", (self.feed,)),
            ("'relabel', x.hash_type, x.value, x.case_id, x.labels, NULL FROM hashes x JOIN temp.old_hashes y"
             f" ON {same_key} WHERE x.feed=? AND x.labels != y.labels", (self.feed,)),
            ("'add', x.hash_type, x.value, x.case_id, x.labels, NULL FROM hashes x WHERE x.feed=? AND NOT EXISTS"
             f" (SELECT 1 FROM temp.old_hashes y WHERE {same_key})", (self.feed,)),
        ]

    def copy_healed(self, feed: int) -> int:
        """Insert the active records of feed ``feed`` of the database attached
        as ``healed`` (``db.HEALED``: a rebuilt copy, ``sync.heal``) as this
        feed's, after ``set_aside``; returns how many."""
        cur = self.conn.execute("INSERT INTO hashes SELECT ?, hash_type, value, case_id, labels, added_version,"
                                " added_time FROM healed.hashes WHERE feed=?", (self.feed, feed))
        return cur.rowcount

    def clear_aside(self) -> None:
        self.conn.execute("DELETE FROM temp.old_hashes")


# ---- queries across feeds, on any connection (read-only ones too) -----------------


def find(conn: sqlite3.Connection, feeds: Iterable[int], hash_type: str,
         value: bytes) -> list[tuple[int, str, str, int]]:
    """(feed, case_id, labels, added_version) of the active records of
    ``hash_type`` ``value`` in ``feeds``: one primary-key probe per feed."""
    ids = tuple(feeds)
    if not ids:
        return []
    return conn.execute(_find_sql(len(ids)), (*ids, hash_type, value)).fetchall()


@functools.lru_cache(maxsize=64)
def _find_sql(n: int) -> str:
    # One text per number of feeds, so SQLite's statement cache keeps it prepared.
    return ("SELECT h.feed, h.case_id, h.labels, h.added_version FROM hashes h"
            f" WHERE h.feed IN ({','.join('?' * n)}) AND h.hash_type=? AND h.value=?")


def distinct_value_batches(conn: sqlite3.Connection, feeds: Iterable[int], hash_type: str,
                           size: int = 1 << 16) -> Iterable[list[bytes]]:
    """``distinct_values`` in lists of at most ``size``, so a caller can pack
    ten million values into an array without holding them all as ``bytes``."""
    ids = tuple(feeds)
    if not ids:
        return
    cur = conn.execute(f"SELECT DISTINCT value FROM hashes WHERE feed IN ({','.join('?' * len(ids))}) AND hash_type=?",
                       (*ids, hash_type))
    while batch := cur.fetchmany(size):
        yield [v for (v,) in batch]


def distinct_values(conn: sqlite3.Connection, feeds: Iterable[int], hash_type: str) -> list[bytes]:
    """The distinct values of the active ``hash_type`` records of ``feeds``."""
    ids = tuple(feeds)
    if not ids:
        return []
    return [v for (v,) in conn.execute("SELECT DISTINCT value FROM hashes"
                                       f" WHERE feed IN ({','.join('?' * len(ids))}) AND hash_type=?",
                                       (*ids, hash_type))]


def has_case(conn: sqlite3.Connection, feed: int, case: str) -> bool:
    """Whether feed ``feed`` has an active record in ``case`` (through ``hashes_by_case``)."""
    return conn.execute("SELECT 1 FROM hashes WHERE feed=? AND case_id=? LIMIT 1", (feed, case)).fetchone() is not None
