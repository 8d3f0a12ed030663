"""The read-side HTTP server against a real publisher database; what is not
a tile path (a huge index, a trailing newline) is 404, never 500.
"""
from __future__ import annotations

import gzip

import aiohttp
import pytest
from yarl import URL

from federation.core.entries import Add
from federation.core.note import Signer
from federation.net.server import PublisherSource, create_app
from federation.node.assembly import read_side
from federation.store.publisher import Publisher
from federation.store.snapshots import prune, write_snapshot

from support.loopback import BOUND

ORIGIN = "example.org/feeds/t"


@pytest.fixture
async def client(tmp_path, aiohttp_client):
    p = Publisher(tmp_path / "pub.db")
    s = Signer.generate(ORIGIN)
    p.create_feed("t", ORIGIN, s)
    p.publish("t", [Add("md5", i.to_bytes(16, "big"), "c", (), 0) for i in range(300)], s)
    app = create_app([PublisherSource(tmp_path / "pub.db")])
    c = await aiohttp_client(app)
    c.publisher = p
    yield c
    p.close()


async def test_checkpoint_headers(client):
    r = await client.get("/feeds/t/checkpoint")
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.headers["Cache-Control"] == "public, max-age=2"
    assert (await r.read()) == client.publisher.feed("t").checkpoint


async def test_tiles_and_bundles(client):
    r = await client.get("/feeds/t/tile/0/000")
    assert r.status == 200 and len(await r.read()) == 8192
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert "immutable" in r.headers["Cache-Control"]
    r = await client.get("/feeds/t/tile/0/001.p/45")
    assert r.status == 200 and len(await r.read()) == 45 * 32
    r = await client.get("/feeds/t/tile/1/000.p/1")
    assert r.status == 200 and len(await r.read()) == 32
    r = await client.get("/feeds/t/tile/entries/000", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert r.status == 200 and r.headers.get("Content-Encoding") == "gzip"
    body = gzip.decompress(await r.read())
    assert body.startswith(b"\x00")  # first entry's uint16 length


@pytest.mark.parametrize("path", [
    "/feeds/nope/checkpoint", "/feeds/nope/tile/0/000", "/feeds/t/tile/0/002", "/feeds/t/tile/0/001.p/44",
    "/feeds/t/tile/0/../../../etc/passwd", "/feeds/t/tile/0/%2e%2e/%2e%2e/etc/passwd", "/feeds/t/tile/9/000",
    "/feeds/t/tile/entries/0000", "/feeds/t/checkpoint/x", "/nothing", "/feeds/t/tile/0/000.p/256",
])
async def test_unknown_paths_404(client, path):
    r = await client.get(path)
    assert r.status == 404


async def test_health_and_listing(client):
    assert (await client.get("/healthz")).status == 200
    feeds = (await (await client.get("/feeds")).json())["feeds"]
    assert [f["name"] for f in feeds] == ["t"] and feeds[0]["size"] == 301


async def test_write_methods_refused(client):
    r = await client.post("/feeds/t/checkpoint", data=b"x")
    assert r.status == 405


async def test_only_the_declared_feeds_of_a_database_are_served(tmp_path, aiohttp_client):
    """A node serves the feeds its config publishes, not every feed that
    happens to sit in the same publisher database."""
    from federation.node.assembly import read_side
    p = Publisher(tmp_path / "pub.db")
    for name in ("t", "private"):
        s = Signer.generate(f"example.org/feeds/{name}")
        p.create_feed(name, f"example.org/feeds/{name}", s)
        p.publish(name, [Add("md5", i.to_bytes(16, "big"), "c", (), 0) for i in range(300)], s)
    extensions, middlewares = read_side(tmp_path / "pub.db", published=["t"])
    c = await aiohttp_client(create_app([PublisherSource(tmp_path / "pub.db", ["t"])], extensions=extensions,
                                        middlewares=middlewares))
    assert [f["name"] for f in (await (await c.get("/feeds")).json())["feeds"]] == ["t"]
    for path in ("checkpoint", "tile/0/000", "tile/entries/000", "snapshot/index"):
        assert (await c.get(f"/feeds/t/{path}")).status == 200, path
        assert (await c.get(f"/feeds/private/{path}")).status == 404, path
    p.close()


async def _status(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.get(URL(url, encoded=True)) as r:
            return r.status, await r.read()


async def _origin(feed, servers) -> str:
    extensions, middlewares = read_side(feed.path)
    return await servers.start(create_app([PublisherSource(feed.path)], extensions=extensions,
                                          middlewares=middlewares))


async def test_huge_tile_index_is_404_not_500(feed, servers):
    feed.publish_version(300)
    url = await _origin(feed, servers)
    huge = "x999/x999/x999/x999/x999/x999/x999/000"  # > 2^63: no tile of any tree
    for path in (f"tile/0/{huge}", f"tile/entries/{huge}", f"tile/0/{huge}.p/5"):
        status, _ = await _status(f"{url}/feeds/tid/{path}")
        assert status == 404, path


async def test_trailing_newline_is_not_a_tile_path(feed, servers):
    feed.publish_version(300)
    feed.publish_version(300)
    write_snapshot(feed.path, "tid")
    prune(feed.path, "tid")
    url = await _origin(feed, servers)
    assert (await _status(f"{url}/feeds/tid/tile/entries/000"))[0] == 410
    # "000\n" is not a tlog-tiles path: 404 like any malformed path, not 410.
    assert (await _status(f"{url}/feeds/tid/tile/entries/000%0A"))[0] == 404
