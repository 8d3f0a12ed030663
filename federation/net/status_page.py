"""``GET /``: a node's status as one server-rendered HTML page.

What an operator would rather look at than read out of ``doctor`` and
``/metrics``: per published and followed feed its version, tree size, active
hashes, the age of its newest checkpoint, freshness, witness state, last
error and recent changes; for a publisher the followers it has seen and the
feedback members sent (``FeedStatus.feedback``: open reports per kind, the
latest few with who sent them); for a platform its change-stream consumers
and webhooks.

This module is the view: the values (``StatusPage``), their HTML (a Jinja2
template, ``templates/status.html``) and the route. What goes into a page,
and for whom, is decided by whoever installs it (``node.status``), from the
caller the app's access layer authenticated. Invariants:

* Every value is escaped (Jinja2 ``autoescape``): feed names are checked on
  the way in, but errors, URLs, case ids and member names come from upstreams,
  receivers and operators, and a page that ran their markup would hand an
  attacker an operator's browser. The answer's Content-Security-Policy allows
  no script at all, so a missed escape still runs nothing.
* ``Cache-Control: no-store``: the page is for this caller alone, as of now
  (it may hold members-only feeds; a shared cache must not keep it, and a
  stale status page is worse than none).
* No JavaScript, no build step, no external resource: the page is one
  response with its CSS inline.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jinja2
from aiohttp import web

from federation.core.freshness import describe_age

CACHE_CONTROL = "no-store"
# No script, no external anything: the inline stylesheet is all the page loads.
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
RECENT = 10  # recent changes shown per feed
FEEDBACK_LATEST = 10  # latest reports shown per published feed (all of them: 'federation feedback list')


@dataclass(frozen=True)
class Change:
    """One recent change of a feed, as shown (``what``: hash type and value, or a case)."""

    version: int | None
    action: str  # add | withdraw | relabel
    what: str
    case: str
    reason: str | None
    time: int | None


@dataclass(frozen=True)
class Follower:
    """A member seen fetching a published feed's checkpoint (``store.tokens`` audit)."""

    member: str
    size: int | None  # the largest tree size it fetched
    behind: int | None  # entries it has yet to fetch
    seen: int  # time of its newest fetch


@dataclass(frozen=True)
class Feedback:
    """One report a member sent about a published feed (``store.feedback``)."""

    member: str
    kind: str
    what: str  # the hash, hash in a case, or case it is about
    state: str  # open | withdrawn | rejected
    received: int
    note: str


@dataclass(frozen=True)
class FeedbackSummary:
    open: tuple[tuple[str, int], ...]  # (kind, open reports), by kind
    latest: tuple[Feedback, ...]  # newest first, at most FEEDBACK_LATEST


@dataclass(frozen=True)
class FeedStatus:
    name: str
    side: str  # "published" | "followed"
    origin: str
    access: str
    version: int
    size: int
    active: int
    checkpoint_age: int | None  # seconds since the newest signed time of its checkpoint (None: none)
    fresh: bool
    freshness: str
    witness: str
    last_error: str | None = None
    last_sync: int | None = None
    changes: tuple[Change, ...] = ()
    # None: not shown to this caller (only a publisher of the feed sees who follows it).
    followers: tuple[Follower, ...] | None = None
    # Feedback members sent about the feed. None: not shown to this caller (only a publisher of the
    # feed sees it: it names the reporting members, who never see each other).
    feedback: FeedbackSummary | None = None


@dataclass(frozen=True)
class Consumer:
    name: str
    cursor: int
    behind: int  # changes not yet acknowledged
    updated: int


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    feed: str | None
    cursor: int
    delivered: int
    attempts: int
    last_status: int | None
    last_error: str | None


@dataclass(frozen=True)
class StatusPage:
    title: str
    now: int
    viewer: str  # who the page is for, in words ("anonymous: public feeds only", ...)
    feeds: tuple[FeedStatus, ...] = ()
    # Platform nodes: None when not shown to this caller (its operators only).
    consumers: tuple[Consumer, ...] | None = None
    webhooks: tuple[Webhook, ...] | None = None


def _age(t: int | None, now: int) -> str:
    return describe_age(None if t is None else now - t)


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("federation.net", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["age"] = lambda t, now: _age(t, now)
_ENV.filters["seconds"] = lambda s: describe_age(s)


def render(page: StatusPage) -> str:
    """The page as HTML, every value escaped."""
    return _ENV.get_template("status.html").render(page=page)


def status_extension(page_for: Callable[[web.Request], StatusPage]):
    """Extension for ``server.create_app``: ``GET /`` answers ``page_for(request)``
    rendered. ``page_for`` runs after the app's access layer, so it reads the
    authenticated caller from the request and shows only what that caller may
    see; it raises one of our errors (``net.errors`` answers it) when it cannot."""

    async def status(request: web.Request) -> web.Response:
        page = page_for(request)
        return web.Response(text=render(page), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": CACHE_CONTROL, "Content-Security-Policy": CSP,
                                     "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    def install(app: web.Application) -> None:
        app.router.add_get("/", status)

    return install
