"""Feedback reports in the publisher's database (the only module with SQL on ``feedback``).

The table lives in ``publisher.db`` next to the feeds, so that a review's
withdrawal and the resolution of the reports it answers commit in *one*
transaction: ``resolver`` is an ``in_txn`` for ``Publisher.publish``, run
just before the signed head is written. A crash before that commit leaves
neither the withdrawal nor the resolution; after it, both.

Rows are keyed by (feed, member, report id): the id is the reporter's
idempotency key, scoped to its member (two members may pick the same id,
and neither learns about the other's). ``record`` is all or nothing per
request: a conflicting id anywhere refuses the whole batch.

A report is ``open`` until a review resolves it: ``withdrawn`` (with the
version whose withdrawal answered it) or ``rejected`` (reviewed, the
record stays). Member identities are read only by the publisher's own
commands (``summary``); a member's reads (``mine``, ``one``) are filtered
to its own rows in SQL.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from federation.core.errors import ConflictError, InputError
from federation.core.feedback import STATES, Report, Target, report_json
from federation.store.db import Store, write_txn

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    feed TEXT NOT NULL,
    member TEXT NOT NULL,              -- the reporting member (its token's member name)
    report_id TEXT NOT NULL,           -- chosen by the reporter: its idempotency key
    token TEXT,                        -- id of the token that sent it
    kind TEXT NOT NULL,                -- seen | actioned | false_positive | disputed
    hash_type TEXT NOT NULL,           -- '' for a report about a whole case
    value BLOB NOT NULL,               -- x'' for a report about a whole case
    case_id TEXT NOT NULL,             -- '' for a hash in every case
    labels TEXT NOT NULL,              -- joined by ','
    note TEXT NOT NULL,
    digest BLOB NOT NULL,              -- SHA-256 of the canonical report (replay vs conflict)
    received INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'open',  -- open | withdrawn | rejected
    resolved_version INTEGER,          -- the version whose withdrawal resolved it
    resolved_time INTEGER,
    PRIMARY KEY (feed, member, report_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feedback_by_target ON feedback (feed, hash_type, value, case_id);
"""

_COLUMNS = ("report_id, kind, hash_type, value, case_id, labels, note, received, state, resolved_version, "
            "resolved_time")


@dataclass(frozen=True)
class StoredReport:
    id: str
    kind: str
    target: Target
    labels: tuple[str, ...]
    note: str
    received: int
    state: str
    resolved_version: int | None
    resolved_time: int | None
    replayed: bool = False

    def to_json(self) -> dict:
        out = report_json(self.id, self.kind, self.target, self.note, self.labels)
        out.update(received=self.received, state=self.state,
                   resolved_version=self.resolved_version, resolved_time=self.resolved_time)
        return out


def _target(hash_type: str, value: bytes, case: str) -> Target:
    return Target(hash_type or None, value or None, case or None)


def _row(row, replayed: bool = False) -> StoredReport:
    rid, kind, t, v, c, labels, note, received, state, version, when = row
    return StoredReport(rid, kind, _target(t, v, c), tuple(labels.split(",")) if labels else (), note, received,
                        state, version, when, replayed)


def _key(t: Target) -> tuple[str, bytes, str]:
    return (t.hash_type or "", t.value or b"", t.case or "")


@dataclass(frozen=True)
class TargetSummary:
    """Open and resolved reports about one target, aggregated (the publisher's view)."""

    target: Target
    counts: dict[str, int]             # kind -> reports
    members: tuple[str, ...]           # who reported (publisher only)
    open: int
    first: int
    last: int
    states: dict[str, int]

    def to_json(self) -> dict:
        t = self.target
        out = {"target": t.describe(), "type": t.hash_type, "hash": t.value.hex() if t.value else None,
               "case": t.case}
        out.update(counts=self.counts, reports=sum(self.counts.values()), members=list(self.members),
                   open=self.open, states=self.states, first=self.first, last=self.last)
        return out


