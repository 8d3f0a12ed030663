"""Access control: member and publisher bearer tokens, rate limits, audit log.

Tokens and the audit log live in ``auth.db`` in the node home, kept by
``store.tokens`` (roles, scopes, hashed secrets, revocation).

The middleware decides every request under ``/feeds/`` before routing to
any data. Whether a feed is public is its stored access (``access``),
narrowed by the node config, with these invariants:

* A request without a token to a feed that is not public, *or that does not
  exist*, gets 401; a valid token not scoped to the feed gets 403 whether or
  not the feed exists. So nothing about unknown or other members' feeds
  leaks. Unknown, malformed or revoked tokens get 401, even on public feeds.
* Every answer about a feed that is not public is marked ``server.PRIVATE``:
  its ``Cache-Control`` says ``private``, so no shared cache keeps a
  member's answer for others.
* Each token (or, for anonymous readers, each address) has a token bucket;
  over it, 429 with ``Retry-After``.
* Every publish, and every checkpoint a member fetches (once per member,
  feed and tree size), is appended to the ``audit`` table.
* Feedback (``/feeds/NAME/feedback...``, ``net.feedback_api``) is a
  member's own business whatever the feed's access: every method needs a
  valid token that may read the feed (a member's or a publisher's, never a
  platform token), else 401/403, and its answers are ``PRIVATE``.
"""
from __future__ import annotations

import json
import re
import time
from collections import OrderedDict

from aiohttp import web

from federation.core.checkpoint import checkpoint_size
from federation.core.errors import AuthError, ForbiddenError, InputError, RateLimitedError
from federation.net.server import PRIVATE
from federation.store.tokens import ROLES, Token, TokenStore

__all__ = ["ROLES", "Token", "TokenStore", "RateLimiter", "AccessControl", "install_listing_filter"]

ANONYMOUS_RATE = 20.0
ANONYMOUS_BURST = 100


class RateLimiter:
    """Token buckets keyed by token id (or client address), at most
    ``max_keys`` of them.

    Bounded: past ``max_keys`` the least recently used bucket is dropped, so
    100k spoofed or rotating addresses cost at most ``max_keys`` entries. A
    dropped bucket restarts full, which only matters for a key idle while
    ``max_keys`` others were seen: an active (throttled) key is always recent.

    Kept hand-written after a measurement (``bench/token_bucket.py``, 10,000
    keys, 200,000 checks): aiolimiter's ``AsyncLimiter``, one per key, took
    about as long per check (9-19 us against our 6-16 us, tracemalloc on, a
    loaded 2-core machine) and 2.6 times the memory per key (~520 B against
    ~200 B), and it offers neither the seconds until a request may pass (our
    429's ``Retry-After``) nor a bound on its keys: we would keep this LRU and
    this arithmetic around it.
    """

    MAX_KEYS = 10_000

    def __init__(self, max_keys: int = MAX_KEYS):
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last time)

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, rate: float, burst: int, now: float | None = None, cost: float = 1.0) -> float:
        """0.0 if a request costing ``cost`` tokens (one, unless it carries
        several items: a batch of feedback reports) may pass now, else seconds
        until it may. A cost over ``burst`` is charged as ``burst``."""
        now = time.monotonic() if now is None else now
        cost = min(float(cost), float(burst))
        tokens, last = self._buckets.pop(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / rate
        self._buckets[key] = (tokens, now)  # re-inserted last: the most recently used
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


TOKENS = web.AppKey("tokens", TokenStore)
ACCESS = web.AppKey("access", dict)  # feed name -> "public" | "members"
# Request key: the authenticated Token (or None). RequestKey needs aiohttp >= 3.12.
CALLER = web.RequestKey("caller", object) if hasattr(web, "RequestKey") else "federation.caller"
_FEED_PATH = re.compile(r"/feeds/([^/]+)(/.*)?", re.S)  # fullmatch
_FEEDBACK = re.compile(r"/feedback(/.*)?", re.S)  # fullmatch on the rest of a feed path


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
        if m[2] is not None and _FEEDBACK.fullmatch(m[2]):
            request[PRIVATE] = True  # a member's own reports: never 'public' to caches
            if token is None:
                raise AuthError("feedback needs the member token the publisher issued for this feed", REALM)
            if not token.can_read(feed):
                raise ForbiddenError("this token may not report on this feed")
            return await handler(request)
        publishing = request.method == "POST"
        public = self.is_public(feed)
        if publishing or not public:
            request[PRIVATE] = True  # answered to this token alone: never 'public' to caches
        if publishing:
            if token is None:
                raise AuthError("a valid bearer token is required", REALM)
            if not token.can_publish(feed):
                raise ForbiddenError("this token may not publish here")
        elif not public:
            if token is None:
                raise AuthError("a valid bearer token is required", REALM)
            if not token.can_read(feed):
                raise ForbiddenError("this token may not read here")
        resp = await handler(request)
        if token is not None and m[2] == "/checkpoint" and resp.status == 200 and resp.body is not None:
            self._record_fetch(feed, token, bytes(resp.body))
        return resp

    def _record_fetch(self, feed: str, token: Token, body: bytes) -> None:
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
            data = json.loads(resp.body)
            token = request.get(CALLER)
            data["feeds"] = [f for f in data["feeds"] if ac.visible(token, f["name"])]
            return web.json_response(data)
        return resp

    return listing
