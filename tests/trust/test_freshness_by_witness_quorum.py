"""Freshness under a trust file (PROTOCOL section 3a, ``core/freshness.py``):
lookups fail closed once the witness quorum is older than the current trust
version's ``max_staleness``; a relay never replaces its note with one whose
quorum is older, and passes refreshes on after a witness is removed; a quorum
error does not call the log's own timestamp an unknown key.
Real publisher server, witnesses, mirrors and CLI processes on loopback.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from federation.core.errors import TransportError
from federation.core.note import parse_note
from federation.trust.rotation import publish_trust

from support.cli import FEDERATION
from support.feeds import NAME
from support.mirror_state import sync
from support.trust_world import World, trust_bytes


def _witness_lines_dated(world: World, when: int) -> bytes:
    """The served note with every witness line replaced by that witness's
    valid cosignature dated ``when`` (the log's own lines kept)."""
    note = parse_note(world.pub.feed(NAME).checkpoint)
    names = {w.cosigner.name for w in world.witnesses}
    logged = [s for s in note.signatures if s.name not in names]
    lines = logged + [w.cosigner.cosign(note.text, when) for w in world.witnesses]
    raw = note.text + b"\n" + b"".join(s.line() for s in lines)
    world.pub.conn.execute("UPDATE feeds SET checkpoint=? WHERE name=?", (raw, NAME))
    return raw


async def _lookup(home, md5_hex: str) -> int:
    proc = await asyncio.create_subprocess_exec(FEDERATION, "--home", str(home), "lookup", "md5", md5_hex,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode


async def test_under_a_trust_file_lookups_fail_closed_once_the_witness_quorum_is_older_than_max_staleness(
        world: World):
    """The trust file says: trust no view a quorum of witnesses has not vouched
    for within max_staleness_seconds. A sync enforces that; but the mirror's
    freshness for lookups is the newest of the log's timestamp, the seal's
    time and the quorum time, and the first two are the log key's word alone.

    The publisher (or a thief of the log key, with a relay) serves a note
    whose witness quorum is almost max_staleness old and whose log timestamp
    is new, then lets every later sync fail by transport. Lookups keep
    answering for up to max_staleness (+ the skew allowance) past the moment
    no quorum of witnesses vouches for the view any more: a freeze the
    witnesses were there to bound, stretched by the party they watch."""
    staleness = 6  # clock-skew allowance: 0 s
    short = world.trust_v1(version=2, max_staleness=staleness)
    publish_trust(world.pub.conn, NAME, short)
    await world.publish(3)
    t0 = int(time.time())
    _witness_lines_dated(world, t0 - 3)  # a quorum, 3 s old: accepted
    world.pub.refresh_timestamp(NAME, world.log_key, t0)  # the log says: current as of t0
    home = world.tmp / "mhome"
    home.mkdir()
    m = world.mirror("mhome/mirror.db", trust=short)
    res = await sync(m)
    assert res.changed and m.get(NAME).count == 3
    assert await _lookup(home, "00" * 16) == 1  # fresh: "no match"

    # The upstream goes away: every later sync fails by transport.
    await world.runners[3].cleanup()
    world.runners[3] = None
    with pytest.raises(TransportError):
        await sync(m)
    while time.time() < t0 + 4.2:  # the quorum is now 7+ s old (> 6); the log's stamp 4 s
        await asyncio.sleep(0.1)
    assert await _lookup(home, "00" * 16) == 5, "answered from a view no witness quorum vouched for within " \
                                                f"{staleness} s"


async def test_a_relay_never_replaces_its_note_with_one_whose_witness_quorum_is_older(world: World):
    """Every line of a note verifies on its own, so an upstream can mix them:
    the publisher's newest log timestamp with the witness lines of an older
    cosigning round. ``sync._fresher`` takes that note as fresher (its log
    stamp is newer, and it has as many lines), so a relay under a trust file
    re-serves a note whose witness quorum is 90 s older than the one it held,
    and its followers go stale that much sooner (or at once, near the limit)."""
    from support.tamper import CHECKPOINT, TamperProxy, respond
    from federation.core.trustfile import quorum_cosignatures
    from federation.store.trust_chain import TrustChain

    await world.publish(3)
    now = int(time.time())
    _witness_lines_dated(world, now - 10)  # round B: witnesses at now-10
    held = world.pub.refresh_timestamp(NAME, world.log_key, now - 60)  # log stamp at now-60
    proxy = TamperProxy(world.base)
    await proxy.start()
    try:
        relay = world.mirror("relay.db", url=proxy.feed_url())
        await sync(relay)
        assert relay.get(NAME).checkpoint == held
        _witness_lines_dated(world, now - 100)  # round A's lines ...
        mixed = world.pub.refresh_timestamp(NAME, world.log_key, now - 5)  # ... with the newest log stamp
        proxy.add(respond(CHECKPOINT, mixed, content_type="text/plain"))
        res = await sync(relay)
        assert not res.changed
        trust = TrustChain(relay.conn, NAME).current()
        served = relay.get(NAME).checkpoint
        quorum_time = quorum_cosignatures(trust, served, int(time.time())).quorum_time
        assert quorum_time >= now - 10, f"the relay now serves a witness quorum {now - quorum_time} s old, " \
                                        f"in place of one 10 s old"
    finally:
        await proxy.close()


def test_a_quorum_error_does_not_call_the_logs_own_timestamp_an_unknown_key(world: World):
    """Every served checkpoint carries the log's timestamp line (type 0x04
    under the origin); ``quorum_cosignatures`` knows only the log keys' 0x01
    IDs and reports it among 'ignored signatures by keys not in the trust
    file', which sends an operator chasing a key that is the log's own."""
    from federation.core.trustfile import QuorumError, parse_trust, quorum_cosignatures

    trust = parse_trust(world.trust_v1())
    note = world.pub.feed(NAME).checkpoint  # log signature and log timestamp, no witness yet
    with pytest.raises(QuorumError) as info:
        quorum_cosignatures(trust, note, int(time.time()))
    twin = world.log_key.verifier.timestamp_key()
    assert f"{twin.name}+{twin.key_id:08x}" not in str(info.value), str(info.value)


async def test_lookups_fail_closed_on_the_staleness_window_of_the_current_trust_version(world: World):
    """``follow --trust`` without ``--max-age`` takes the trust file's
    ``max_staleness_seconds`` as the lookups' maximum age. Version 2 of the
    trust file shortens the window to 3 s and the mirror accepts it, but
    ``follows.max_age`` stays at version 1's 3600 s: once syncs fail by
    transport, lookups answer for an hour from a view the current trust file
    calls stale after 3 s."""
    home = world.tmp / "mhome"
    home.mkdir()
    m = world.mirror("mhome/mirror.db")  # trust v1: max_staleness 3600
    await world.publish(2)
    assert (await sync(m)).changed
    v2 = world.trust_v1(version=2, max_staleness=3)
    publish_trust(world.pub.conn, NAME, v2)
    await world.cosign()
    t0 = time.time()
    await sync(m)  # accepts trust version 2 and the fresh quorum
    from federation.store.trust_chain import TrustChain
    assert TrustChain(m.conn, NAME).current().max_staleness == 3
    await world.runners[3].cleanup()
    world.runners[3] = None
    with pytest.raises(TransportError):
        await sync(m)
    while time.time() < t0 + 5.5:  # every timestamp on the note is now over 3 s old
        await asyncio.sleep(0.1)
    code = await _lookup(home, "00" * 16)
    assert code == 5, f"lookup answered (exit {code}) with max_age {m.get(NAME).max_age} s under a 3 s trust window"


async def test_a_relay_passes_on_refreshes_after_a_witness_is_removed(world: World, serve):
    """docs/trust.md's runbook: remove a misbehaving witness in trust version
    N+1 and stop asking it. The publisher's refreshed notes then carry one
    witness line fewer, and ``sync._fresher`` refuses any note with fewer
    signature lines than the one a relay holds: the relay keeps serving its
    old note, and its followers go stale after max_staleness although the
    publisher and the remaining witnesses are live (until the next publish)."""
    from federation.net.relay import RelaySource
    from federation.trust.rotation import install_trust_routes
    from federation.net.server import create_app

    await world.publish(3)
    relay = world.mirror("relay.db")
    await sync(relay)
    relay_url = await serve(create_app([RelaySource(relay.path)], extensions=[install_trust_routes([relay.path])]))
    down = world.mirror("down.db", url=f"{relay_url}/feeds/{NAME}/")
    assert (await sync(down)).size == 4
    # Trust version 2 drops witness 3; the publisher cosigns with the other two.
    v2 = trust_bytes([world.log_key], world.cosigners()[:2], world.roots, world.roots, version=2, quorum=2)
    publish_trust(world.pub.conn, NAME, v2)
    await asyncio.sleep(1.1)
    refreshed = await world.cosign(which=[0, 1])
    res = await sync(relay)
    assert not res.changed and relay.get(NAME).last_error is None
    assert relay.get(NAME).checkpoint == refreshed, "the relay keeps its older note"
