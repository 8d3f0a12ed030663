"""The read side over HTTP (tlog-tiles), as an aiohttp app.

Routes, per feed ``NAME`` (``/feeds/NAME/`` is the tlog-tiles prefix):

* ``GET /feeds/NAME/checkpoint`` -- ``text/plain; charset=utf-8``, cacheable
  for a few seconds only (it is mutable).
* ``GET /feeds/NAME/tile/<L>/<N>[.p/<W>]`` and ``.../tile/entries/...`` --
  ``application/octet-stream``, ``immutable`` for a year: a path names fixed
  content. Entry bundles are gzip-compressed when the client accepts it.
* ``GET /feeds`` -- JSON list of feeds (name, origin, vkey, size).
* ``GET /healthz``.

Caching: the ``public`` above is for public feeds. An answer that access
control marks ``PRIVATE`` (a members-only feed's: it answered a member's
token) says ``private`` instead, whatever the route that made it (this
module's, snapshots, trust files): RFC 9111 section 3.5 lets a shared cache
reuse an answer to a request with ``Authorization`` when it says ``public``,
and a CDN or proxy would then hand a member's answer to anyone.

Paths are parsed by ``layout.parse_tile_path`` (a strict regex) and looked up
in SQLite through the stores (``store.publisher``, ``store.tilestore``);
nothing touches the filesystem, so traversal is impossible.
Unknown feeds and tiles are 404.
"""
from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from aiohttp import web

from federation.core.checkpoint import parse_checkpoint_body
from federation.store.db import connect
from federation.store.publisher import feed_checkpoint, feed_id, served_feeds
from federation.store.tilestore import TileStore
from federation.core.note import parse_note
from federation.core.errors import MalformedError, NotFoundError
from federation.core.layout import ENTRIES, TILE_WIDTH, parse_tile_path
from federation.net import errors

CHECKPOINT_CACHE = "public, max-age=2"
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
# Request key: the answer is for this caller alone (set by access control for
# members-only feeds); ``keep_private`` makes its Cache-Control say so.
PRIVATE = web.RequestKey("private_answer", bool) if hasattr(web, "RequestKey") else "federation.private_answer"