class FeedbackStore(Store):
    """Reports of every feed of one publisher database."""

    SCHEMA = SCHEMA

    # ---- members: record and read their own reports -------------------------

    def record(self, feed: str, member: str, token: str | None, reports: list[Report],
               now: int | None = None) -> list[StoredReport]:
        """Store ``reports`` from ``member``, all or none; returns each as stored
        (``replayed`` for an id already stored with the same content).
        ``ConflictError`` if an id was used for another report."""
        now = int(time.time()) if now is None else now
        out = []
        with write_txn(self.conn):
            for r in reports:
                have = self.conn.execute(
                    f"SELECT digest, {_COLUMNS} FROM feedback WHERE feed=? AND member=? AND report_id=?",
                    (feed, member, r.id)).fetchone()
                if have is not None:
                    if have[0] != r.digest:
                        raise ConflictError(f"report id {r.id} was already used for a different report; "
                                            "nothing of this request was recorded")
                    out.append(_row(have[1:], replayed=True))
                    continue
                t = r.target
                self.conn.execute(
                    "INSERT INTO feedback (feed, member, report_id, token, kind, hash_type, value, case_id, labels,"
                    " note, digest, received) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (feed, member, r.id, token, r.kind, *_key(t), ",".join(r.labels), r.note, r.digest, now))
                out.append(StoredReport(r.id, r.kind, t, r.labels, r.note, now, "open", None, None))
        return out

    def known(self, feed: str, member: str, ids: list[str]) -> int:
        """How many of ``ids`` ``member`` already reported on ``feed`` (replays, unless in conflict)."""
        n = 0
        for i in range(0, len(ids), 500):  # under SQLite's bound-parameter limit
            part = ids[i:i + 500]
            n += self.conn.execute(f"SELECT count(*) FROM feedback WHERE feed=? AND member=? AND report_id IN "
                                   f"({','.join('?' * len(part))})", (feed, member, *part)).fetchone()[0]
        return n

    def mine(self, feed: str, member: str, since: int = 0, limit: int = 100) -> list[StoredReport]:
        """``member``'s own reports on ``feed`` received at or after ``since``, oldest first."""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM feedback WHERE feed=? AND member=? AND received>=? "
            "ORDER BY received, report_id LIMIT ?", (feed, member, since, limit)).fetchall()
        return [_row(r) for r in rows]

    def one(self, feed: str, member: str, report_id: str) -> StoredReport | None:
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM feedback WHERE feed=? AND member=? AND report_id=?",
                                (feed, member, report_id)).fetchone()
        return None if row is None else _row(row)

    # ---- the publisher: aggregate and review -----------------------------------

    def summary(self, feed: str, kind: str | None = None, since: int = 0, state: str | None = None,
                limit: int = 1000) -> list[TargetSummary]:
        """Reports per target (hash, hash in a case, or case), newest activity
        first: counts per kind and the members who reported. Aggregated in SQL."""
        where, args = "feed=? AND received>=?", [feed, since]
        if kind is not None:
            where += " AND kind=?"
            args.append(kind)
        if state is not None:
            if state not in STATES:
                raise InputError(f"state must be one of {', '.join(STATES)}")
            where += " AND state=?"
            args.append(state)
        targets = self.conn.execute(
            f"SELECT hash_type, value, case_id, min(received), max(received) FROM feedback WHERE {where} "
            "GROUP BY hash_type, value, case_id ORDER BY max(received) DESC, hash_type, value, case_id LIMIT ?",
            (*args, limit)).fetchall()
        out = []
        for t, v, c, first, last in targets:
            per = f"{where} AND hash_type=? AND value=? AND case_id=?"
            pargs = (*args, t, v, c)
            counts = dict(self.conn.execute(f"SELECT kind, count(*) FROM feedback WHERE {per} GROUP BY kind "
                                            "ORDER BY kind", pargs).fetchall())
            states = dict(self.conn.execute(f"SELECT state, count(*) FROM feedback WHERE {per} GROUP BY state "
                                            "ORDER BY state", pargs).fetchall())
            members = tuple(m for (m,) in self.conn.execute(
                f"SELECT DISTINCT member FROM feedback WHERE {per} ORDER BY member", pargs))
            out.append(TargetSummary(_target(t, v, c), counts, members, states.get("open", 0), first, last, states))
        return out

    def open_targets(self, feed: str, kind: str | None = None) -> list[Target]:
        """Every target with an open report (of ``kind``)."""
        sql = "SELECT DISTINCT hash_type, value, case_id FROM feedback WHERE feed=? AND state='open'"
        args: tuple = (feed,)
        if kind is not None:
            sql += " AND kind=?"
            args += (kind,)
        return [_target(*r) for r in self.conn.execute(sql + " ORDER BY hash_type, value, case_id", args)]

    def covered(self, feed: str, items: Iterable[Target]) -> int:
        """How many open reports withdrawing ``items`` would resolve."""
        return sum(self.conn.execute(f"SELECT count(*) FROM feedback WHERE feed=? AND state='open' AND {sql}",
                                     (feed, *args)).fetchone()[0] for sql, args in map(_covered_sql, items))

    def reject(self, feed: str, items: Iterable[Target], now: int | None = None) -> int:
        """Close the open reports ``items`` cover as ``rejected`` (the records stay); returns how many."""
        now = int(time.time()) if now is None else now
        n = 0
        with write_txn(self.conn):
            for sql, args in map(_covered_sql, items):
                n += self.conn.execute(f"UPDATE feedback SET state='rejected', resolved_time=? "
                                       f"WHERE feed=? AND state='open' AND {sql}", (now, feed, *args)).rowcount
        return n

    @staticmethod
    def resolver(feed: str, items: list[Target], counted: list[int] | None = None,
                 now: int | None = None) -> Callable[[sqlite3.Connection, int, int], None]:
        """An ``in_txn`` for ``Publisher.publish``: inside the publish transaction,
        mark the open reports ``items`` cover as ``withdrawn`` by the version
        being published. ``counted``, if given, receives how many."""
        def resolve(conn: sqlite3.Connection, version: int, size: int) -> None:
            when = int(time.time()) if now is None else now
            n = 0
            for sql, args in map(_covered_sql, items):
                n += conn.execute(f"UPDATE feedback SET state='withdrawn', resolved_version=?, resolved_time=? "
                                  f"WHERE feed=? AND state='open' AND {sql}", (version, when, feed, *args)).rowcount
            if counted is not None:
                counted.append(n)
        return resolve


