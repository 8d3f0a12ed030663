"""Access control: member and publisher bearer tokens, rate limits, audit log.

Tokens live in ``auth.db`` in the node home:

* A token is ``fedtok_<id>_<secret>``; only ``SHA-256(secret)`` is stored,
  so a stolen database does not yield usable tokens. The secret is 32
  random bytes, so a fast hash is enough (no password stretching needed).
* Each token has a role (``member``: read; ``publisher``: read and publish;
  ``platform``: the platform API of a mirror node -- lookup, change stream --
  and *not* the feeds themselves, see ``platform_auth``), a feed scope
  (feed names, or ``*`` for every feed of the node), a rate limit, and can
  be revoked (kept, with ``revoked`` set, for the audit log).

The middleware decides every request under ``/feeds/`` before routing to
any data. Whether a feed is public is its stored access (``access``),
narrowed by the node config, with these invariants:

* A request without a token to a feed that is not public, *or that does not
  exist*, gets 401; a valid token not scoped to the feed gets 403 whether or
  not the feed exists. So nothing about unknown or other members' feeds
  leaks. Unknown, malformed or revoked tokens get 401, even on public feeds.
* Each token (or, for anonymous readers, each address) has a token bucket;
  over it, 429 with ``Retry-After``.
* Every publish, and every checkpoint a member fetches (once per member,
  feed and tree size), is appended to the ``audit`` table.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

from federation.store.db import Store, write_txn
from federation.core.errors import AuthError, ForbiddenError, InputError, RateLimitedError
from federation.core.names import check_feed_name

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
    action TEXT NOT NULL,              -- fetch | publish
    feed TEXT NOT NULL,
    size INTEGER,                      -- tree size fetched or published
    detail TEXT
);
"""

ROLES = ("member", "publisher", "platform")
TOKEN_RE = re.compile(r"fedtok_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")  # fullmatch
DEFAULT_RATE = 20.0
DEFAULT_BURST = 100
ANONYMOUS_RATE = 20.0
ANONYMOUS_BURST = 100


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

    def audit(self, feed: str | None = None, limit: int = 1000) -> list[dict]:
        sql = "SELECT seq, time, token, member, action, feed, size, detail FROM audit"
        args: tuple = ()
        if feed is not None:
            sql += " WHERE feed=?"
            args = (feed,)
        rows = self.conn.execute(sql + " ORDER BY seq DESC LIMIT ?", args + (limit,)).fetchall()
        keys = ("seq", "time", "token", "member", "action", "feed", "size", "detail")
        return [dict(zip(keys, r)) for r in reversed(rows)]


