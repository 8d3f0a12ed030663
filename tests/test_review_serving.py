"""Review of the serving side: paths, caching, relays (real servers on loopback)."""
from __future__ import annotations

import aiohttp
from yarl import URL

from dist_fixtures import BOUND, bounded, feed, follow, servers  # noqa: F401
from federation.core.layout import ENTRIES
from federation.sync.follower import sync_from_upstreams
from federation.node.assembly import read_side
from federation.net.relay import RelaySource
from federation.net.server import PublisherSource, create_app
from federation.store.snapshots import prune, write_snapshot


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
