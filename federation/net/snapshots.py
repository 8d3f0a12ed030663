"""Snapshots over HTTP: the snapshot index and files, and 410 for pruned bundles.

An extension of ``server.create_app`` (``server_extension``) for a
publisher database's feeds, or a mirror database's followed feeds as a
relay re-serves them. Files and index rows are written by
``store.snapshots``; the index format is ``core.snapshot_format``; feed ids
and a relay's base come from the publisher and mirror stores.
"""
from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

from aiohttp import web

from federation.core.errors import GoneError, MalformedError, NotFoundError
from federation.core.layout import TILE_WIDTH
from federation.core.layout import parse_tile_path
from federation.core.snapshot_format import encode_index, relay_minimum_index
from federation.store.db import connect
from federation.store.mirror import base_size, follow_id
from federation.store.publisher import feed_id
from federation.store.snapshots import ensure_schema, list_snapshots, minimum_index, mirror_snapshot_dir, \
    open_msgpack_stream, snapshot_dir

SNAPSHOT_SOURCES = web.AppKey("snapshot_sources", list)  # [_ServedSnapshots], first match wins


class _ServedSnapshots:
    """Snapshots and minimum indexes of one database's feeds, for serving."""

    def __init__(self, db_path: Path, mirror: bool, names: list[str] | None):
        self.db_path, self.mirror = db_path, mirror
        self.only = None if names is None else set(names)
        self.files = mirror_snapshot_dir(db_path) if mirror else snapshot_dir(db_path)
        self.conn: sqlite3.Connection | None = None

    def open(self) -> None:
        if not self.mirror:  # (a mirror database gets the table when it keeps a snapshot)
            c = connect(self.db_path)  # read-write once, so the schema exists for readers
            ensure_schema(c)
            c.close()
        self.conn = connect(self.db_path, readonly=True)

    def feed_id(self, name: str) -> int | None:
        if self.conn is None or (self.only is not None and name not in self.only):
            return None
        return (follow_id if self.mirror else feed_id)(self.conn, name)

    def minimum(self, fid: int) -> int:
        if self.mirror:
            return relay_minimum_index(base_size(self.conn, fid))
        return minimum_index(self.conn, fid)


def server_extension(db_path: Path | str, mirror: bool = False, names: list[str] | None = None):
    """``install(app)`` adding, for feeds of the publisher database ``db_path``
    (with ``mirror``: the followed feeds ``names``, all when None, of a mirror
    database, as a relay re-serves them):

    * ``GET /feeds/NAME/snapshot/index`` -- JSON ``{"snapshots": [...], "minimum_index": N}``,
    * ``GET /feeds/NAME/snapshot/<sha256>`` -- the snapshot file (immutable),
    * ``GET /feeds/NAME/snapshot/<sha256>.msgpack`` -- its msgpack stream,
      decompressed (immutable; the file itself when it is not compressed),
    * a middleware answering ``410 Gone`` for entry bundles whose end index is
      at most the feed's minimum index (tlog-tiles pruning). It runs before
      the tile handler, so the server's in-memory tile cache cannot leak them.

    A relay offers the snapshot it bootstrapped from (``bootstrap`` keeps it)
    and its minimum index is where that left it (``relay_minimum_index``), so
    its own fresh followers bootstrap from it as they would from the origin.
    Installed for several databases, the first that has the feed answers.
    """
    source = _ServedSnapshots(Path(db_path), mirror, names)
    key = SNAPSHOT_SOURCES
    sha_re = re.compile(r"[0-9a-f]{64}")  # fullmatch

    def find(app: web.Application, name: str) -> tuple[_ServedSnapshots, int] | tuple[None, None]:
        for src in app[key]:
            fid = src.feed_id(name)
            if fid is not None:
                return src, fid
        return None, None

    async def index(request: web.Request) -> web.Response:
        src, fid = find(request.app, request.match_info["name"])
        if src is None:
            raise NotFoundError("no such feed")
        body = encode_index(list_snapshots(src.conn, fid), src.minimum(fid))
        return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "public, max-age=2"})

    async def snapshot_file(request: web.Request) -> web.StreamResponse:
        sha = request.match_info["sha"]
        # <sha256>.msgpack: the same snapshot's msgpack stream without compression
        # (docs/PROTOCOL.md section 11), for clients that cannot read zstd.
        sha, raw = (sha[:-len(".msgpack")], True) if sha.endswith(".msgpack") else (sha, False)
        src, fid = find(request.app, request.match_info["name"])
        refs = [] if src is None or not sha_re.fullmatch(sha) else [r for r in list_snapshots(src.conn, fid)
                                                                     if r.sha256 == sha]
        path = src.files / str(fid) / f"{sha}.snap" if refs else None
        if path is None or not path.exists():
            raise NotFoundError("no such snapshot")
        headers = {"Cache-Control": "public, max-age=31536000, immutable", "Content-Type": "application/octet-stream"}
        if not (raw and refs[0].compressed):
            return web.FileResponse(path, headers=headers)
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        if request.method != "HEAD":
            stream = await asyncio.to_thread(open_msgpack_stream, path)
            try:
                while chunk := await asyncio.to_thread(stream.read, 1 << 20):
                    await resp.write(chunk)
            finally:
                stream.close()
        await resp.write_eof()
        return resp

    @web.middleware
    async def deny_pruned(request: web.Request, handler):
        path = request.path
        if "/tile/entries/" in path and path.startswith("/feeds/"):
            name, _, rest = path[len("/feeds/"):].partition("/")
            try:
                _level, idx, width = parse_tile_path(rest)
            except MalformedError:
                return await handler(request)
            src, fid = find(request.app, name)
            if src is not None and idx * TILE_WIDTH + width <= src.minimum(fid):
                raise GoneError("entry bundle pruned: below the feed's minimum index; "
                                "bootstrap from a snapshot (see snapshot/index)")
        return await handler(request)

    def install(app: web.Application) -> None:
        async def open_conn(app: web.Application):
            source.open()
            yield
            source.conn.close()

        app.cleanup_ctx.append(open_conn)
        if key in app:  # routes and middleware are already there: one more database
            app[key].append(source)
            return
        app[key] = [source]
        app.middlewares.append(deny_pruned)
        app.router.add_get("/feeds/{name}/snapshot/index", index)
        app.router.add_get("/feeds/{name}/snapshot/{sha}", snapshot_file)

    return install
