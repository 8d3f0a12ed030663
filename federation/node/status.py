"""What a node's status page (``GET /``, ``net.status_page``) shows, and to whom.

``NodeStatus`` reads a node's databases through read-only connections opened
for each page (a page is rare and small; nothing is held between requests,
so no connection outlives a file's replacement) and builds the page's values
for one ``Viewer``. It never writes.

Who sees what -- the same access as the API the page sits next to (docs/node.md):

* The read side (``serve``, ``serve --config``): ``node_viewer`` asks the
  app's ``AccessControl``. A feed is shown when the caller may read it: a
  public feed to anyone, a members-only one to a member or publisher token
  scoped to it. A followed feed the node does not relay is governed by its
  ``[[follow]] access`` (members-only when fetched with a token). The
  followers a published feed has seen (who fetched which size: the audit
  log) only to a publisher token of that feed: members do not learn who the
  other members are. Likewise the feedback members sent about it (open
  reports per kind, the latest few, with who sent them). An invalid token is refused (401) by the access layer
  before the page, as on every route.
* A platform (``platform serve``): ``platform_viewer``. Without ``--auth`` the
  API is open (loopback only) and so is the page; with it, a platform token,
  whose feed scope bounds the feeds shown, and consumers and webhooks only
  for a token scoped to every feed (as ``/webhooks`` requires).

Fail closed: a database that cannot be read is a ``StorageError`` (the page
is not drawn from half the data), and a followed feed is "fresh" only when
``core.readiness`` would let a lookup answer from it.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from aiohttp import web

from federation.core import entries as E
from federation.core.errors import FederationError, StorageError
from federation.core.freshness import DEFAULT_MAX_AGE, describe_age, log_timestamp
from federation.core.layout import ENTRIES, TILE_WIDTH
from federation.core.note import parse_note, parse_vkey
from federation.core.readiness import assess
from federation.core.tiles import parse_bundle
from federation.core.trustfile import parse_trust
from federation.net.auth import CALLER, AccessControl
from federation.net.status_page import (FEEDBACK_LATEST, RECENT, Change, Consumer, FeedStatus, Feedback,
                                         FeedbackSummary, Follower, StatusPage, Webhook, status_extension)
from federation.platform.auth import SCOPE
from federation.store.db import connect
from federation.store.feedback import feedback_overview
from federation.store.mirror import changes_head, read_follows, recent_changes
from federation.store.platform import consumer_rows, webhook_rows
from federation.store.publisher import Feed, cosigning_configs, status_feeds
from federation.store.tilestore import TileStore
from federation.store.tokens import fetches_by_member
from federation.store.trust_chain import latest_trust, quorum_time
from federation.trust.cosign import CosigningConfig


@dataclass(frozen=True)
class Viewer:
    """The caller a page is for: which feeds it may see, of which it is an operator."""

    describe: str
    sees: Callable[[str, str], bool]  # (side, feed) -> may see it
    operates: Callable[[str], bool]  # published feed -> may see its followers
    operator: bool = False  # an operator of the platform: sees its consumers and webhooks


def _hash_text(hash_type: str | None, value: bytes | None) -> str:
    if not value:
        return "(whole case)"
    text = value.hex()  # an MD5 whole; longer ones (PDQ: 64 digits) by their first 32
    return f"{hash_type}:{text[:32]}…" if len(text) > 32 else f"{hash_type}:{text}"


class NodeStatus:
    """A node's status from its files. ``published``/``followed``: the feed
    names this node serves (None: every feed the database holds); a database
    path of None: that side is absent."""

    def __init__(self, title: str, *, publisher_db: Path | None = None, published: list[str] | None = None,
                 mirror_db: Path | None = None, followed: list[str] | None = None, auth_db: Path | None = None,
                 platform_db: Path | None = None, access_of: Callable[[str], str] | None = None):
        self.title = title
        self.publisher_db, self.published = publisher_db, published
        self.mirror_db, self.followed = mirror_db, followed
        self.auth_db, self.platform_db = auth_db, platform_db
        self.access_of = access_of or (lambda name: "")  # followed feed -> its access on this node, in words

    def page(self, viewer: Viewer, now: int | None = None) -> StatusPage:
        now = int(time.time()) if now is None else now
        try:
            return self._page(viewer, now)
        except sqlite3.Error as e:
            raise StorageError(f"status page: cannot read the node's databases: {e}") from None
        except StorageError:
            raise
        except FederationError as e:
            # Everything the page reads is this node's own store, verified when
            # it was written: bytes there that do not parse are local corruption.
            raise StorageError(f"status page: stored data is unreadable ({e.kind}): {e}") from None

    def _page(self, viewer: Viewer, now: int) -> StatusPage:
        feeds: list[FeedStatus] = []
        followers = self._followers() if self.auth_db is not None else {}
        if self.publisher_db is not None:
            with _reader(self.publisher_db) as conn:
                cosigning = cosigning_configs(conn)
                for feed in status_feeds(conn):
                    if self.published is not None and feed.name not in self.published:
                        continue
                    if not viewer.sees("published", feed.name):
                        continue
                    operator = viewer.operates(feed.name)
                    seen = followers.get(feed.name, []) if operator else None
                    status = _published(conn, feed, cosigning.get(feed.name), seen, now)
                    if operator:  # it names the reporting members: the publisher's alone
                        status = replace(status, feedback=_feedback(conn, feed.name))
                    feeds.append(status)
        consumers = webhooks = None
        if self.mirror_db is not None:
            with _reader(self.mirror_db) as conn:
                for f in read_follows(conn):
                    if self.followed is not None and f.name not in self.followed:
                        continue
                    if not viewer.sees("followed", f.name):
                        continue
                    feeds.append(_followed(conn, f, now, self.access_of(f.name)))
                head = changes_head(conn)
            if self.platform_db is not None and viewer.operator:
                with _reader(self.platform_db) as conn:
                    consumers = tuple(Consumer(n, c, max(0, head - c), u) for n, c, u, _ in consumer_rows(conn))
                    webhooks = tuple(Webhook(w.name, w.url, w.feed, w.cursor, w.delivered, w.attempts,
                                             w.last_status, w.last_error) for w in webhook_rows(conn))
        return StatusPage(self.title, now, viewer.describe, tuple(feeds), consumers, webhooks)

    def _followers(self) -> dict[str, list[tuple]]:
        out: dict[str, list[tuple]] = {}
        with _reader(self.auth_db) as conn:
            for member, feed, size, seen in fetches_by_member(conn):
                out.setdefault(feed, []).append((member, size, seen))
        return out


class _reader:
    """A read-only connection for one page, in one read transaction, closed after it."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        if not Path(self.path).exists():
            raise StorageError(f"status page: {self.path} does not exist")
        self.conn = connect(self.path, readonly=True)
        # One read transaction: every query of the page sees the same snapshot
        # (WAL), so a version applied meanwhile never shows half (a feed's row
        # of one version beside the changes of the next).
        self.conn.execute("BEGIN")
        return self.conn

    def __exit__(self, *exc) -> None:
        try:
            self.conn.execute("ROLLBACK")
        finally:
            self.conn.close()


