"""Relays: publisher -> relay -> relay -> mirror, byte for byte; bad relays
are caught. A relay's cache never serves bundles a re-bootstrap deleted, a
relay bootstrapped from a snapshot serves it on, and refreshed checkpoints
pass through a relay whatever a hostile upstream padded its note with.
"""
from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from federation.core.errors import MalformedError, RollbackError, TransportError
from federation.core.layout import ENTRIES, tile_path
from federation.core.note import Signer
from federation.net.fetcher import Fetcher
from federation.net.relay import RelaySource
from federation.net.server import PublisherSource, create_app
from federation.node.assembly import read_side
from federation.store.snapshots import prune, write_snapshot
from federation.store.tilestore import TileStore
from federation.sync.follower import FollowState, sync_from_upstreams
from federation.sync.orchestrator import sync_feed

from support.feeds import follow, make_feed, snapshot
from support.loopback import BOUND, Servers, bounded


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


async def _status(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.get(URL(url, encoded=True)) as r:
            return r.status, await r.read()


async def _origin(feed, servers) -> str:
    extensions, middlewares = read_side(feed.path)
    return await servers.start(create_app([PublisherSource(feed.path)], extensions=extensions,
                                          middlewares=middlewares))


async def test_relay_cache_does_not_serve_bundles_deleted_by_a_rebootstrap(tmp_path, feed, servers):
    feed.publish_version(300)  # case-1: bundle 0 holds its hashes
    feed.publish_version(5)
    origin = await _origin(feed, servers)
    upstream = [f"{origin}/feeds/tid/"]
    relay = follow(tmp_path / "relay.db", feed, upstream)
    await bounded(sync_from_upstreams(relay, "tid", upstream))
    relay_url = await servers.start(create_app([RelaySource(tmp_path / "relay.db")]))
    status, body = await _status(f"{relay_url}/feeds/tid/tile/entries/000")
    assert status == 200 and len(body) > 0
    # The origin withdraws case-1, snapshots and prunes; the lagging relay
    # re-bootstraps, which deletes its old entry bundles (withdrawn entries).
    feed.withdraw_case("case-1")
    feed.publish_version(300)
    write_snapshot(feed.path, "tid")
    prune(feed.path, "tid")
    await bounded(sync_from_upstreams(relay, "tid", upstream))
    f = relay.get("tid")
    assert f.base_size == feed.pub.feed("tid").size
    assert relay.conn.execute("SELECT 1 FROM tiles WHERE feed=? AND level=? AND idx=0",
                              (f.id, ENTRIES)).fetchone() is None
    # A fresh server over the same relay DB says 404; the running one must too.
    fresh = await servers.start(create_app([RelaySource(tmp_path / "relay.db")]))
    assert (await _status(f"{fresh}/feeds/tid/tile/entries/000"))[0] == 404
    assert (await _status(f"{relay_url}/feeds/tid/tile/entries/000"))[0] == 404
    relay.close()


async def test_relay_bootstrapped_from_a_snapshot_serves_it_to_fresh_followers(tmp_path, feed, servers):
    """A relay of a pruned feed starts from a snapshot and holds no bundles
    before it. It offers that snapshot and its minimum index, so a fresh
    mirror that knows only the relay bootstraps from it, verified against
    the signed log like any snapshot, and then follows the log."""
    from federation.core.snapshot_format import parse_index, relay_minimum_index

    feed.publish_version(300)
    feed.withdraw_case("case-1")
    feed.publish_version(300)
    write_snapshot(feed.path, "tid")
    prune(feed.path, "tid")
    feed.publish_version(5)  # the log goes on after the snapshot
    origin = await _origin(feed, servers)
    upstream = [f"{origin}/feeds/tid/"]
    relay = follow(tmp_path / "relay.db", feed, upstream)
    await bounded(sync_from_upstreams(relay, "tid", upstream))  # fresh: bootstraps from the origin's snapshot
    base = relay.get("tid").base_size
    assert base > 0 and relay.get("tid").applied_size == feed.pub.feed("tid").size

    extensions, middlewares = read_side(None, tmp_path / "relay.db", ["tid"])
    relay_url = await servers.start(create_app([RelaySource(tmp_path / "relay.db", ["tid"])],
                                               extensions=extensions, middlewares=middlewares))
    status, body = await _status(f"{relay_url}/feeds/tid/snapshot/index")
    assert status == 200
    refs, minimum = parse_index(body)
    assert [r.size for r in refs] == [base] and minimum == relay_minimum_index(base) > 0
    assert (await _status(f"{relay_url}/feeds/tid/tile/entries/000"))[0] == 410  # gone, not 404
    assert (await _status(f"{relay_url}/feeds/tid/snapshot/{refs[0].sha256}"))[0] == 200

    down = follow(tmp_path / "down.db", feed, [f"{relay_url}/feeds/tid/"])
    await bounded(sync_from_upstreams(down, "tid", [f"{relay_url}/feeds/tid/"]))
    mine, theirs = down.get("tid"), feed.pub.feed("tid")
    assert (mine.applied_size, mine.version, mine.count, mine.digest) == \
        (theirs.size, theirs.version, theirs.count, theirs.digest)
    assert down.audit("tid") == []
    # Not a relayed feed: nothing offered.
    assert (await _status(f"{relay_url}/feeds/other/snapshot/index"))[0] == 404

    # The origin moves on and prunes again while the relay is away: the relay
    # re-bootstraps, and offers the new snapshot only (the old one's bundles are gone).
    feed.withdraw_case("case-3")
    feed.publish_version(300)
    write_snapshot(feed.path, "tid")
    prune(feed.path, "tid")
    await bounded(sync_from_upstreams(relay, "tid", upstream))
    new_base = relay.get("tid").base_size
    assert new_base > base
    refs2, minimum2 = parse_index((await _status(f"{relay_url}/feeds/tid/snapshot/index"))[1])
    assert [r.size for r in refs2] == [new_base] and minimum2 == relay_minimum_index(new_base)
    kept = list((tmp_path / "mirror-snapshots").rglob("*.snap"))
    assert [p.name for p in kept] == [f"{refs2[0].sha256}.snap"]
    relay.close()
    down.close()


def _frozen_copy(feed, path: Path) -> Path:
    """The publisher database as it is now: served, a relay stuck at this tree."""
    import shutil
    feed.pub.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(feed.path, path)
    return path


async def test_a_relay_passes_refreshes_on_after_a_hostile_upstream_padded_its_note(tmp_path):
    from federation.core.entries import Add
    from federation.core.freshness import log_timestamp, stamp_note
    from federation.store.mirror import Mirror
    from federation.core.note import parse_vkey
    from federation.store.publisher import Publisher
    from federation.net.server import PublisherSource, create_app
    from federation.sync.orchestrator import sync_once
    feed = make_feed(tmp_path / "pub.db", "tid", access="public")
    hour_ago = int(time.time()) - 3600
    feed.pub.publish("tid", [Add("md5", b"\1" * 16, "c-1", ("csam",), 0)], feed.signer, now=hour_ago)
    # A hostile relay: the publisher's tiles byte for byte, its signed note with three
    # extra signature lines by keys nobody trusts (verifiers ignore them: it verifies).
    hostile = _frozen_copy(feed, tmp_path / "hostile.db")
    strangers = [Signer.generate(f"stranger-{i}.example") for i in range(3)]
    pub = Publisher(hostile)
    pub.conn.execute("UPDATE feeds SET checkpoint=?", (stamp_note(feed.checkpoint(), strangers, hour_ago),))
    pub.close()
    servers = Servers()
    try:
        origin = await servers.start(create_app([PublisherSource(feed.path)])) + "/feeds/tid/"
        bad = await servers.start(create_app([PublisherSource(hostile)])) + "/feeds/tid/"
        relay = Mirror(tmp_path / "relay" / "mirror.db")  # what a relay node re-serves: follows.checkpoint
        relay.follow("tid", feed.origin, [feed.signer.vkey], [bad, origin])
        await bounded(sync_once(relay, "tid"))
        # The publisher re-stamps its quiet feed (feed refresh); the hostile relay is gone.
        refreshed = feed.pub.refresh_timestamp("tid", feed.signer)
        relay.conn.execute("UPDATE follows SET urls=?", (origin,))
        await bounded(sync_once(relay, "tid"))
        key = [parse_vkey(feed.signer.vkey)]
        now = int(time.time())
        served = relay.get("tid").checkpoint
        assert log_timestamp(refreshed, key, now, 86400).time >= now - 60
        assert log_timestamp(served, key, now, 86400).time >= now - 60, \
            "the relay still serves the hour-old note: its followers will call the feed stale"
        relay.close()
    finally:
        await servers.close()
        feed.pub.close()
