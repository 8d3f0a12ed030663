"""Closing the window after a publish: with cosigning configured for a feed
(``federation cosign configure``), ``federation publish`` commits the version
but keeps serving the previous checkpoint until the new one carries its
witness cosignatures, so a mirror under a witness quorum never sees an
uncosigned checkpoint and syncs right after the publish. With witnesses down
the version stays pending (old checkpoint served, mirror fresh and unchanged)
until ``federation cosign run --once`` finishes it. Real processes, real
servers and witnesses on loopback."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import aiohttp
import pytest
from aiohttp import web

from federation.core.note import Cosigner, Signer, parse_note
from federation.store.publisher import Publisher
from federation.trust.rotation import publish_trust

from support.cli import run_cli, write_batch
from support.feeds import NAME, adds
from support.loopback import start_app
from support.mirror_state import snapshot, sync
from support.trust_world import World


def cosigners_of(note: bytes) -> set[str]:
    """Witnesses whose cosignatures the note carries (not the log's own
    timestamp line, which is named after the origin)."""
    n = parse_note(note)
    origin = n.text.split(b"\n")[0].decode()
    return {s.name for s in n.signatures if len(s.signature) == 72 and s.name != origin}


async def configure(world: World, *extra: str) -> str:
    code, out, err = await run_cli("--home", str(world.home), "cosign", "configure", NAME,
                                   *[a for spec in world.witness_specs() for a in ("--witness", spec)], *extra)
    assert code == 0, err
    return out


async def publish(world: World, n: int, tag: str) -> tuple[int, str, str]:
    batch = write_batch(world.tmp / f"{tag}.csv", n)
    return await run_cli("--home", str(world.home), "publish", NAME, str(batch))


async def test_mirror_with_a_witness_quorum_syncs_right_after_publish(home_world: World):
    world = home_world
    out = await configure(world)
    # The quorum defaults to the one of the feed's published trust file (2 of 3).
    assert "cosigned by 2 of 3 cosigner(s)" in out, out
    code, out, err = await publish(world, 5, "b1")
    assert code == 0, err
    assert "published t version 1" in out and "cosigned by witness-1.example, witness-2.example, " \
        "witness-3.example; now served" in out, out
    feed = world.pub.feed(NAME)
    assert feed.pending_checkpoint is None and feed.size == 6
    assert cosigners_of(feed.checkpoint) == {"witness-1.example", "witness-2.example", "witness-3.example"}
    # No separate `cosign run`: the mirror accepts the new checkpoint at once.
    m = world.mirror()
    res = await sync(m)
    assert res.changed and res.size == 6 and m.get(NAME).count == 5
    code, out, err = await publish(world, 3, "b2")
    assert code == 0 and "now served" in out, err
    res = await sync(m)
    assert res.changed and res.size == 10 and m.get(NAME).count == 8
    # `cosign run` without --key/--witness uses the stored configuration.
    code, out, err = await run_cli("--home", str(world.home), "cosign", "run", NAME, "--once")
    assert code == 0 and "t: cosigned: served checkpoint of size 10 re-cosigned" in out, (out, err)


async def test_publish_with_witnesses_down_keeps_the_old_checkpoint_until_cosign_run(home_world: World):
    world = home_world
    await configure(world)
    code, out, err = await publish(world, 4, "b1")
    assert code == 0, err
    m = world.mirror()
    assert (await sync(m)).size == 5
    before = snapshot(m)
    served = world.pub.feed(NAME).checkpoint
    # Two of three witnesses go down: the quorum of 2 cannot be met.
    await world.stop_witness(1)
    await world.stop_witness(2)
    code, out, err = await publish(world, 3, "b2")
    assert code == 3, (out, err)
    assert "published t version 2" in out
    assert "error (pending): t version 2 is committed but not served yet" in err
    assert "cosigned by 1 of the 2 required cosigners" in err and "federation cosign run t --once" in err
    feed = world.pub.feed(NAME)
    assert feed.checkpoint == served and feed.pending_checkpoint is not None and feed.size == 9
    # The mirror still sees the old, cosigned checkpoint: fresh, nothing new, data unchanged.
    res = await sync(m)
    assert not res.changed and res.size == 5 and m.get(NAME).last_error is None
    assert snapshot(m) == before
    # The next publish builds on the committed (pending) tree.
    code, out, err = await publish(world, 2, "b3")
    assert code == 3 and "tree size 9 -> 12" in out, (out, err)
    assert world.pub.feed(NAME).checkpoint == served
    # `cosign run --once` with witnesses still down: still pending, exit 1, nothing served.
    code, out, err = await run_cli("--home", str(world.home), "cosign", "run", NAME, "--once")
    assert code == 1 and "t: pending: size 12 is committed but NOT served" in out, (out, err)
    assert world.pub.feed(NAME).checkpoint == served
    # Witnesses back: `cosign run --once` promotes the pending checkpoint.
    await world.start_witness(1)
    await world.start_witness(2)
    code, out, err = await run_cli("--home", str(world.home), "cosign", "run", NAME, "--once")
    assert code == 0 and "t: promoted: size 12 cosigned by" in out, (out, err)
    feed = world.pub.feed(NAME)
    assert feed.pending_checkpoint is None and len(cosigners_of(feed.checkpoint)) == 3
    res = await sync(m)
    assert res.changed and res.size == 12 and m.get(NAME).count == 9 and m.get(NAME).version == 3


async def test_cosigning_off_is_refused_while_pending_and_then_publishes_serve_at_once(home_world: World):
    world = home_world
    await configure(world, "--quorum", "3")
    await world.stop_witness(2)
    code, out, err = await publish(world, 2, "b1")
    assert code == 3 and "cosigned by 2 of the 3 required cosigners" in err, (out, err)
    code, out, err = await run_cli("--home", str(world.home), "cosign", "configure", NAME, "--off")
    assert code == 2 and "has a pending checkpoint" in err, (out, err)
    await world.start_witness(2)
    code, out, err = await run_cli("--home", str(world.home), "cosign", "run", NAME, "--once")
    assert code == 0 and "promoted" in out, (out, err)
    code, out, err = await run_cli("--home", str(world.home), "cosign", "configure", NAME, "--off")
    assert code == 0, err
    # Without a configuration a publish is served at once, exactly as before (uncosigned).
    r = world.pub.publish(NAME, adds(1), world.log_key)
    feed = world.pub.feed(NAME)
    assert not r.pending and feed.pending_checkpoint is None and cosigners_of(feed.checkpoint) == set()
    assert parse_note(feed.checkpoint).text.split(b"\n")[1] == str(r.size).encode()


async def test_refresh_with_a_witness_down_keeps_its_previous_cosignature(home_world: World):
    """A refresh round never lowers the number of cosignatures mirrors see."""
    world = home_world
    await configure(world)
    assert (await publish(world, 2, "b1"))[0] == 0
    await world.stop_witness(0)
    code, out, err = await run_cli("--home", str(world.home), "cosign", "run", NAME, "--once")
    assert code == 0 and "witness witness-1.example: POST" in out, (out, err)
    assert len(cosigners_of(world.pub.feed(NAME).checkpoint)) == 3
    assert (await sync(world.mirror())).size == 3


def test_old_publisher_database_gains_the_pending_column(tmp_path, make_publisher):
    pf = make_publisher("old.db")
    pf.publish(adds(2))
    pf.pub.close()
    conn = sqlite3.connect(pf.path)
    conn.execute("ALTER TABLE feeds DROP COLUMN pending_checkpoint")
    conn.commit()
    conn.close()
    pub = Publisher(pf.path)
    try:
        cols = [r[1] for r in pub.conn.execute("PRAGMA table_info(feeds)")]
        assert cols[-1] == "pending_checkpoint"
        assert pub.feed(NAME).pending_checkpoint is None and pub.feed(NAME).size == 3
        r = pub.publish(NAME, adds(1), pf.signer)
        assert not r.pending and pub.feed(NAME).size == 5
        Publisher(pf.path).close()  # opening again is a no-op
    finally:
        pub.close()


async def test_publishing_api_serves_a_version_only_with_its_cosignatures(home_world: World, serve):
    from aiohttp import ClientSession

    from federation.node.keys import load_signer
    from federation.net.publish_api import PublishAPI
    from federation.net.server import create_app
    world = home_world
    await configure(world)
    from federation.node.cosigning import cosign_configured

    async def after_publish(name):  # what node assembly injects
        return await cosign_configured(world.home / "publisher.db", name)

    api = PublishAPI(world.home / "publisher.db", {NAME: load_signer(world.home / "private" / f"{NAME}.key")},
                     after_publish=after_publish)
    url = await serve(create_app([], extensions=[api.install]))
    m = world.mirror()

    async def post(batch_id: str, n: int) -> dict:
        body = "".join(f'{{"op":"add","type":"md5","hash":"{(batch_id + str(i)).encode().hex().ljust(32, "0")[:32]}",'
                       f'"case":"api-{batch_id}"}}\n' for i in range(n))
        async with ClientSession() as s:
            async with s.post(f"{url}/feeds/{NAME}/batches/{batch_id}", data=body,
                              headers={"Content-Type": "application/x-ndjson"}) as r:
                assert r.status == 201, await r.text()
                return await r.json()

    assert (await post("b1", 4))["served"] is True
    assert world.pub.feed(NAME).pending_checkpoint is None
    assert (await sync(m)).size == 5  # accepted at once under the witness quorum
    served = world.pub.feed(NAME).checkpoint
    await world.stop_witness(1)
    await world.stop_witness(2)
    assert (await post("b2", 2))["served"] is False  # committed, held back: quorum unreachable
    async with ClientSession() as s:  # a retry is replayed, and says it is still not served
        body = "".join(f'{{"op":"add","type":"md5","hash":"{("b2" + str(i)).encode().hex().ljust(32, "0")[:32]}",'
                       f'"case":"api-b2"}}\n' for i in range(2))
        async with s.post(f"{url}/feeds/{NAME}/batches/b2", data=body,
                          headers={"Content-Type": "application/x-ndjson"}) as r:
            again = await r.json()
    assert r.status == 200 and again["replayed"] is True and again["served"] is False
    feed = world.pub.feed(NAME)
    assert feed.checkpoint == served and feed.pending_checkpoint is not None
    assert not (await sync(m)).changed
    # What is listed and snapshotted is the served version, never the pending one.
    from federation.core.errors import InputError
    from federation.net.server import PublisherSource
    from federation.store.snapshots import write_snapshot
    source = PublisherSource(world.home / "publisher.db")
    listed = {f["name"]: f for f in source.names()}[NAME]
    source.close()
    assert listed["pending"] is True and listed["size"] == 5 and listed["version"] is None
    with pytest.raises(InputError, match="not served yet"):
        write_snapshot(world.home / "publisher.db", NAME)


@pytest.mark.timeout(90)
async def test_a_slow_witness_of_one_feed_does_not_hold_up_publishing_to_another(tmp_path):
    """``PublishAPI.handle`` awaits ``cosign_configured`` (up to 30 s) while it
    holds ``self.lock``, one lock per node. A witness of feed ``a`` that
    answers slowly (here 6 s; up to the 30 s timeout) makes every publish of
    every other feed on the node wait behind it, publish after publish."""
    from federation.trust.cosign import CosigningConfig, store_config
    from federation.net.publish_api import PublishAPI
    from federation.store.publisher import Publisher
    from federation.net.server import create_app

    started = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(6)
        return web.Response(status=503, text="busy\n")

    wapp = web.Application()
    wapp.router.add_post("/witness/add-checkpoint", slow)
    pub = Publisher(tmp_path / "pub.db")
    signers = {n: Signer.generate(f"example.org/feeds/{n}") for n in ("a", "b")}
    for n, s in signers.items():
        pub.create_feed(n, s.name, s)
    runners = []
    try:
        runners.append(r := (await start_app(wapp)))
        store_config(pub, "a", CosigningConfig((), ((r[1] + "/witness", Cosigner.generate("w.example").vkey),), 1))
        from federation.node.cosigning import cosign_configured

        async def after_publish(name):  # what node assembly injects
            return await cosign_configured(tmp_path / "pub.db", name)

        api = PublishAPI(tmp_path / "pub.db", signers, after_publish=after_publish)
        runners.append(r := (await start_app(create_app([], extensions=[api.install]))))
        url = r[1]

        async def post(feed: str, batch: str) -> float:
            line = json.dumps({"op": "add", "type": "md5", "hash": (feed + batch).encode().hex().ljust(32, "0")[:32],
                               "case": "c"}) + "\n"
            t = time.monotonic()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as s:
                async with s.post(f"{url}/feeds/{feed}/batches/{batch}", data=line,
                                  headers={"Content-Type": "application/x-ndjson"}) as resp:
                    assert resp.status == 201, await resp.text()
            return time.monotonic() - t

        held = asyncio.create_task(post("a", "a1"))
        await asyncio.wait_for(started.wait(), 5)
        took = await post("b", "b1")
        await held
        assert took < 2, f"a publish of feed b waited {took:.1f} s for feed a's slow witness"
    finally:
        for r, _ in reversed(runners):
            await r.cleanup()
        pub.close()


@pytest.mark.timeout(90)
async def test_a_defaulted_cosigning_quorum_follows_the_trust_file_after_a_rotation(home_world: World):
    """docs/trust.md: "The quorum defaults to the quorum of the feed's published
    trust file", and a feed tolerates ``len(witnesses) - quorum`` witnesses
    down. The default is copied into ``feed_cosigning`` at configure time:
    trust version 3 lowers the quorum from 3 to 2, yet with one witness down
    each publish stays pending (3 of 3 still required) though every mirror
    would accept it."""
    world = home_world
    v2 = world.trust_v1(version=2, quorum=3)
    publish_trust(world.pub.conn, NAME, v2)
    code, out, err = await run_cli("--home", str(world.home), "cosign", "configure", NAME,
                                   *[a for spec in world.witness_specs() for a in ("--witness", spec)])
    assert code == 0 and "cosigned by 3 of 3" in out, (out, err)
    publish_trust(world.pub.conn, NAME, world.trust_v1(version=3, quorum=2))
    await world.stop_witness(2)
    code, out, err = await run_cli("--home", str(world.home), "publish", NAME,
                                   str(write_batch(world.tmp / "b.csv", 2)))
    assert world.pub.feed(NAME).pending_checkpoint is None, (code, out, err)
    assert code == 0, (out, err)
