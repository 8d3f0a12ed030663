"""``auth.db``: bearer tokens and the audit log (the only module with their SQL).

* A token is ``fedtok_<id>_<secret>``; only ``SHA-256(secret)`` is stored,
  so a stolen database does not yield usable tokens. The secret is 32
  random bytes, so a fast hash is enough (no password stretching needed).
* Each token has a role (``member``: read; ``publisher``: read and publish;
  ``platform``: the platform API of a mirror node -- lookup, change stream --
  and *not* the feeds themselves, see ``platform.auth``), a feed scope
  (feed names, or ``*`` for every feed of the node), a rate limit, and can
  be revoked (kept, with ``revoked`` set, for the audit log).
* ``audit`` is append-only: every publish, every checkpoint a member
  fetches (``net.auth`` records it once per member, feed and tree size),
  every feedback report received (``net.feedback_api``) and every review of
  feedback (``node.feedback``).

Who may do what with a token is decided in ``net.auth``.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass

from federation.core.errors import InputError
from federation.core.names import check_feed_name
from federation.store.db import Store, write_txn

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,               -- public part of the token
    member TEXT NOT NULL,              -- who holds it (organisation or person)
    role TEXT NOT NULL,                -- member | publisher
    feeds TEXT NOT NULL,               -- feed names one per line, or '*'
    secret_sha256 BLOB NOT NULL,
    rate REAL NOT NULL,                -- requests per second (token bucket refill)
    burst INTEGER NOT NULL,
    created INTEGER NOT NULL,
    revoked INTEGER                    -- time of revocation, NULL while valid
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    token TEXT,
    member TEXT,
    action TEXT NOT NULL,              -- fetch | publish | feedback | feedback-review
    feed TEXT NOT NULL,
    size INTEGER,                      -- tree size fetched or published
    detail TEXT
);
"""

ROLES = ("member", "publisher", "platform")
TOKEN_RE = re.compile(r"fedtok_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")  # fullmatch
DEFAULT_RATE = 20.0
DEFAULT_BURST = 100


@dataclass(frozen=True)
class Token:
    id: str
    member: str
    role: str
    feeds: tuple[str, ...]
    rate: float
    burst: int
    created: int
    revoked: int | None

    def in_scope(self, feed: str) -> bool:
        return self.revoked is None and ("*" in self.feeds or feed in self.feeds)

    def can_read(self, feed: str) -> bool:
        # A platform token queries a mirror's API; it never reads feeds.
        return self.role != "platform" and self.in_scope(feed)

    def can_query(self, feed: str) -> bool:
        """May use the platform API (lookup, change stream) for ``feed``'s records."""
        return self.role == "platform" and self.in_scope(feed)

    def can_publish(self, feed: str) -> bool:
        return self.role == "publisher" and self.can_read(feed)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class TokenStore(Store):
    """Tokens and the audit log in one SQLite file."""

    SCHEMA = SCHEMA

    def issue(self, member: str, role: str, feeds: list[str], rate: float = DEFAULT_RATE,
              burst: int = DEFAULT_BURST) -> tuple[Token, str]:
        """Create a token; returns it and the secret text, shown only once."""
        if role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not feeds:
            raise InputError("a token needs at least one feed (or '*')")
        for f in feeds:
            if f != "*":
                check_feed_name(f)
        if not member.strip() or "\n" in member:
            raise InputError("member name must be one non-empty line")
        if not (rate > 0 and burst >= 1):
            raise InputError("rate must be > 0 and burst >= 1")
        tid = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
        secret = secrets.token_urlsafe(32)
        now = int(time.time())
        with write_txn(self.conn):
            self.conn.execute("INSERT INTO tokens VALUES (?,?,?,?,?,?,?,?,NULL)",
                              (tid, member.strip(), role, "\n".join(sorted(set(feeds))), _digest(secret),
                               float(rate), int(burst), now))
        return self.get(tid), f"fedtok_{tid}_{secret}"

    def get(self, tid: str) -> Token:
        row = self.conn.execute("SELECT id, member, role, feeds, rate, burst, created, revoked FROM tokens"
                                " WHERE id=?", (tid,)).fetchone()
        if row is None:
            raise InputError(f"no token with id {tid!r}")
        return Token(row[0], row[1], row[2], tuple(row[3].split("\n")), row[4], row[5], row[6], row[7])

    def all(self) -> list[Token]:
        return [self.get(r[0]) for r in self.conn.execute("SELECT id FROM tokens ORDER BY created, id")]

    def revoke(self, tid: str) -> Token:
        self.get(tid)
        self.conn.execute("UPDATE tokens SET revoked=? WHERE id=? AND revoked IS NULL", (int(time.time()), tid))
        return self.get(tid)

    def authenticate(self, text: str) -> Token | None:
        """The valid (unrevoked) token ``text`` names, or None. Constant-time compare."""
        m = TOKEN_RE.fullmatch(text)
        if not m:
            return None
        row = self.conn.execute("SELECT secret_sha256, revoked FROM tokens WHERE id=?", (m[1],)).fetchone()
        if row is None or row[1] is not None or not hmac.compare_digest(row[0], _digest(m[2])):
            return None
        return self.get(m[1])

    def record(self, action: str, feed: str, token: Token | None, size: int | None = None,
               detail: str | None = None) -> None:
        try:
            self.conn.execute(
                "INSERT INTO audit (time, token, member, action, feed, size, detail) VALUES (?,?,?,?,?,?,?)",
                (int(time.time()), token.id if token else None, token.member if token else None,
                 action, feed, size, detail))
        except sqlite3.Error:
            pass  # the audit log must not take the read side down; the gap is visible in seq

    def record_many(self, action: str, feed: str, token: Token | None, details: list[str],
                    size: int | None = None) -> None:
        """One audit row per detail, in one transaction (a batch of feedback
        reports: one fsync, not one per report). Unlike ``record``, a
        failure raises: the caller's request must not succeed unaudited."""
        now = int(time.time())
        with write_txn(self.conn):
            self.conn.executemany(
                "INSERT INTO audit (time, token, member, action, feed, size, detail) VALUES (?,?,?,?,?,?,?)",
                [(now, token.id if token else None, token.member if token else None, action, feed, size, d)
                 for d in details])

    def audit(self, feed: str | None = None, limit: int = 1000) -> list[dict]:
        sql = "SELECT seq, time, token, member, action, feed, size, detail FROM audit"
        args: tuple = ()
        if feed is not None:
            sql += " WHERE feed=?"
            args = (feed,)
        rows = self.conn.execute(sql + " ORDER BY seq DESC LIMIT ?", args + (limit,)).fetchall()
        keys = ("seq", "time", "token", "member", "action", "feed", "size", "detail")
        return [dict(zip(keys, r)) for r in reversed(rows)]


def fetches_by_member(conn: sqlite3.Connection) -> list[tuple[str, str, int | None, int]]:
    """(member, feed, largest tree size fetched, time of the newest fetch) for
    every member and feed in the audit log, by feed and member: the followers
    a node has seen. ``AccessControl`` records a member's checkpoint fetch once
    per tree size; anonymous readers of public feeds are not recorded."""
    return conn.execute("SELECT member, feed, max(size), max(time) FROM audit WHERE action='fetch' AND member IS NOT"
                        " NULL GROUP BY member, feed ORDER BY feed, member").fetchall()
