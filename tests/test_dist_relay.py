"""Relays: publisher -> relay -> relay -> mirror, byte for byte; bad relays are caught."""
from __future__ import annotations

import aiohttp
import pytest

from dist_fixtures import BOUND, bounded, feed, follow, servers, snapshot  # noqa: F401
from federation.core.errors import MalformedError, RollbackError, TransportError
from federation.core.layout import ENTRIES, tile_path
from federation.sync.follower import FollowState, sync_from_upstreams
from federation.net.fetcher import Fetcher
from federation.net.relay import RelaySource
from federation.sync.orchestrator import sync_feed
from federation.net.server import create_app
from federation.store.tilestore import TileStore


async def _get(url: str) -> bytes:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.get(url) as r:
            assert r.status == 200, url
            return await r.read()


async def _chain(tmp_path, feed, servers):
    origin_url = await servers.publisher(feed.path)
    r1 = follow(tmp_path / "relay1.db", feed, [f"{origin_url}/feeds/tid/"])
    r1_url = await servers.start(create_app([RelaySource(tmp_path / "relay1.db")]))
    r2 = follow(tmp_path / "relay2.db", feed, [f"{r1_url}/feeds/tid/"])
    r2_url = await servers.start(create_app([RelaySource(tmp_path / "relay2.db")]))
    m = follow(tmp_path / "mirror.db", feed, [f"{r2_url}/feeds/tid/"])
    return origin_url, (r1, r1_url), (r2, r2_url), m


async def _hop(m, urls):
    return await bounded(sync_from_upstreams(m, "tid", urls))


async def test_relay_chain_is_byte_for_byte(tmp_path, feed, servers):
    origin_url, (r1, r1_url), (r2, r2_url), m = await _chain(tmp_path, feed, servers)
    for step in range(3):
        feed.publish_version(300 if step == 0 else 7)  # crosses a full tile boundary
        if step == 2:
            feed.withdraw_case("case-1")
        await _hop(r1, list(r1.get("tid").urls))
        await _hop(r2, list(r2.get("tid").urls))
        res = await _hop(m, list(m.get("tid").urls))
        assert res.changed
    head = feed.pub.feed("tid")
    # The end mirror verified against the origin's key only, and holds the origin's state.
    f = m.get("tid")
    assert (f.version, f.applied_size, f.count, f.digest) == (head.version, head.size, head.count, head.digest)
    assert m.audit("tid") == []
    # Every hop serves the origin's checkpoint and tiles byte for byte.
    origin_cp = await _get(f"{origin_url}/feeds/tid/checkpoint")
    for url in (r1_url, r2_url):
        assert await _get(f"{url}/feeds/tid/checkpoint") == origin_cp
    tiles = feed.pub.conn.execute("SELECT level, idx, width, data FROM tiles").fetchall()
    assert len(tiles) > 5
    for level, idx, width, data in tiles:
        assert await _get(f"{r2_url}/feeds/tid/{tile_path(level, idx, width)}") == data


class Tampering:
    """A relay source that flips one byte of every entry bundle."""

    def __init__(self, inner):
        self.inner = inner

    def names(self):
        return self.inner.names()

    def checkpoint(self, name):
        return self.inner.checkpoint(name)

    def tile(self, name, level, index, width):
        data = self.inner.tile(name, level, index, width)
        if data is not None and level == ENTRIES:
            data = data[:-1] + bytes([data[-1] ^ 1])
        return data


class Partial(Tampering):
    """A relay that serves the checkpoint but withholds the entry bundles."""

    def tile(self, name, level, index, width):
        return None if level == ENTRIES else self.inner.tile(name, level, index, width)


class Frozen(Tampering):
    """A relay that keeps serving an old checkpoint (hides later versions)."""

    def __init__(self, inner, old: bytes):
        super().__init__(inner)
        self.old = old

    def checkpoint(self, name):
        return self.old

    def tile(self, name, level, index, width):
        return self.inner.tile(name, level, index, width)


