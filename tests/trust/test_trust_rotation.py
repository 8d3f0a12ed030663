"""Trust rotation chains as a mirror follows them from the publisher: good
chains (planned rotation, emergency revocation), skipped versions, under
threshold, not signed by its own keys, replayed old trust. Each step is
stored atomically; a bad step leaves the last good version and the data."""
from __future__ import annotations

import pytest

from federation.core.errors import InputError, MalformedError, RollbackError, SignatureError
from federation.core.note import Cosigner, Signer, parse_note, parse_vkey
from federation.core.trustfile import parse_trust
from federation.trust.rotation import publish_trust, verify_successor

from support.cli import run_cli
from support.feeds import NAME, ORIGIN, adds
from support.mirror_state import expect_failure, snapshot, sync
from support.trust_world import World, trust_bytes


def serve_raw(world: World, version: int, data: bytes) -> None:
    """Put bytes into the publisher's served chain without validation (an attacker's relay)."""
    world.pub.conn.execute("INSERT OR REPLACE INTO trust_chain (feed, version, origin, data, accepted_at) "
                           "VALUES (?,?,?,?,0)", (NAME, version, ORIGIN, data))


async def test_planned_rotation_and_emergency_revocation_of_a_log_key(world: World):
    await world.publish(3)
    m = world.mirror()
    await sync(m)
    # v2 (planned): a third trust key joins, threshold stays 2. Signed by v1's keys and v2's.
    root3 = Signer.generate("example.org/trust/root-3")
    v2 = trust_bytes([world.log_key], world.cosigners(), world.roots + [root3], world.roots, version=2)
    publish_trust(world.pub.conn, NAME, v2)
    # v3 (emergency): the log key leaked. v3 trusts only a new log key; root-1 is also dropped.
    new_log = Signer.generate(ORIGIN)
    v3 = trust_bytes([new_log], world.cosigners(), [world.roots[1], root3], [world.roots[1], root3], version=3)
    publish_trust(world.pub.conn, NAME, v3)
    world.pub.rotate_key(NAME, world.log_key, new_log)
    for w in world.witnesses:
        w.add_log(ORIGIN, [new_log.vkey])
    await world.publish(2, signer=new_log)
    res = await sync(m)
    assert res.changed and m.get(NAME).count == 5
    assert [v for v, _ in world.trust_rows(m)] == [1, 2, 3]
    assert m.get(NAME).vkeys == (new_log.vkey,)  # replaced in the same transaction as the step

    # The thief signs a bigger tree with the revoked key: refused, data kept.
    world.pub.conn.execute("UPDATE feeds SET vkey=? WHERE name=?", (world.log_key.vkey, NAME))
    world.pub.publish(NAME, adds(2), world.log_key)
    await world.cosign(which=[])
    await expect_failure(m, SignatureError, "signature", "not signed by any trusted key")


async def test_skipped_version_is_refused(world: World):
    await world.publish(2)
    m = world.mirror()
    await sync(m)
    before_rows = world.trust_rows(m)
    v3 = trust_bytes([world.log_key], world.cosigners(), world.roots, world.roots, version=3)
    serve_raw(world, 2, v3)
    serve_raw(world, 3, v3)
    await expect_failure(m, MalformedError, "malformed", "trust version 3 does not directly follow", "skipped")
    assert world.trust_rows(m) == before_rows


async def test_rotation_under_threshold_of_the_old_keys_is_refused(world: World):
    await world.publish(2)
    m = world.mirror()
    await sync(m)
    # One stolen trust key (of a 2-of-2) tries to rotate to keys it controls.
    thief = Signer.generate("example.org/trust/thief")
    v2 = trust_bytes([world.log_key], world.cosigners(), [thief], [world.roots[0], thief],
                     version=2, threshold=1)
    serve_raw(world, 2, v2)
    await expect_failure(m, SignatureError, "signature",
                         "trust version 2 is signed by 1 of the 2 required trust keys of version 1")
    assert [v for v, _ in world.trust_rows(m)] == [1]
    assert m.get(NAME).vkeys == (world.log_key.vkey,)