class RateLimiter:
    """Token buckets keyed by token id (or client address), at most
    ``max_keys`` of them.

    Bounded: past ``max_keys`` the least recently used bucket is dropped, so
    100k spoofed or rotating addresses cost at most ``max_keys`` entries. A
    dropped bucket restarts full, which only matters for a key idle while
    ``max_keys`` others were seen: an active (throttled) key is always recent.
    """

    MAX_KEYS = 10_000

    def __init__(self, max_keys: int = MAX_KEYS):
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last time)

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, rate: float, burst: int, now: float | None = None) -> float:
        """0.0 if a request may pass now, else seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rate
        self._buckets[key] = (tokens, now)  # re-inserted last: the most recently used
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


TOKENS = web.AppKey("tokens", TokenStore)
ACCESS = web.AppKey("access", dict)  # feed name -> "public" | "members"
# Request key: the authenticated Token (or None). RequestKey needs aiohttp >= 3.12.
CALLER = web.RequestKey("caller", object) if hasattr(web, "RequestKey") else "federation.caller"
_FEED_PATH = re.compile(r"/feeds/([^/]+)(/.*)?", re.S)  # fullmatch


REALM = "federation"  # of the 401s' WWW-Authenticate: Bearer challenge


class AccessControl:
    """The middleware and its state; ``access`` maps feeds to their policy.

    Feeds not in ``access`` are treated as members-only, so a feed added to
    the database but not yet to the config is never public by accident.

    ``stored(feed)``, if given, is the feed's stored access read live
    (``access.StoredAccess``; None for feeds it does not govern): a feed is
    public only if both say so. ``access=None`` (plain ``serve``, no config):
    the stored access alone decides, and a feed it does not know is members.
    """

    def __init__(self, store: TokenStore, access: dict[str, str] | None, limiter: RateLimiter | None = None,
                 anonymous_rate: float = ANONYMOUS_RATE, anonymous_burst: int = ANONYMOUS_BURST,
                 stored=None):
        for feed, policy in (access or {}).items():
            if policy not in ("public", "members"):
                raise InputError(f"feed {feed}: access must be 'public' or 'members', got {policy!r}")
        if access is None and stored is None:
            raise InputError("access control needs a config's access, the stored access, or both")
        self.store = store
        self.access = None if access is None else dict(access)
        self.stored = stored
        self.limiter = limiter or RateLimiter()
        self.anonymous_rate, self.anonymous_burst = anonymous_rate, anonymous_burst
        self._fetched: dict[tuple[str, str], int] = {}

    def is_public(self, feed: str) -> bool:
        if self.access is not None and self.access.get(feed) != "public":
            return False
        have = self.stored(feed) if self.stored is not None else None
        return have == "public" if have is not None else self.access is not None

    def caller(self, request: web.Request) -> tuple[Token | None, bool]:
        """(token, presented): the valid token, and whether one was sent at all."""
        header = request.headers.get("Authorization")
        if header is None:
            return None, False
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, True
        return self.store.authenticate(value.strip()), True

    def _limit(self, key: str, rate: float, burst: int) -> None:
        wait = self.limiter.allow(key, rate, burst)
        if wait > 0:
            raise RateLimitedError("rate limit exceeded", retry_after=max(1, int(wait + 0.999)))

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        token, presented = self.caller(request)
        if presented and token is None:
            raise AuthError("invalid or revoked token", REALM)
        if token is not None:
            self._limit("token:" + token.id, token.rate, token.burst)
        else:
            self._limit("addr:" + (request.remote or "?"), self.anonymous_rate, self.anonymous_burst)
        request[CALLER] = token
        m = _FEED_PATH.fullmatch(request.path)
        if m is None:
            return await handler(request)  # /healthz, /feeds (filtered by the handler below)
        feed = m[1]
        publishing = request.method == "POST"
        if publishing:
            if token is None:
                raise AuthError("a valid bearer token is required", REALM)
            if not token.can_publish(feed):
                raise ForbiddenError("this token may not publish here")
        elif not self.is_public(feed):
            if token is None:
                raise AuthError("a valid bearer token is required", REALM)
            if not token.can_read(feed):
                raise ForbiddenError("this token may not read here")
        resp = await handler(request)
        if token is not None and m[2] == "/checkpoint" and resp.status == 200 and resp.body is not None:
            self._record_fetch(feed, token, bytes(resp.body))
        return resp

    def _record_fetch(self, feed: str, token: Token, body: bytes) -> None:
        from federation.net.longpoll import checkpoint_size
        try:
            size = checkpoint_size(body)
        except Exception:  # noqa: BLE001 -- auditing is best effort: an unparsable body is answered anyway
            return
        key = (token.id, feed)
        if self._fetched.get(key) != size:  # one row per member, feed and version
            self._fetched[key] = size
            self.store.record("fetch", feed, token, size)

    def visible(self, token: Token | None, feed: str) -> bool:
        return self.is_public(feed) or (token is not None and token.can_read(feed))


AUTH = web.AppKey("access_control", AccessControl)


def install_listing_filter(ac: AccessControl):
    """Extension: ``GET /feeds`` lists only the feeds the caller may read.

    The core handler lists every source's feeds; this response middleware
    trims its JSON to the visible ones. Whatever the method: aiohttp answers
    ``HEAD`` through the ``GET`` handler, and an untrimmed ``Content-Length``
    would tell how many hidden feeds there are.
    """

    @web.middleware
    async def listing(request: web.Request, handler):
        resp = await handler(request)
        if request.path == "/feeds" and resp.status == 200:
            import json
            data = json.loads(resp.body)
            token = request.get(CALLER)
            data["feeds"] = [f for f in data["feeds"] if ac.visible(token, f["name"])]
            return web.json_response(data)
        return resp

    return listing