@pytest.mark.parametrize("bad,error", [(Tampering, MalformedError), (Partial, TransportError)])
async def test_tampering_or_partial_relay_is_caught(tmp_path, feed, servers, bad, error):
    origin_url = await servers.publisher(feed.path)
    relay = follow(tmp_path / "relay.db", feed, [f"{origin_url}/feeds/tid/"])
    feed.publish_version()
    await _hop(relay, [f"{origin_url}/feeds/tid/"])
    bad_url = await servers.start(create_app([bad(RelaySource(tmp_path / "relay.db"))]))
    m = follow(tmp_path / "m.db", feed, [f"{bad_url}/feeds/tid/"])
    before = snapshot(m, "tid")
    with pytest.raises(error):
        await _hop(m, [f"{bad_url}/feeds/tid/"])
    assert snapshot(m, "tid") == before  # nothing unverified was applied
    assert m.get("tid").last_error.startswith(error.kind)
    # With the origin as the second upstream, the follower recovers from it.
    state = FollowState("tid")
    res = await bounded(sync_from_upstreams(m, "tid", [f"{bad_url}/feeds/tid/", f"{origin_url}/feeds/tid/"],
                                            state=state))
    assert res.changed and state.upstream == f"{origin_url}/feeds/tid/"
    assert state.errors and state.errors[0].startswith(error.kind)
    assert m.get("tid").version == 1 and m.audit("tid") == []


async def test_relay_hiding_versions_is_a_rollback(tmp_path, feed, servers):
    origin_url = await servers.publisher(feed.path)
    relay = follow(tmp_path / "relay.db", feed, [f"{origin_url}/feeds/tid/"])
    feed.publish_version()
    old = feed.checkpoint()
    feed.publish_version()
    await _hop(relay, [f"{origin_url}/feeds/tid/"])
    frozen_url = await servers.start(create_app([Frozen(RelaySource(tmp_path / "relay.db"), old)]))
    m = follow(tmp_path / "m.db", feed, [f"{origin_url}/feeds/tid/"])
    await _hop(m, [f"{origin_url}/feeds/tid/"])
    before = snapshot(m, "tid")
    with pytest.raises(RollbackError):
        await _hop(m, [f"{frozen_url}/feeds/tid/"])
    assert snapshot(m, "tid") == before


async def test_relay_keeps_serving_last_checkpoint_during_catch_up(tmp_path, feed, servers):
    origin_url = await servers.publisher(feed.path)
    relay = follow(tmp_path / "relay.db", feed, [f"{origin_url}/feeds/tid/"])
    feed.publish_version()
    await _hop(relay, [f"{origin_url}/feeds/tid/"])
    src = RelaySource(tmp_path / "relay.db")
    served = src.checkpoint("tid")
    assert served == feed.checkpoint()
    old_size = relay.get("tid").applied_size
    # Two more versions: the relay's mirror applies them one transaction at a
    # time; between them it must still serve the last complete checkpoint.
    feed.publish_version()
    feed.publish_version()
    seen = []

    def between(v):
        seen.append((v.seal.version, src.checkpoint("tid")))
        (listed,) = src.names()  # the /feeds listing agrees with the served checkpoint
        listing.append((listed["size"], listed["version"]))

    listing = []

    async with Fetcher([f"{origin_url}/feeds/tid/"]) as fetcher:
        await bounded(sync_feed(relay, "tid", fetcher, progress=between))
    assert [v for v, _ in seen] == [2, 3]
    assert seen[0][1] == served  # mid catch-up: the previous complete view
    assert listing[0] == (old_size, None)  # not the applied version 2, which nothing serves yet
    assert listing[1] == (relay.get("tid").applied_size, 3)
    assert seen[1][1] == feed.checkpoint()
    assert src.tile("tid", 0, 0, old_size) == TileStore(relay.conn, relay.get("tid").id).get(0, 0, old_size)
    assert src.checkpoint("other") is None and src.tile("other", 0, 0, 1) is None
    src.close()