async def test_rotation_not_signed_by_its_own_keys_is_refused(world: World):
    await world.publish(2)
    m = world.mirror()
    await sync(m)
    new_roots = [Signer.generate(f"example.org/trust/new-{i}") for i in (1, 2)]
    v2 = trust_bytes([world.log_key], world.cosigners(), new_roots, world.roots + new_roots[:1], version=2)
    serve_raw(world, 2, v2)
    await expect_failure(m, SignatureError, "signature", "signed by 1 of the 2 required trust keys of version 2 itself")


async def test_replayed_old_trust_file_is_a_rollback(world: World):
    await world.publish(2)
    v2 = trust_bytes([world.log_key], world.cosigners(), world.roots, world.roots, version=2, quorum=3)
    publish_trust(world.pub.conn, NAME, v2)
    m = world.mirror()
    await world.cosign()
    await sync(m)
    assert [v for v, _ in world.trust_rows(m)] == [1, 2]
    # A relay (or attacker) serves version 1 again, e.g. to restore quorum 2.
    world.pub.conn.execute("DELETE FROM trust_chain WHERE feed=? AND version=2", (NAME,))
    await expect_failure(m, RollbackError, "rollback", "trust version 1", "older than the accepted version 2",
                         "replayed")


async def test_chain_is_followed_step_by_step_and_stops_at_a_bad_step(world: World):
    await world.publish(2)
    m = world.mirror()
    await sync(m)
    v2 = trust_bytes([world.log_key], world.cosigners(), world.roots, world.roots, version=2)
    publish_trust(world.pub.conn, NAME, v2)
    v3_bad = trust_bytes([world.log_key], world.cosigners(), world.roots, world.roots[:1], version=3)
    serve_raw(world, 3, v3_bad)
    before = snapshot(m)
    await expect_failure(m, SignatureError, "signature", "trust version 3", before=before)
    # Version 2 was accepted and stored before version 3 failed: each step is its own transaction.
    assert [v for v, _ in world.trust_rows(m)] == [1, 2]
    assert world.trust_rows(m)[1][1] == v2


async def test_publisher_refuses_to_publish_an_invalid_successor(world: World):
    v3 = trust_bytes([world.log_key], world.cosigners(), world.roots, world.roots, version=3)
    with pytest.raises(InputError, match="does not directly follow"):
        publish_trust(world.pub.conn, NAME, v3)


def test_verify_successor_same_version_is_a_replay():
    roots = [Signer.generate("r1.example")]
    from federation.core.note import Cosigner
    log, w = Signer.generate(ORIGIN), Cosigner.generate("w.example")
    v1 = parse_trust(trust_bytes([log], [w], roots, roots, quorum=1, threshold=1))
    with pytest.raises(RollbackError):
        verify_successor(v1, v1.raw)
    assert parse_vkey(v1.log_keys[0].vkey) == log.verifier


@pytest.mark.timeout(90)
async def test_a_publisher_with_a_legacy_duplicate_key_trust_file_can_publish_its_successor(home_world: World):
    """After the upgrade ``TrustChain.current()`` cannot parse the publisher's
    own newest trust version (witness 1 listed again under another name), so
    every command that reads it fails with ``storage``: ``trust publish`` of a
    corrected version 3 (signed by both, distinct, trust keys: the file's
    trust keys were never the problem), ``cosign run``, and each cosigned
    publish stays pending. docs/trust.md tells mirrors to follow again with a
    corrected file; the publisher has no way out short of editing
    publisher.db."""
    world = home_world
    w = world.cosigners()
    w1b = Cosigner("witness-1b.example", world.witnesses[0].cosigner._key)
    text = parse_note(trust_bytes([world.log_key], w, world.roots, world.roots, version=2)).text
    legacy = text.replace(w[2].vkey.encode(), w1b.vkey.encode())
    from federation.core.trustfile import sign_trust
    world.pub.conn.execute("INSERT INTO trust_chain (feed, version, origin, data, accepted_at) VALUES (?,?,?,?,0)",
                           (NAME, 2, ORIGIN, sign_trust(legacy, world.roots)))
    fixed = world.tmp / "v3.trust"
    fixed.write_bytes(world.trust_v1(version=3))
    code, out, err = await run_cli("--home", str(world.home), "trust", "publish", NAME, str(fixed))
    assert code == 0, (out, err)
