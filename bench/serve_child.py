"""Child process: ``serve_child.py federation DB PORT`` serves a publisher DB
with the real app (snapshot extension included); ``serve_child.py bare DB
PORT`` serves the same checkpoint and tile bytes from a bare aiohttp
handler (a dict lookup), the baseline of bench/server.py."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402

from federation.store.db import connect  # noqa: E402
from federation.net.server import PublisherSource, create_app  # noqa: E402
from federation.net.snapshots import server_extension  # noqa: E402


def bare_app(db: str) -> web.Application:
    conn = connect(db, readonly=True)
    name, fid, checkpoint = conn.execute("SELECT name, id, checkpoint FROM feeds").fetchone()
    tiles = {}
    for level, idx, width, data in conn.execute("SELECT level, idx, width, data FROM tiles WHERE feed=? AND level>=0"
                                                " AND idx < 4 AND width=256", (fid,)):
        from federation.core.layout import tile_path
        tiles[f"/feeds/{name}/{tile_path(level, idx, width)}"] = data
    bodies = {f"/feeds/{name}/checkpoint": checkpoint, **tiles}

    async def handler(request: web.Request) -> web.Response:
        body = bodies.get(request.path)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body)

    async def healthz(request):
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/{tail:.*}", handler)
    return app


def main() -> None:
    kind, db, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "federation":
        app = create_app([PublisherSource(db)], extensions=[server_extension(db)])
    else:
        app = bare_app(db)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