def _published(conn: sqlite3.Connection, feed: Feed, cosigning: str | None, seen: list[tuple] | None,
               now: int) -> FeedStatus:
    note = parse_note(feed.checkpoint)  # our own store: a failure is local corruption (a FederationError)
    stamp = log_timestamp(note, [parse_vkey(feed.vkey)], now, DEFAULT_MAX_AGE).time
    age = None if stamp is None else now - stamp
    fresh = age is not None and age <= DEFAULT_MAX_AGE and feed.pending_checkpoint is None
    if stamp is None:
        freshness = "the served checkpoint carries no valid log timestamp: mirrors cannot tell it is current"
    elif age > DEFAULT_MAX_AGE:
        freshness = (f"stamped {describe_age(age)}: over the default maximum age of mirrors "
                     f"({DEFAULT_MAX_AGE} s); is the refresh running?")
    else:
        freshness = f"stamped {describe_age(age)}"
    if feed.pending_checkpoint is not None:
        freshness += (f"; version {feed.version} (size {feed.size}) committed {describe_age(now - feed.updated)} "
                      "awaits its cosignatures and is not served yet")
    witnessed = sorted({s.name for s in note.signatures if s.name != feed.origin})
    if cosigning is None:
        witness = "no cosigning configured (freshness from the log's own timestamp)"
    else:
        try:
            cfg = CosigningConfig.from_json(cosigning)
            quorum = cfg.quorum if cfg.quorum is not None else "the trust file's"
            witness = f"{len(cfg.keys) + len(cfg.witnesses)} cosigner(s), quorum {quorum}"
        except FederationError as e:
            witness = f"stored cosigning configuration unreadable: {e}"
        witness += f"; served checkpoint cosigned by {', '.join(witnessed) if witnessed else 'none'}"
    followers = None if seen is None else tuple(
        Follower(m, size, None if size is None else max(0, feed.size - size), t) for m, size, t in seen)
    return FeedStatus(feed.name, "published", feed.origin, feed.access, feed.version, feed.size, feed.count, age,
                      fresh, freshness, witness, changes=_log_tail(conn, feed), followers=followers)


def _feedback(conn: sqlite3.Connection, feed: str) -> FeedbackSummary:
    counts, latest = feedback_overview(conn, feed, FEEDBACK_LATEST)
    return FeedbackSummary(tuple(sorted(counts.items())), tuple(
        Feedback(member, r.kind, r.target.describe(), r.state, r.received, r.note) for member, r in latest))