async def keep_private(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: an answer marked ``PRIVATE`` is never
    ``public`` to caches. Runs just before the headers go out, so it also
    covers streamed answers (snapshot files) and every extension's routes."""
    if not request.get(PRIVATE):
        return
    directives = [d.strip() for d in response.headers.get("Cache-Control", "").split(",") if d.strip()]
    directives = ["private" if d.lower() == "public" else d for d in directives]
    if not any(d.lower() in ("private", "no-store") for d in directives):
        directives.insert(0, "private")
    response.headers["Cache-Control"] = ", ".join(directives)


class FeedSource(Protocol):
    """Where a server reads feeds from (publisher DB, mirror DB for relays)."""

    def names(self) -> list[dict]: ...
    def checkpoint(self, name: str) -> bytes | None: ...
    def tile(self, name: str, level: int, index: int, width: int) -> bytes | None: ...


class TableSource:
    """A read-only source over a database whose feeds have ids (``feed_id``
    of the store that owns them) and tiles in a ``tilestore``. Only the
    feeds ``names`` are served (all when None)."""

    # ``feed_id(conn, name)`` of the store that owns the feeds, set by each subclass.
    feed_id: Callable[[sqlite3.Connection, str], int | None]

    def __init__(self, path: Path | str, names: list[str] | None = None):
        self.conn = connect(path, readonly=True)
        self._ids: dict[str, int] = {}
        self.only = set(names) if names is not None else None

    def _allowed(self, name: str) -> bool:
        return self.only is None or name in self.only

    def _id(self, name: str) -> int | None:
        if not self._allowed(name):
            return None
        if name not in self._ids:
            fid = self.feed_id(self.conn, name)
            if fid is None:
                return None
            self._ids[name] = fid
        return self._ids[name]

    def tile(self, name: str, level: int, index: int, width: int) -> bytes | None:
        fid = self._id(name)
        if fid is None:
            return None
        return TileStore(self.conn, fid).get(level, index, width)

    def close(self) -> None:
        self.conn.close()


class PublisherSource(TableSource):
    """Reads a publisher database through its own read-only connection."""

    feed_id = staticmethod(feed_id)

    def names(self) -> list[dict]:
        """Served state: while a version awaits cosignatures (``pending``), the
        size is the served checkpoint's and the version is unknown here."""
        out = []
        for n, o, v, s, ver, pending, cp in served_feeds(self.conn):
            if not self._allowed(n):
                continue
            if pending is not None:
                s, ver = parse_checkpoint_body(parse_note(cp).text).size, None
            out.append(dict(name=n, origin=o, vkey=v, size=s, version=ver, pending=pending is not None))
        return out

    def checkpoint(self, name: str) -> bytes | None:
        if not self._allowed(name):
            return None
        row = feed_checkpoint(self.conn, name)
        return row[1] if row else None


SOURCES = web.AppKey("sources", list)
TILE_CACHE = web.AppKey("tile_cache", OrderedDict)
TILE_CACHE_MAX = 4096


def _find(app: web.Application, name: str, fn: str, *args):
    for source in app[SOURCES]:
        value = getattr(source, fn)(name, *args)
        if value is not None:
            return value
    return None


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def list_feeds(request: web.Request) -> web.Response:
    feeds = [f for s in request.app[SOURCES] for f in s.names()]
    return web.json_response({"feeds": feeds})


async def get_checkpoint(request: web.Request) -> web.Response:
    data = _find(request.app, request.match_info["name"], "checkpoint")
    if data is None:
        raise NotFoundError("no such feed")
    return web.Response(body=data, content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": CHECKPOINT_CACHE})


async def get_tile(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        level, index, width = parse_tile_path("tile/" + request.match_info["path"])
    except MalformedError:
        raise NotFoundError("not a tile path") from None
    cache = request.app[TILE_CACHE]
    key = (name, level, index, width)
    data = cache.get(key)
    if data is None:
        data = _find(request.app, name, "tile", level, index, width)
        if data is None:
            raise NotFoundError("no such tile")
        # Only full hash tiles: entry bundles can be deleted (pruning, a relay's
        # re-bootstrap), and a cached copy would outlive that.
        if width == TILE_WIDTH and level != ENTRIES:
            cache[key] = data
            if len(cache) > TILE_CACHE_MAX:
                cache.popitem(last=False)
    resp = web.Response(body=data, content_type="application/octet-stream",
                        headers={"Cache-Control": IMMUTABLE_CACHE})
    if level == ENTRIES:
        resp.enable_compression()  # tlog-tiles: bundles SHOULD be compressed
        # The body depends on Accept-Encoding: a shared cache must not hand a
        # gzip'd copy to a client that did not ask for one (or the reverse).
        resp.headers["Vary"] = "Accept-Encoding"
    return resp


def create_app(sources: list[FeedSource], extensions: list | None = None,
               middlewares: list | None = None) -> web.Application:
    """App factory: serve ``sources`` (first match wins) read-only.

    ``extensions`` are callables ``install(app)`` that add routes, app keys
    or cleanup contexts of other parts of the node (lookup API, witness,
    publishing API, ...), each from its own module.

    ``errors.middleware`` comes first, so it answers every error of ours
    that a handler or any of ``middlewares`` raises (``net.errors``).
    """
    app = web.Application(client_max_size=64 * 1024, middlewares=[errors.middleware, *(middlewares or [])])
    app[errors.ERROR_FORMATS] = errors.ErrorFormats()
    app[SOURCES] = sources
    app[TILE_CACHE] = OrderedDict()
    app.on_response_prepare.append(keep_private)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/feeds", list_feeds)
    app.router.add_get("/feeds/{name}/checkpoint", get_checkpoint)
    app.router.add_get("/feeds/{name}/tile/{path:.+}", get_tile)

    async def close_sources(app: web.Application):
        yield
        for s in app[SOURCES]:
            close = getattr(s, "close", None)
            if close:
                close()

    app.cleanup_ctx.append(close_sources)
    for install in extensions or []:
        install(app)
    return app
