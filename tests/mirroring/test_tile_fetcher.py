"""The one tile fetcher: bounded concurrency, ordered delivery, size limits.

A real aiohttp server on loopback answers every tile after a delay that
shrinks with its index, so later requests finish first; the fetcher must
still yield in the order asked, never hold more than its window in flight,
and read a lazy plan no further ahead than that window.
"""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from federation.core.errors import TransportError
from federation.core.layout import parse_tile_path
from federation.net.fetcher import Fetcher
from federation.sync.tilefetcher import MAX_BUNDLE_BYTES, MAX_TILE_BYTES, TileFetcher

from support.loopback import bounded


class Upstream:
    def __init__(self):
        self.in_flight = 0
        self.most = 0

    async def handle(self, request: web.Request) -> web.Response:
        level, index, width = parse_tile_path(request.match_info["tail"])
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.002 * (40 - index % 40))  # later tiles answer sooner
        finally:
            self.in_flight -= 1
        return web.Response(body=bytes([index % 256]) * (MAX_TILE_BYTES if level >= 0 else 100))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/feeds/t/{tail:tile/.*}", self.handle)
        return app


async def test_hash_tiles_come_in_order_with_at_most_window_in_flight(servers):
    up = Upstream()
    url = await servers.start(up.app())
    read = []

    def plan():
        for i in range(40):
            read.append(i)
            yield (0, i, 256)

    got = []
    async with Fetcher([f"{url}/feeds/t/"], concurrency=16) as f:
        async for key, data in TileFetcher(f, window=4).hash_tiles(plan()):
            assert len(read) <= len(got) + 1 + 4  # the lazy plan is read at most a window ahead
            got.append(key)
            assert data == bytes([key[1]]) * MAX_TILE_BYTES
    assert got == [(0, i, 256) for i in range(40)]
    assert 1 < up.most <= 4, up.most


async def test_bundles_come_in_order_and_the_window_defaults_to_the_fetchers_concurrency(servers):
    up = Upstream()
    url = await servers.start(up.app())
    async with Fetcher([f"{url}/feeds/t/"], concurrency=3) as f:
        tiles = TileFetcher(f)
        assert tiles.window == 3
        got = [key async for key, _ in tiles.bundles((i, 256) for i in range(20))]
    assert got == [(i, 256) for i in range(20)] and up.most <= 3


@pytest.mark.parametrize("level,limit", [(0, MAX_TILE_BYTES), (-1, MAX_BUNDLE_BYTES)])
async def test_a_response_over_the_largest_valid_tile_is_a_transport_error(servers, level, limit):
    async def handle(request: web.Request) -> web.Response:
        _, index, _ = parse_tile_path(request.match_info["tail"])
        return web.Response(body=b"\x00" * (limit + 1 if index == 7 else 10))

    app = web.Application()
    app.router.add_get("/feeds/t/{tail:tile/.*}", handle)
    url = await servers.start(app)
    async with Fetcher([f"{url}/feeds/t/"]) as f:
        tiles = TileFetcher(f)
        it = tiles.hash_tiles((0, i, 256) for i in range(10)) if level == 0 else \
            tiles.bundles((i, 256) for i in range(10))
        got = []
        with pytest.raises(TransportError, match=f"exceeds {limit}"):
            async for key, _ in it:
                got.append(key[-2])
        assert got == list(range(7))  # everything before the oversize one, in order


async def test_leaving_early_cancels_the_requests_in_flight(servers):
    up = Upstream()
    url = await servers.start(up.app())
    async with Fetcher([f"{url}/feeds/t/"], concurrency=8) as f:
        it = TileFetcher(f).hash_tiles((0, i, 256) for i in range(40))
        async for _ in it:
            break
        await bounded(it.aclose())
        await asyncio.sleep(0.2)
    assert up.in_flight == 0