def _log_tail(conn: sqlite3.Connection, feed: Feed) -> tuple[Change, ...]:
    """The newest ``RECENT`` adds and withdrawals of a published feed, from
    its last two entry bundles (what the log says, as mirrors apply it); each
    with the version its next seal closes (None: not sealed in that window)."""
    size = feed.size
    if size == 0:
        return ()
    tiles = TileStore(conn, feed.id)
    last = (size - 1) // TILE_WIDTH
    raw: list[bytes] = []
    for index in range(max(0, last - 1), last + 1):
        width = min(TILE_WIDTH, size - index * TILE_WIDTH)
        data = tiles.get(ENTRIES, index, width)
        if data is None:  # pruned (or never kept): show what there is
            raw = []
            continue
        raw += parse_bundle(data, width, f"feed {feed.name} bundle {index}")
    out: list[Change] = []
    version = None
    for entry in reversed([E.decode(r) for r in raw]):
        if isinstance(entry, E.Seal):
            version = entry.version
        elif isinstance(entry, E.Add):
            out.append(Change(version, "add", _hash_text(entry.hash_type, entry.value), entry.case, None, entry.time))
        else:
            out.append(Change(version, "withdraw", _hash_text(entry.hash_type, entry.value), entry.case or "",
                              entry.reason, entry.time))
        if len(out) == RECENT:
            break
    return tuple(out)


def _followed(conn: sqlite3.Connection, f, now: int, access: str) -> FeedStatus:
    basis = assess(f, now)
    if basis.ready:
        freshness = f"verified current {describe_age(basis.age)} (maximum age {f.max_age} s)"
    else:
        freshness = f"{basis.problem}: {basis.detail} -- lookups fail closed"
    if f.witnessed:
        data = latest_trust(conn, f.name)
        trust = None if data is None else parse_trust(data, strict=False)
        quorum = "?" if trust is None else f"{trust.quorum} of {len(trust.witness_keys)}"
        witness = f"trust file: witness quorum {quorum}; newest quorum {describe_age(_ago(quorum_time(conn, f.name), now))}"
    else:
        witness = "not under a trust file (freshness from the log's own timestamps)"
    changes = tuple(Change(v, a, _hash_text(t, val), c, r, tm)
                    for _, v, a, t, val, c, r, tm in recent_changes(conn, f.id, RECENT))
    return FeedStatus(f.name, "followed", f.origin, access, f.version, f.applied_size, f.count, basis.age, basis.ready,
                      freshness, witness, last_error=f.last_error, last_sync=f.last_sync, changes=changes)


def _ago(t: int | None, now: int) -> int | None:
    return None if t is None else now - t


# ---- who is asking ---------------------------------------------------------------------

def node_viewer(ac: AccessControl, followed_access: dict[str, str] | None = None) -> Callable[[web.Request], Viewer]:
    """The viewer of a read-side request, as ``ac`` authenticated it.
    ``followed_access``: followed feed -> its ``[[follow]] access`` for the
    feeds the node does not relay (relayed ones are in ``ac``)."""
    followed_access = followed_access or {}

    def viewer(request: web.Request) -> Viewer:
        token = request.get(CALLER)

        def sees(side: str, name: str) -> bool:
            if side == "followed" and name in followed_access:
                return followed_access[name] == "public" or (token is not None and token.can_read(name))
            return ac.visible(token, name)

        def operates(name: str) -> bool:
            return token is not None and token.can_publish(name)

        if token is None:
            describe = "anonymous: public feeds only"
        else:
            describe = f"{token.member} ({token.role} token {token.id})"
        return Viewer(describe, sees, operates)

    return viewer


def platform_viewer(authenticated: bool) -> Callable[[web.Request], Viewer]:
    """The viewer of a platform API request: without authentication (an open,
    loopback API) everyone is its operator; with it, the token's scope."""

    def viewer(request: web.Request) -> Viewer:
        if not authenticated:
            return Viewer("anyone (this platform API has no authentication)", lambda side, n: True,
                          lambda n: False, operator=True)
        scope = request.get(SCOPE)
        if scope is None:
            return Viewer("a platform token scoped to every feed", lambda side, n: True, lambda n: False, operator=True)
        return Viewer(f"a platform token scoped to {', '.join(sorted(scope))}", lambda side, n: n in scope,
                      lambda n: False)

    return viewer


def install_node_status(title: str, ac: AccessControl, *, publisher_db=None, published=None, mirror_db=None,
                        followed=None, auth_db=None, followed_access=None, relayed_access=None):
    """Extension for a read-side app (``node.assembly``). ``followed_access``:
    the access of followed feeds not relayed, ``relayed_access`` of relayed
    ones (which ``ac`` governs)."""
    access = {**(relayed_access or {}), **(followed_access or {})}
    from_node = NodeStatus(title, publisher_db=publisher_db, published=published, mirror_db=mirror_db,
                           followed=followed, auth_db=auth_db,
                           access_of=lambda name: access.get(name, ""))
    who = node_viewer(ac, followed_access)
    return status_extension(lambda request: from_node.page(who(request)))


def install_platform_status(title: str, mirror_db: Path, platform_db: Path, authenticated: bool):
    """Extension for a platform app (``platform serve``)."""
    from_node = NodeStatus(title, mirror_db=mirror_db, platform_db=platform_db,
                           access_of=lambda name: "platform API" + ("" if authenticated else ", no authentication"))
    who = platform_viewer(authenticated)
    return status_extension(lambda request: from_node.page(who(request)))

