"""Mirrors syncing under a trust file: witness quorum, freshness (freeze
attacks), cosignatures from unknown or wrong keys, split views. In every
failure the mirror's data stays exactly as it was and the error names the cause."""
from __future__ import annotations

import time

from federation.core.errors import StaleError
from federation.core.note import Cosigner, parse_note
from federation.core.trustfile import QuorumError, quorum_cosignatures
from federation.trust.rotation import TrustChain, TrustPolicy

from support.feeds import NAME, adds
from support.mirror_state import expect_failure, snapshot, sync
from support.tamper import clone_db
from support.trust_world import World


async def test_sync_with_witness_quorum_applies_and_records_freshness(world: World):
    r = await world.publish(5)
    m = world.mirror()
    res = await sync(m)
    assert res.size == r.size and m.get(NAME).count == 5
    # The stored note carries the cosignatures, so relays re-serve them
    # (log signature, log timestamp, and the witnesses').
    assert len(parse_note(m.get(NAME).checkpoint).signatures) == 5
    fresh = TrustChain(m.conn, NAME).freshness()
    assert fresh is not None and abs(fresh - time.time()) < 60


async def test_checkpoint_without_cosignatures_is_refused(world: World):
    await world.publish(2)
    m = world.mirror()
    await sync(m)
    # A publish the witnesses have not cosigned yet (or a log hiding it from them).
    world.pub.publish(NAME, adds(2), world.log_key)
    await expect_failure(m, QuorumError, "signature", "witness quorum not met", "cosigned by 0 of the 2")


async def test_one_witness_is_not_a_quorum(world: World):
    await world.publish(2, which=[0])
    m = world.mirror()
    e = await expect_failure(m, QuorumError, "signature", "cosigned by 1 of the 2", "possible split view")
    assert "witness-1.example" in str(e)


async def test_cosignatures_from_unknown_keys_are_ignored_and_named(world: World):
    await world.publish(2, which=[])
    rogue = [Cosigner.generate("witness-1.example"), Cosigner.generate("rogue.example")]  # one reuses a trusted name
    await world.cosign(which=[], local=rogue)
    m = world.mirror()
    e = await expect_failure(m, QuorumError, "signature", "cosigned by 0 of the 2",
                             "ignored signatures by keys not in the trust file")
    assert "rogue.example" in str(e) and "witness-1.example+" in str(e)


async def test_cosignature_from_the_future_is_not_counted(world: World):
    # A publisher whose clock runs an hour ahead serves witness 2's line dated then.
    # (A bad cosignature among a quorum of good ones: tests/trust/test_witness_quorum.py.)
    await world.publish(2, which=[0])
    await world.cosign(which=[], local=[world.witnesses[1].cosigner], now=int(time.time()) + 3600)
    m = world.mirror()
    await expect_failure(m, QuorumError, "signature", "cosigned by 0 of the 2",
                         "witness-2.example", "in the future")


async def test_frozen_feed_is_stale_and_data_is_kept(world: World):
    await world.publish(3)
    m = world.mirror()
    await sync(m)
    before = snapshot(m)
    # Two hours later the upstream still serves the same cosignatures: a freeze.
    later = TrustPolicy(TrustChain(m.conn, NAME), clock=lambda: time.time() + 7200)
    e = await expect_failure_with_policy(m, later, before)
    assert isinstance(e, StaleError) and e.kind == "stale"
    assert "over the maximum of 3600 s" in str(e) and "frozen" in str(e)
    # The publisher refreshes cosignatures although nothing changed (it and
    # the witnesses are two hours on too): fresh again.
    for w in world.witnesses:
        w.clock = lambda: time.time() + 7200
    await world.cosign(now=int(time.time()) + 7200)
    res = await sync(m, policy=later)
    assert res.size == before["applied_size"] and not res.changed


async def test_one_fresh_witness_cannot_vouch_for_a_frozen_view(world: World):
    await world.publish(3)
    m = world.mirror()
    await sync(m)
    before = snapshot(m)
    # Only one of the quorum of two renews its timestamp.
    w3 = world.witnesses[2].cosigner
    await world.cosign(which=[0, 1], local=[w3], now=int(time.time()) + 7200)
    note = world.pub.feed(NAME).checkpoint
    later = TrustPolicy(TrustChain(m.conn, NAME), clock=lambda: time.time() + 7200)
    # witness 3's fresh timestamp is 0 s old, but the second-newest is 2 h old.
    assert b"witness-3.example" in note
    e = await expect_failure_with_policy(m, later, before)
    assert isinstance(e, StaleError)


async def expect_failure_with_policy(m, policy, before):
    try:
        await sync(m, policy=policy)
    except Exception as e:  # noqa: BLE001 -- returned to the test, which checks its type
        assert snapshot(m) == before, "a failed sync changed the mirror"
        assert m.get(NAME).last_error.startswith(f"{e.kind}: ")
        return e
    raise AssertionError("sync should have failed")


