"""A list file against a feed's active set: the delta to publish, on disk.

``ListDiff`` loads a file's claims (``core.imports``) into a *scratch*
SQLite database (the only module with SQL on ``listed`` and ``delta``; a
file of its own in a scratch directory, removed after), resolves them --
within each group the newest claim wins -- and merges the result, in
primary-key order, with the feed's active set read in the same order
through a read-only connection (``ActiveSet.records``). Both sides stream:
SQLite sorts the file's records with its external merge sort (pages on
disk, at most ``CACHE_KIB`` in memory), and the merge holds one record of
each side. So a 10-million-record list against a 10-million-record feed
needs a few tens of MiB, not the list.

* **full** (``publish --full-list``): the file is the whole feed. Records
  only in the file are adds, records in both with other labels are adds
  (relabels), records only in the feed are withdrawn (``reason``).
* **delta** (``import --publish``): the file adds to the feed. Records only
  in the feed stay; what the file says is gone (a deleted NCMEC entry, a
  withdrawn StopNCII case, an HMA negative row) is withdrawn if active.

The delta goes to the scratch database's ``delta`` table first, so the
caller can print a summary (the dry run) before anything is published, and
nothing is published from a file that failed anywhere: the whole file is
read and checked before the first op is written. ``ops()`` then streams it
into ``Publisher.publish``; ``check_version`` (its ``in_txn``) refuses to
commit if the feed moved since the diff was taken.
"""
from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from federation.core.entries import Add, Withdraw
from federation.core.errors import InputError, StorageError
from federation.core.imports import Claim
from federation.store.activeset import ActiveSet, find, has_case, join_labels, split_labels
from federation.store.db import connect
from federation.store.publisher import feed_position

SCHEMA = """
CREATE TABLE IF NOT EXISTS listed (
    grp TEXT NOT NULL,                 -- a claim's group: the newest claim of a group wins
    stamp INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    alive INTEGER NOT NULL,            -- 1: listed; 0: the claim says it is gone
    hash_type TEXT,                    -- NULL: a marker row (the claim's whole case gone, or no record)
    value BLOB,
    case_id TEXT,
    labels TEXT
);
CREATE TABLE IF NOT EXISTS delta (
    seq INTEGER PRIMARY KEY,
    op TEXT NOT NULL,                  -- add | withdraw
    hash_type TEXT,                    -- NULL: a withdrawal of a whole case
    value BLOB,
    case_id TEXT NOT NULL,
    labels TEXT
);
"""
CACHE_KIB = 32 * 1024   # SQLite's page cache of the scratch database; sorts spill to disk past it
ROWS = 10_000           # rows per executemany

# The winning claims' rows: rank 1 of each group by (stamp, seq), newest first
# (every row of a claim shares its stamp and seq, so a claim wins whole).
_WINNERS = ("SELECT alive, hash_type, value, case_id, labels FROM (SELECT alive, hash_type, value, case_id, labels, "
            "rank() OVER (PARTITION BY grp ORDER BY stamp DESC, seq DESC) AS r FROM listed) WHERE r = 1")


@dataclass
class DiffSummary:
    feed: str
    mode: str
    claims: int = 0             # elements of the file read as claims
    superseded: int = 0         # claims a newer claim of the same group replaced
    listed: int = 0             # records the file lists once resolved
    active: int = 0             # records of the feed before
    adds: int = 0
    relabels: int = 0
    withdrawals: int = 0
    unchanged: int = 0
    version: int = 0            # the feed's version the diff was taken against
    skipped: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        skipped = "".join(f"; skipped {n} {why}" for why, n in sorted(self.skipped.items()))
        return (f"{self.claims} entries read ({self.superseded} superseded by newer ones), {self.listed} records "
                f"listed; feed {self.feed} version {self.version} holds {self.active}: {self.adds} adds, "
                f"{self.relabels} relabels, {self.withdrawals} withdrawals, {self.unchanged} unchanged{skipped}")

    @property
    def empty(self) -> bool:
        return self.adds + self.relabels + self.withdrawals == 0