def _covered_sql(item: Target) -> tuple[str, tuple]:
    """The WHERE clause of the reports ``item`` covers (``Target.covers``, in SQL)."""
    if item.by_case:
        return "case_id=?", (item.case,)
    if item.case is None:
        return "hash_type=? AND value=?", (item.hash_type, item.value)
    return "hash_type=? AND value=? AND case_id=?", (item.hash_type, item.value, item.case)


# ---- the status page (read-only connections of ``node.status``) ---------------------


def feedback_overview(conn: sqlite3.Connection, feed: str, latest: int) -> tuple[dict[str, int], list[tuple]]:
    """``feed``'s open reports counted per kind, and its ``latest`` reports,
    newest first, as (member, StoredReport). Who reported is in the answer:
    it is for the feed's publisher alone (the caller decides). A database
    whose feedback table does not exist yet (no report ever) has none."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='feedback'").fetchone() is None:
        return {}, []
    counts = dict(conn.execute("SELECT kind, count(*) FROM feedback WHERE feed=? AND state='open' "
                               "GROUP BY kind ORDER BY kind", (feed,)).fetchall())
    rows = conn.execute(f"SELECT member, {_COLUMNS} FROM feedback WHERE feed=? "
                        "ORDER BY received DESC, member, report_id LIMIT ?", (feed, latest)).fetchall()
    return counts, [(r[0], _row(r[1:])) for r in rows]
