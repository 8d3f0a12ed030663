"""Gossip: ``verify_against`` proves two nodes' views consistent (both
directions) or reports a fork with both signed notes; and the CLI commands
``federation verify --against`` and ``federation sync`` (exit non-zero on a
stale feed) run as real processes against loopback servers."""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from federation.core.errors import MalformedError
from federation.core.merkle import verify_consistency
from federation.net.server import PublisherSource, create_app
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher
from federation.sync.gossip import SplitViewError, verify_against
from federation.sync.orchestrator import sync_once
from federation.trust.rotation import publish_trust

from support.feeds import NAME, adds, feed_url, follow, make_feed
from support.loopback import Servers
from support.mirror_state import snapshot, sync
from support.tamper import clone_db
from support.trust_world import World

FEDERATION = str(Path(sys.executable).parent / "federation")


async def test_consistent_views_prove_in_both_directions(world: World):
    await world.publish(300)
    a, b = world.mirror("a.db"), world.mirror("b.db")
    await sync(a)
    await sync(b)
    await world.publish(200)
    await sync(b)
    # a is behind b: the proof comes from b's (remote) tiles.
    r = await verify_against(a, NAME, world.url)
    assert r.theirs.size > r.ours.size and r.proof
    assert verify_consistency(r.ours.size, r.theirs.size, r.ours.root, r.theirs.root, r.proof)
    # b compared with an older node: the proof comes from b's own stored tiles.
    old = await _serve_frozen_copy(world, a)
    r2 = await verify_against(b, NAME, old)
    assert r2.theirs.size < r2.ours.size and verify_consistency(r2.theirs.size, r2.ours.size, r2.theirs.root,
                                                                r2.ours.root, r2.proof)
    assert "consistent" in r2.describe()


async def _serve_frozen_copy(world: World, m: Mirror) -> str:
    """Serve the publisher state the mirror ``m`` holds, from a snapshot DB."""
    snap = clone_db(world.pub.path, world.tmp / f"frozen-{time.monotonic_ns()}.db")
    p = Publisher(snap)
    size = m.get(NAME).applied_size
    # Roll the copy's head back to the mirror's checkpoint: tiles for that size are all still there.
    p.conn.execute("UPDATE feeds SET size=?, checkpoint=? WHERE name=?", (size, m.get(NAME).checkpoint, NAME))
    p.close()
    from federation.net.server import PublisherSource, create_app
    from support.loopback import start_app
    runner, url = await start_app(create_app([PublisherSource(snap)]))
    world.runners.append(runner)
    return feed_url(url)


async def test_fork_is_reported_with_both_signed_notes(world: World, serve):
    await world.publish(3)
    fork_db = clone_db(world.pub.path, world.tmp / "fork.db")
    await world.publish(4)
    fork = Publisher(fork_db)
    fork.publish(NAME, adds(6), world.log_key)  # same key, different history
    fork_url = feed_url(await serve(fork_db))
    m = world.mirror()
    await sync(m)
    before = snapshot(m)
    try:
        await verify_against(m, NAME, fork_url)
        raise AssertionError("a fork must be reported")
    except SplitViewError as e:
        assert e.kind == "fork" and "not a prefix" in str(e)
        assert e.ours == m.get(NAME).checkpoint and e.theirs == fork.feed(NAME).checkpoint
        assert e.theirs.decode() in e.evidence() and e.ours.decode() in e.evidence()
    assert snapshot(m) == before
    fork.close()


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(FEDERATION, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_cli_sync_exits_non_zero_on_stale_and_verify_against_reports(world: World, serve, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    trust_file = tmp_path / "t.trust"
    trust_file.write_bytes(world.trust_v1(max_staleness=60))
    world.pub.conn.execute("DELETE FROM trust_chain")
    publish_trust(world.pub.conn, NAME, trust_file.read_bytes())
    for w in world.witnesses:
        w.clock = lambda: time.time() - 3600  # the last cosignatures are an hour old
    await world.publish(3)
    code, out, err = await run_cli("--home", str(home), "follow", NAME, "--url", world.url, "--trust", str(trust_file))
    assert code == 0 and "trust version 1" in out, err
    code, out, err = await run_cli("--home", str(home), "sync", NAME)
    assert code == 1 and "error (stale)" in err and "over the maximum of 60 s" in err, (out, err)
    m = Mirror(home / "mirror.db")
    assert m.get(NAME).applied_size == 0 and m.get(NAME).last_error.startswith("stale: ")
    for w in world.witnesses:
        w.clock = time.time
    await world.cosign()
    code, out, err = await run_cli("--home", str(home), "sync", NAME)
    assert code == 0, err
    code, out, err = await run_cli("--home", str(home), "verify", NAME, "--against", world.url)
    assert code == 0 and "consistent" in out, (out, err)
    fork_db = clone_db(world.pub.path, world.tmp / "fork.db")
    fork = Publisher(fork_db)
    fork.publish(NAME, adds(1), world.log_key)
    fork.close()
    world.pub.publish(NAME, adds(2), world.log_key)
    await world.cosign()
    code, out, err = await run_cli("--home", str(home), "sync", NAME)
    assert code == 0, err
    code, out, err = await run_cli("--home", str(home), "verify", NAME, "--against", feed_url(await serve(fork_db)))
    assert code == 1 and "FORK" in err and "this mirror's checkpoint" in out and "other node's checkpoint" in out
    m.close()
    # A malformed trust file: follow refuses, precisely.
    bad = tmp_path / "bad.trust"
    bad.write_bytes(trust_file.read_bytes().replace(b"quorum = 2", b"quorum = 9"))
    code, out, err = await run_cli("--home", str(tmp_path / "h2"), "follow", "x", "--url", world.url, "--trust", str(bad))
    assert code == 2 and "witnesses.quorum is 9" in err


async def test_a_larger_node_serving_bad_tiles_is_malformed_not_a_fork(tmp_path):
    """Its tiles are proven against its own signed root before the extension
    proof: bad bytes are ``malformed`` (no evidence), never a fork report."""
    class BadTiles(PublisherSource):
        def tile(self, name, level, index, width):
            data = super().tile(name, level, index, width)
            return data if data is None or level < 0 else bytes([data[0] ^ 1]) + data[1:]

    feed = make_feed(tmp_path / "pub.db", access="public")
    servers = Servers()
    try:
        origin = await servers.publisher(feed.path)
        m = follow(tmp_path / "m.db", feed, [f"{origin}/feeds/tid/"])
        feed.publish_version(300)
        await asyncio.wait_for(sync_once(m, "tid"), 15)
        feed.publish_version(20)
        bad = await servers.start(create_app([BadTiles(feed.path)]))
        with pytest.raises(MalformedError, match="no evidence of a fork"):
            await asyncio.wait_for(verify_against(m, "tid", f"{bad}/feeds/tid/"), 15)
        r = await asyncio.wait_for(verify_against(m, "tid", f"{origin}/feeds/tid/"), 15)
        assert r.theirs.size > r.ours.size and r.proof
        m.close()
    finally:
        await servers.close()
        feed.pub.close()
