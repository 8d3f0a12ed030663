"""Bearer-token access to the platform API (a node's ``[platform]``, ``platform serve --auth``).

Tokens are ``store.tokens.TokenStore`` tokens of role ``platform`` (``federation
platform token issue``), kept in ``HOME/auth.db`` next to the node's member
and publisher tokens. A platform token queries the mirror's API; it cannot
read feeds on a node (``Token.can_read`` refuses the role), and member or
publisher tokens cannot query the platform API.

Invariants, with auth on:

* Every route except ``GET /healthz`` is decided here, before any handler
  and before routing errors: no token, or a malformed, unknown or revoked
  one, is 401 with ``WWW-Authenticate: Bearer``, also for paths that do not
  exist, so the API's shape is not probed anonymously. A valid token of
  another role is 403.
* A token's feed scope bounds what it sees. Lookup answers and change pages
  are *filtered* to the scope (``scope_of``), so records of other feeds are
  never shown and their absence is indistinguishable from no match. Naming
  an out-of-scope feed explicitly (``?feed=NAME``, any of them when
  repeated, ``/feeds/NAME/...``) is 403. Node-wide views (``/webhooks`` with endpoint URLs, ``/metrics`` with
  every feed's figures, the ``/feeds`` listing) need a ``*`` token.
* Each token has its own token bucket (``auth.RateLimiter``, the token's
  rate and burst): over it, 429 with ``Retry-After``. A batch lookup counts
  as one request.

* Consumer cursors (``/consumers/NAME/...``) are scoped: a consumer records
  the feed scope of the token that first used it (``PlatformStore.claim``),
  and a token may read or acknowledge it only if the token's scope is the
  consumer's, else 403: a token of one feed can neither skip nor replay
  another feed's consumer, and a wider token is never silently narrowed to
  a consumer a narrower one named first. Its pages are the consumer's
  feeds' changes.

Refusals are ``AuthError``s (``ForbiddenError``, ``RateLimitedError``),
answered by ``net.errors`` as JSON ``{"error": TEXT, "kind": "auth"}`` like
the platform API's other errors (``PlatformNode`` sets the app's access
format to JSON).
"""
from __future__ import annotations

from aiohttp import web

from federation.core.errors import AuthError, ForbiddenError, RateLimitedError
from federation.net.auth import RateLimiter
from federation.store.tokens import Token, TokenStore

# Request key: the caller's feed scope, a frozenset of names, or None for every feed.
SCOPE = web.RequestKey("platform_scope", object) if hasattr(web, "RequestKey") else "federation.platform_scope"
ROLE = "platform"
OPEN_ROUTES = {("GET", "/healthz")}
REALM = "federation-platform"  # of the 401s' WWW-Authenticate: Bearer challenge
NODE_WIDE = {"/feeds", "/webhooks", "/metrics"}  # canonical routes that show every feed


def scope_of(request: web.Request) -> frozenset[str] | None:
    """The feeds the caller may see; None when every feed (or auth is off)."""
    return request.get(SCOPE)


class PlatformAuth:
    """The middleware; ``store`` is read on every request, so a token issued or
    revoked by another process takes effect at once."""

    def __init__(self, store: TokenStore, limiter: RateLimiter | None = None):
        self.store = store
        self.limiter = limiter or RateLimiter()

    def caller(self, request: web.Request) -> Token:
        header = request.headers.get("Authorization")
        if header is None:
            raise AuthError("a platform bearer token is required", REALM)
        scheme, _, value = header.partition(" ")
        token = self.store.authenticate(value.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise AuthError("invalid or revoked token", REALM)
        return token

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        if (request.method, route) in OPEN_ROUTES:
            return await handler(request)
        token = self.caller(request)
        if token.role != ROLE:
            raise ForbiddenError(f"a {token.role} token cannot use the platform API; "
                                 "issue one with 'federation platform token issue'")
        wait = self.limiter.allow("token:" + token.id, token.rate, token.burst)
        if wait > 0:
            raise RateLimitedError("rate limit exceeded", retry_after=max(1, int(wait + 0.999)))
        everything = "*" in token.feeds
        if route in NODE_WIDE and not everything:
            raise ForbiddenError(f"{route} shows every feed: it needs a token scoped to '*'")
        named = request.query.getall("feed", [])  # every one of them: ?feed=mine&feed=theirs is 403
        if "name" in request.match_info and request.path.startswith("/feeds/"):
            named.append(request.match_info["name"])
        for feed in named:
            if not token.can_query(feed):
                raise ForbiddenError(f"this token is not scoped to feed {feed!r}")
        request[SCOPE] = None if everything else frozenset(token.feeds)
        return await handler(request)


def node_gate(feeds, platform: PlatformAuth):
    """The one auth middleware of a node that serves feeds and the platform
    API (``[platform]``): ``/healthz``, the status page ``/`` and ``/feeds...`` are decided by the
    node's access control (``net.auth.AccessControl``: member and publisher
    tokens, anonymous readers of public feeds), every other path -- the
    platform API, and paths no route matches -- by ``platform`` (a platform
    token, 401 before routing). One token store, one rate limiter (the
    caller shares ``feeds.limiter``), one place that decides."""

    @web.middleware
    async def gate(request: web.Request, handler):
        path = request.path
        if path in ("/", "/healthz", "/feeds") or path.startswith("/feeds/"):
            return await feeds.middleware(request, handler)
        return await platform.middleware(request, handler)

    return gate