async def test_split_view_is_caught_by_the_quorum(world: World, serve):
    """The log key holder shows one mirror a different tree. Honest witnesses,
    having cosigned the main view, refuse it; one colluding (or naive) witness
    is not a quorum, so the victim refuses the fork and keeps its data."""
    await world.publish(3)
    fork_db = clone_db(world.pub.conn.execute("PRAGMA database_list").fetchone()[2], world.tmp / "fork.db")
    await world.publish(4)  # main view: witnesses 1-3 cosign size 3+4+2 entries
    from federation.store.publisher import Publisher
    fork = Publisher(fork_db)
    fork.publish(NAME, adds(4), world.log_key)  # a different version 2, same size, same key
    from federation.trust.cosign import refresh_checkpoint
    from federation.trust.witness_client import WitnessClient
    from federation.trust.rotation import install_trust_routes
    from federation.net.server import PublisherSource, create_app
    from federation.trust.witness import Witness, install_witness
    fork_url = (await serve(create_app([PublisherSource(fork_db)], extensions=[install_trust_routes([fork_db])]))
                + f"/feeds/{NAME}/")
    # Honest witnesses 1 and 2 refuse the fork: it is not consistent with what they cosigned.
    main_size = world.pub.feed(NAME).size
    assert fork.feed(NAME).size == main_size
    clients = world.clients([0, 1])
    note = await refresh_checkpoint(fork, NAME, [], clients)
    assert note is not None and b"witness-1" not in note and b"witness-2" not in note
    # A fresh witness that never saw the main view cosigns the fork.
    naive = Witness(world.tmp / "naive.db", world.witnesses[2].cosigner)
    naive.add_log(world.witnesses[2].conn.execute("SELECT origin FROM witness_logs").fetchone()[0],
                  [world.log_key.vkey])
    naive_url = await serve(create_app([], extensions=[install_witness(naive)]))
    await refresh_checkpoint(fork, NAME, [], [WitnessClient(naive_url + "/witness",
                                                            world.witnesses[2].cosigner.verifier, world.session)])
    assert b"witness-3.example" in fork.feed(NAME).checkpoint
    victim = world.mirror("victim.db", url=fork_url)
    e = await expect_failure(victim, QuorumError, "signature", "cosigned by 1 of the 2", "split view")
    assert "witness-3.example" in str(e)
    naive.close()
    fork.close()


async def test_relay_passes_on_refreshed_cosignatures_so_its_followers_are_not_frozen(world: World, serve):
    """The publisher refreshes its cosignatures while nothing changes. A relay
    must re-serve the fresher note, or every mirror behind it reports a
    freeze although the publisher is live."""
    from federation.net.relay import RelaySource
    from federation.trust.rotation import install_trust_routes
    from federation.net.server import create_app

    await world.publish(3)
    original = world.pub.feed(NAME).checkpoint
    relay = world.mirror("relay.db")
    await sync(relay)
    relay_url = await serve(create_app([RelaySource(relay.path)], extensions=[install_trust_routes([relay.path])]))
    down = world.mirror("down.db", url=f"{relay_url}/feeds/{NAME}/")
    assert (await sync(down)).size == relay.get(NAME).applied_size

    # Two hours on: witnesses cosign the same tree again; nothing new to apply.
    for w in world.witnesses:
        w.clock = lambda: time.time() + 7200
    refreshed = await world.cosign(now=int(time.time()) + 7200)
    relay_later = TrustPolicy(TrustChain(relay.conn, NAME), clock=lambda: time.time() + 7200)
    res = await sync(relay, policy=relay_later)
    assert not res.changed
    assert relay.get(NAME).checkpoint == refreshed  # the relay now serves the fresher note

    down_later = TrustPolicy(TrustChain(down.conn, NAME), clock=lambda: time.time() + 7200)
    res = await sync(down, policy=down_later)
    assert not res.changed and down.get(NAME).last_error is None
    assert down.get(NAME).checkpoint == refreshed

    # An older note of the same tree (from a lagging upstream) never replaces a fresher one.
    policy = TrustPolicy(TrustChain(relay.conn, NAME), clock=lambda: time.time() + 7200)
    trust = policy.chain.current()
    times = {n: quorum_cosignatures(trust, n, policy.now()) for n in (original, refreshed)}
    assert times[refreshed].quorum_time > times[original].quorum_time
    assert policy.quorum_time(refreshed) == times[refreshed].quorum_time > policy.quorum_time(original)
    # (sync.orchestrator._fresher serves a note only with a newer quorum time:
    # tests/trust/test_freshness_by_witness_quorum.py drives that end to end.)
