"""``platform.db``: consumer cursors and webhook subscriptions of a platform node.

The only module with SQL on ``consumers`` and ``webhooks``. Cursors are
``changes.seq`` values of the mirror (``store.mirror``) and only move
forward: ``ack`` and ``delivered`` take the larger of the stored and the
new cursor, so a late or repeated acknowledgement never re-opens delivered
changes, and a crash before one re-delivers from the old cursor
(at-least-once, ``platform.changes``). A webhook's in-flight batch is fixed
(``fix_batch``) before its first attempt, so every retry resends the same
range under the same idempotency key.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from federation.core.errors import InputError
from federation.core.names import check_name
from federation.core.webhook_signature import PREFIX, new_secret, parse_secret
from federation.store.db import connect, write_txn

SCHEMA = """
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL DEFAULT 0,   -- last acknowledged changes.seq
    updated INTEGER NOT NULL,
    scope TEXT                           -- JSON list of the feeds of the token that created it; NULL: every feed
);
CREATE TABLE IF NOT EXISTS webhooks (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,                -- Standard Webhooks secret, whsec_<base64>; this file must stay private
    feed TEXT,                           -- only this feed's changes (NULL: all feeds)
    cursor INTEGER NOT NULL DEFAULT 0,   -- last seq the endpoint acknowledged with 2xx
    inflight_first INTEGER,              -- the batch being delivered, fixed before its first attempt
    inflight_last INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0, -- failed attempts of the in-flight batch
    last_status INTEGER,
    last_error TEXT,
    delivered INTEGER NOT NULL DEFAULT 0 -- changes acknowledged so far
);
"""


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    secret: str
    feed: str | None
    cursor: int
    inflight_first: int | None
    inflight_last: int | None
    attempts: int
    last_status: int | None
    last_error: str | None
    delivered: int

    def public(self) -> dict:
        """Status without the secret."""
        return dict(name=self.name, url=self.url, feed=self.feed, cursor=self.cursor, attempts=self.attempts,
                    last_status=self.last_status, last_error=self.last_error, delivered=self.delivered,
                    inflight=None if self.inflight_first is None else [self.inflight_first, self.inflight_last])


class PlatformStore:
    """``platform.db``: consumer cursors and webhook subscriptions."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if not self.path.exists():
            # Create it private before SQLite does: it holds webhook secrets
            # (SQLite gives the -wal and -shm files the same mode).
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.conn = connect(self.path)
        self.conn.executescript(SCHEMA)
        if "scope" not in {r[1] for r in self.conn.execute("PRAGMA table_info(consumers)")}:
            # platform.db from before consumer scopes: those consumers keep
            # NULL (every feed), which only an unscoped caller may use.
            self.conn.execute("ALTER TABLE consumers ADD COLUMN scope TEXT")
        self._migrate_secrets()

    def _migrate_secrets(self) -> None:
        """Rewrite secrets of an older node (hex digits) as ``whsec_`` + base64
        of the same bytes: the HMAC key is unchanged, so a receiver converts
        the secret it holds instead of getting a new one. One transaction: a
        crash leaves every secret old or every secret new, and both read."""
        old = self.conn.execute("SELECT name, secret FROM webhooks WHERE secret NOT LIKE ?",
                                (PREFIX + "%",)).fetchall()
        if not old:
            return
        with write_txn(self.conn):
            for name, secret in old:
                self.conn.execute("UPDATE webhooks SET secret=? WHERE name=? AND secret=?",
                                  (parse_secret(secret), name, secret))

    def close(self) -> None:
        self.conn.close()

    # consumers
    def cursor(self, consumer: str) -> int:
        check_name(consumer, "consumer")
        row = self.conn.execute("SELECT cursor FROM consumers WHERE name=?", (consumer,)).fetchone()
        return row[0] if row else 0

    def claim(self, consumer: str, scope: frozenset[str] | None) -> frozenset[str] | None:
        """The feed scope ``consumer`` was created with, creating it with
        ``scope`` (the caller's feeds; None: every feed) on first use.

        A consumer's scope never changes afterwards, so a caller that checked
        it may act on the consumer (``platform_auth.covers``).
        """
        check_name(consumer, "consumer")
        with write_txn(self.conn):
            self.conn.execute("INSERT INTO consumers (name, cursor, updated, scope) VALUES (?,0,?,?)"
                              " ON CONFLICT(name) DO NOTHING",
                              (consumer, int(time.time()), None if scope is None else json.dumps(sorted(scope))))
            row = self.conn.execute("SELECT scope FROM consumers WHERE name=?", (consumer,)).fetchone()
        return None if row[0] is None else frozenset(json.loads(row[0]))

    def ack(self, consumer: str, seq: int, head_seq: int) -> int:
        """Move ``consumer``'s cursor forward to ``seq``; never backwards, never past the head."""
        check_name(consumer, "consumer")
        if type(seq) is not int or seq < 0:
            raise InputError(f"cursor {seq!r} must be an integer >= 0")
        if seq > head_seq:
            raise InputError(f"cursor {seq} is past the newest change {head_seq}")
        with write_txn(self.conn):
            self.conn.execute("INSERT INTO consumers (name, cursor, updated) VALUES (?,?,?)"
                              " ON CONFLICT(name) DO UPDATE SET cursor=max(cursor, excluded.cursor),"
                              " updated=excluded.updated", (consumer, seq, int(time.time())))
        return self.cursor(consumer)

    # webhooks
    def add_webhook(self, name: str, url: str, secret: str | None = None, feed: str | None = None,
                    start: int = 0) -> Webhook:
        check_name(name, "webhook")
        if not url.startswith(("http://", "https://")):
            raise InputError(f"webhook URL {url!r} must be http(s)")
        secret = new_secret() if secret is None else parse_secret(secret)
        with write_txn(self.conn):
            try:
                self.conn.execute("INSERT INTO webhooks (name, url, secret, feed, cursor) VALUES (?,?,?,?,?)",
                                  (name, url, secret, feed, start))
            except sqlite3.IntegrityError:
                raise InputError(f"a webhook named {name!r} already exists") from None
        return self.webhook(name)

    def remove_webhook(self, name: str) -> None:
        with write_txn(self.conn):
            if self.conn.execute("DELETE FROM webhooks WHERE name=?", (name,)).rowcount != 1:
                raise InputError(f"no webhook named {name!r}")

    def webhook(self, name: str) -> Webhook:
        row = self.conn.execute("SELECT * FROM webhooks WHERE name=?", (name,)).fetchone()
        if row is None:
            raise InputError(f"no webhook named {name!r}")
        return Webhook(*row)

    def webhooks(self) -> list[Webhook]:
        return [Webhook(*r) for r in self.conn.execute("SELECT * FROM webhooks ORDER BY name")]

    def fix_batch(self, name: str, first: int, last: int) -> None:
        """Record the batch before its first attempt, so retries resend the same range."""
        self.conn.execute("UPDATE webhooks SET inflight_first=?, inflight_last=?, attempts=0 WHERE name=?"
                          " AND inflight_last IS NULL", (first, last, name))

    def delivered(self, name: str, last: int, n: int, status: int, url: str) -> None:
        # Cursor and batch move together, and only forward: a crash before this
        # line re-delivers the same batch with the same idempotency key. The URL
        # must still be the one delivered to: a webhook removed and added again
        # under its name meanwhile is another receiver.
        self.conn.execute("UPDATE webhooks SET cursor=max(cursor, ?), inflight_first=NULL, inflight_last=NULL,"
                          " attempts=0, last_status=?, last_error=NULL, delivered=delivered+? WHERE name=?"
                          " AND inflight_last=? AND url=?", (last, status, n, name, last, url))

    def failed(self, name: str, status: int | None, error: str, url: str) -> None:
        """Book a failed attempt on webhook ``name``, if it still delivers to ``url``."""
        self.conn.execute("UPDATE webhooks SET attempts=attempts+1, last_status=?, last_error=? WHERE name=?"
                          " AND url=?", (status, error[:500], name, url))


def webhook_cursors(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """(name, cursor) of every webhook, by name, on any connection (metrics)."""
    return conn.execute("SELECT name, cursor FROM webhooks ORDER BY name").fetchall()


def consumer_rows(conn: sqlite3.Connection) -> list[tuple[str, int, int, str | None]]:
    """(name, cursor, updated, scope JSON) of every consumer, by name, on any connection."""
    return conn.execute("SELECT name, cursor, updated, scope FROM consumers ORDER BY name").fetchall()


def webhook_rows(conn: sqlite3.Connection) -> list[Webhook]:
    """Every webhook, by name, on any connection (its ``public()`` leaves the secret out)."""
    return [Webhook(*r) for r in conn.execute("SELECT * FROM webhooks ORDER BY name")]