class ListDiff:
    """One file's diff against one feed; a context manager that removes its scratch files."""

    def __init__(self, publisher_db: Path | str | None, feed: str | None, mode: str = "full",
                 scratch_dir: Path | str | None = None, reason: str = "other"):
        """``publisher_db`` and ``feed`` None: the file alone (``resolved``); the
        scratch directory is then ``scratch_dir`` (else the current one)."""
        if mode not in ("full", "delta"):
            raise InputError(f"mode must be full or delta, got {mode!r}")
        self.publisher_db = Path(publisher_db) if publisher_db is not None else None
        self.feed, self.mode, self.reason = feed, mode, reason
        if scratch_dir is not None:
            parent = Path(scratch_dir)
        else:
            parent = self.publisher_db.parent if self.publisher_db is not None else Path.cwd()
        try:
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.dir = Path(tempfile.mkdtemp(prefix=".list-diff-", dir=parent))
        except OSError as e:
            raise StorageError(f"cannot make a scratch directory in {parent}: {e}") from e
        try:
            # A scratch file: no journal, no fsync (it is thrown away on any failure),
            # and sorts spill to files next to it rather than into memory.
            self.conn = sqlite3.connect(str(self.dir / "diff.db"), isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", f"cache_size=-{CACHE_KIB}",
                           "locking_mode=EXCLUSIVE"):
                self.conn.execute(f"PRAGMA {pragma}")
            self.conn.executescript(SCHEMA)
        except sqlite3.Error as e:
            self.close()
            raise StorageError(f"cannot open the scratch database in {self.dir}: {e}") from e
        self.summary = DiffSummary(feed, mode)
        self._winners = _WINNERS

    def __enter__(self) -> "ListDiff":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()
            self.conn = None
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- 1. the file, whole, into the scratch database ---------------------------------

    def load(self, claims: Iterable[Claim]) -> None:
        """Store every claim; a reader's ``InputError`` anywhere leaves nothing to publish."""
        rows: list[tuple] = []
        n = 0
        try:
            self.conn.execute("BEGIN")
            for c in claims:
                n += 1
                rows += [(c.group, c.stamp, c.seq, 1, r.hash_type, r.value, r.case, join_labels(r.labels))
                         for r in c.records]
                rows += [(c.group, c.stamp, c.seq, 0, r.hash_type, r.value, r.case, None) for r in c.gone]
                if c.gone_case is not None or not (c.records or c.gone):
                    # A claim that lists nothing still takes part in the ranking (its
                    # group's older claims lose): a marker row, its case if it says gone.
                    rows.append((c.group, c.stamp, c.seq, 0, None, None, c.gone_case, None))
                if len(rows) >= ROWS:
                    self.conn.executemany("INSERT INTO listed VALUES (?,?,?,?,?,?,?,?)", rows)
                    rows = []
            self.conn.executemany("INSERT INTO listed VALUES (?,?,?,?,?,?,?,?)", rows)
            self.conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StorageError(f"scratch database in {self.dir}: {e}") from e
        self.summary.claims = n
        groups = self.conn.execute("SELECT count(DISTINCT grp) FROM listed").fetchone()[0]
        self.summary.superseded = n - groups
        # A file where no group repeats (the usual export) needs no ranking: its
        # rows are the winners, and the window function's sort is saved.
        self._winners = _WINNERS if groups < n else "SELECT alive, hash_type, value, case_id, labels FROM listed"

    # ---- 2. the merge with the active set -------------------------------------------------

    def _listed(self) -> Iterator[tuple[str, bytes, str, str]]:
        """The winning records, in primary-key order, each key once (labels united)."""
        cur = self.conn.execute(f"SELECT hash_type, value, case_id, labels FROM ({self._winners}) WHERE alive = 1 "
                                "ORDER BY hash_type, value, case_id")
        prev = None
        for row in cur:
            if prev is not None and row[:3] == prev[:3]:
                prev = (*prev[:3], join_labels(sorted(set(split_labels(prev[3])) | set(split_labels(row[3])))))
                continue
            if prev is not None:
                yield prev
            prev = row
        if prev is not None:
            yield prev

    def diff(self) -> DiffSummary:
        """Write the delta (see the module) and return its summary."""
        ro = connect(self.publisher_db, readonly=True)
        try:
            ro.execute("BEGIN")  # one snapshot of the feed for the whole merge
            pos = feed_position(ro, self.feed)
            if pos is None:
                raise InputError(f"no feed named {self.feed!r} in {self.publisher_db}")
            fid, _origin, _size, version, count, _pending = pos
            s = self.summary
            s.version, s.active = version, count
            out: list[tuple] = []

            def emit(op, t, v, c, labels):
                out.append((op, t, v, c, labels))
                if len(out) >= ROWS:
                    self._spool(out)

            active = ActiveSet(ro, fid).records()
            a = next(active, None)
            for key3 in self._listed():
                s.listed += 1
                t, v, c, labels = key3
                while a is not None and (a[0], a[1], a[2]) < (t, v, c):
                    self._gone(emit, a)
                    a = next(active, None)
                if a is not None and (a[0], a[1], a[2]) == (t, v, c):
                    if a[3] == labels:
                        s.unchanged += 1
                    else:
                        s.relabels += 1
                        emit("add", t, v, c, labels)
                    a = next(active, None)
                else:
                    s.adds += 1
                    emit("add", t, v, c, labels)
            while a is not None:
                self._gone(emit, a)
                a = next(active, None)
            if self.mode == "delta":
                self._tombstones(ro, fid, emit)
            self._spool(out)
            ro.execute("COMMIT")
        except sqlite3.Error as e:
            raise StorageError(f"diff of feed {self.feed}: {e}") from e
        finally:
            ro.close()
        return self.summary

    def _gone(self, emit, a) -> None:
        if self.mode == "full":
            self.summary.withdrawals += 1
            emit("withdraw", a[0], a[1], a[2], None)

    def _tombstones(self, ro: sqlite3.Connection, fid: int, emit) -> None:
        """Delta mode: what the winning claims say is gone, where it is active."""
        for _alive, t, v, c, _labels in self.conn.execute(
                f"SELECT * FROM ({self._winners}) WHERE alive = 0 AND (hash_type IS NOT NULL OR case_id IS NOT NULL) "
                "ORDER BY hash_type, value, case_id"):
            if t is None:
                hit = has_case(ro, fid, c)
            else:
                hit = any(case == c for _f, case, _l, _v in find(ro, [fid], t, v))
            if hit:
                self.summary.withdrawals += 1
                emit("withdraw", t, v, c, None)

    def _spool(self, out: list[tuple]) -> None:
        self.conn.executemany("INSERT INTO delta (op, hash_type, value, case_id, labels) VALUES (?,?,?,?,?)", out)
        out.clear()

    # ---- 3. the delta, as ops to publish --------------------------------------------------

    def resolved(self) -> Iterator[Add | Withdraw]:
        """The file alone, resolved, as a batch (``import --out``): an add per
        listed record, a withdrawal per record or case it says is gone."""
        for alive, t, v, c, labels in self.conn.execute(
                f"SELECT * FROM ({self._winners}) WHERE hash_type IS NOT NULL OR case_id IS NOT NULL "
                "ORDER BY alive DESC, hash_type, value, case_id"):
            if alive:
                yield Add(t, v, c, split_labels(labels), 0)
            elif t is None:
                yield Withdraw(self.reason, 0, case=c)
            else:
                yield Withdraw(self.reason, 0, t, v, c)

    def ops(self) -> Iterator[Add | Withdraw]:
        for op, t, v, c, labels in self.conn.execute("SELECT op, hash_type, value, case_id, labels FROM delta "
                                                     "ORDER BY seq"):
            if op == "add":
                yield Add(t, v, c, split_labels(labels), 0)
            elif t is None:
                yield Withdraw(self.reason, 0, case=c)
            else:
                yield Withdraw(self.reason, 0, t, v, c)

    def check_version(self, conn: sqlite3.Connection, version: int, size: int) -> None:
        """An ``in_txn`` for the publish: the feed must still be at the version diffed."""
        if version != self.summary.version + 1:
            raise StorageError(f"feed {self.feed} was published to since the diff (version {version - 1}, diffed "
                               f"against {self.summary.version}); nothing was published, run it again")
