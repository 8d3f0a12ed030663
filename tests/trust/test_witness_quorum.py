"""One bad party must not halt or subvert the feed (issue 16): a witness whose
clock runs ahead, or whose cosignature does not verify, is one vote not
counted, never a veto over a quorum of good ones, on the mirror and on the
publisher; the clock-skew allowance is bounded by the staleness window;
`cosign run --once` fails when a served checkpoint falls short of its quorum;
and one key listed twice in a trust file is one key, not two votes. Real
witnesses, publisher server, mirrors and CLI processes on loopback."""
from __future__ import annotations

import logging
import time

import pytest

from federation.core.note import Cosigner, NoteSignature, Signer, parse_note
from federation.core.trustfile import QuorumError, quorum_cosignatures, sign_trust
from federation.trust.rotation import TrustChain, publish_trust

from support.cli import run_cli, write_batch
from support.feeds import NAME, adds
from support.mirror_state import expect_failure, snapshot, sync
from support.trust_world import World, trust_bytes


def cosigners_of(note: bytes) -> dict[str, int]:
    """Witness name -> cosignature timestamp of each witness cosignature line
    (not the log's own timestamp, which is named after the origin)."""
    n = parse_note(note)
    origin = n.text.split(b"\n")[0].decode()
    return {s.name: int.from_bytes(s.signature[:8], "big") for s in n.signatures
            if len(s.signature) == 72 and s.name != origin}


def serve_lines(world: World, lines: dict[int, NoteSignature | None]) -> bytes:
    """Replace (or, with None, remove) witness ``i``'s line of the served note:
    what a publisher without the checks, or a relay, would serve."""
    note = parse_note(world.pub.feed(NAME).checkpoint)
    out = []
    for s in note.signatures:
        i = next((i for i, w in enumerate(world.witnesses) if w.cosigner.name == s.name), None)
        if i in lines:
            if lines[i] is not None:
                out.append(lines[i])
        else:
            out.append(s)
    raw = note.text + b"\n" + b"".join(s.line() for s in out)
    world.pub.conn.execute("UPDATE feeds SET checkpoint=? WHERE name=?", (raw, NAME))
    return raw


def dated(world: World, i: int, when: int) -> NoteSignature:
    """Witness ``i``'s own valid cosignature of the served note, dated ``when``."""
    return world.witnesses[i].cosigner.cosign(parse_note(world.pub.feed(NAME).checkpoint).text, when)


# ---- mirrors: any quorum ----------------------------------------------------------


async def test_one_skewed_witness_among_three_does_not_halt_mirrors(world: World, caplog):
    """Quorum 2 of 3; witness 1's clock runs an hour ahead. Two good
    cosignatures are a quorum: the mirror applies the version and reports the
    skewed one (log line, Freshness.ignored). Before: `signature: ... dated
    3599 s in the future` and the whole checkpoint refused."""
    r = await world.publish(4)
    raw = serve_lines(world, {0: dated(world, 0, int(time.time()) + 3600)})
    m = world.mirror()
    with caplog.at_level(logging.WARNING, logger="federation.trust"):
        res = await sync(m)
    assert res.changed and res.size == r.size and m.get(NAME).count == 4 and m.get(NAME).last_error is None
    reported = [rec.getMessage() for rec in caplog.records if rec.name == "federation.trust"]
    assert any("witness-1.example" in msg and "in the future" in msg and "not counted" in msg for msg in reported), \
        reported
    fresh = quorum_cosignatures(TrustChain(m.conn, NAME).current(), raw, int(time.time()))
    assert set(fresh.cosigners) == {"witness-2.example", "witness-3.example"}
    assert len(fresh.ignored) == 1 and "witness-1.example" in fresh.ignored[0]


async def test_a_cosignature_that_does_not_verify_is_one_vote_not_counted(world: World):
    await world.publish(2)
    note = parse_note(world.pub.feed(NAME).checkpoint)
    w1 = world.witnesses[0].cosigner.verifier
    # witness 1's name and key ID, someone else's signature
    forged = NoteSignature(w1.name, w1.key_id, Cosigner.generate(w1.name).cosign(note.text).signature)
    serve_lines(world, {0: forged})
    m = world.mirror()
    assert (await sync(m)).changed and m.get(NAME).count == 2
    # With only one good cosignature left the quorum fails, and the error says
    # which trusted witness was not counted and why.
    await world.publish(2)
    note = parse_note(world.pub.feed(NAME).checkpoint)
    forged = NoteSignature(w1.name, w1.key_id, Cosigner.generate(w1.name).cosign(note.text).signature)
    serve_lines(world, {0: forged, 1: None})
    await expect_failure(m, QuorumError, "signature", "cosigned by 1 of the 2",
                         "not counted: cosignature by witness witness-1.example+", "does not verify")


async def test_future_dated_cosignatures_do_not_extend_a_short_staleness_window(world: World):
    """max_staleness 20 s: the allowance for a witness clock ahead is 2 s, not
    300 s. Cosignatures dated 10 s ahead are not counted (before: they counted,
    and the mirror would take the feed as fresh 10 s longer than its window)."""
    short = world.trust_v1(version=2, max_staleness=20)
    publish_trust(world.pub.conn, NAME, short)
    await world.publish(3)
    now = int(time.time())
    serve_lines(world, {0: dated(world, 0, now + 10), 1: dated(world, 1, now + 10), 2: dated(world, 2, now)})
    m = world.mirror(trust=short)
    await expect_failure(m, QuorumError, "signature", "cosigned by 1 of the 2", "witness-1.example",
                         "witness-2.example", "in the future (allowed clock skew: 2 s)")
    # Within the allowance they count: a second ahead is ordinary skew.
    serve_lines(world, {0: dated(world, 0, now + 1), 1: dated(world, 1, now + 1)})
    res = await sync(m)
    assert res.changed and m.get(NAME).count == 3


# ---- the publisher: never serves what its trust file refuses ------------------------


async def configure(world: World) -> None:
    code, out, err = await run_cli("--home", str(world.home), "cosign", "configure", NAME,
                                   *[a for spec in world.witness_specs() for a in ("--witness", spec)])
    assert code == 0 and "cosigned by 2 of 3" in out, (out, err)


async def publish(world: World, n: int, tag: str) -> tuple[int, str, str]:
    return await run_cli("--home", str(world.home), "publish", NAME, str(write_batch(world.tmp / f"{tag}.csv", n)))


async def test_a_skewed_witness_does_not_hold_back_a_publish(home_world: World):
    """Before: the new version stayed pending for as long as the skewed witness
    answered (`publish` exit 1), although two good cosignatures were there."""
    world = home_world
    await configure(world)
    world.witnesses[0].clock = lambda: time.time() + 3600
    code, out, err = await publish(world, 3, "b1")
    assert code == 0, (out, err)
    assert "now served" in out and "witness witness-1.example: cosignature dropped" in out, out
    feed = world.pub.feed(NAME)
    assert feed.pending_checkpoint is None and feed.size == 4
    assert set(cosigners_of(feed.checkpoint)) == {"witness-2.example", "witness-3.example"}
    m = world.mirror()
    res = await sync(m)
    assert res.changed and res.size == 4 and m.get(NAME).last_error is None


async def test_cosign_run_drops_a_bad_cosignature_not_the_refresh(home_world: World):
    """Before: `cosign run` attached the skewed witness's line to the served
    checkpoint without the check promotion applies, and every mirror refused
    the feed from then on."""
    world = home_world
    await configure(world)
    assert (await publish(world, 2, "b1"))[0] == 0
    m = world.mirror()
    assert (await sync(m)).size == 3
    before = cosigners_of(world.pub.feed(NAME).checkpoint)
    world.witnesses[0].clock = lambda: time.time() + 3600
    time.sleep(1.1)  # so the good witnesses' refreshed timestamps are newer
    code, out, err = await run_cli("--home", str(world.home), "cosign", "run", NAME, "--once")
    assert code == 0, (out, err)
    assert "re-cosigned by witness-2.example, witness-3.example" in out and "witness-1.example" in out, out
    after = cosigners_of(world.pub.feed(NAME).checkpoint)
    # witness 1 keeps its previous (valid, older) line; the others are fresher
    assert after["witness-1.example"] == before["witness-1.example"] <= time.time()
    assert after["witness-2.example"] > before["witness-2.example"]
    res = await sync(m)
    assert not res.changed and m.get(NAME).last_error is None
    assert m.get(NAME).checkpoint == world.pub.feed(NAME).checkpoint  # the refreshed note was accepted


async def test_cosign_run_once_exits_1_when_a_served_checkpoint_falls_short_of_its_quorum(home_world: World):
    """Before: exit 0 with one fresh cosignature of the two required."""
    world = home_world
    await configure(world)
    assert (await publish(world, 2, "b1"))[0] == 0
    await world.stop_witness(1)
    await world.stop_witness(2)
    code, out, err = await run_cli("--home", str(world.home), "cosign", "run", NAME, "--once")
    assert code == 1, (out, err)
    assert "t: cosigned: served checkpoint of size 3 re-cosigned by witness-1.example; only 1 of the 2 " \
        "required fresh cosignatures" in out, out
    # the refresh still never lowers what mirrors see: the previous lines stay
    assert len(cosigners_of(world.pub.feed(NAME).checkpoint)) == 3
    assert (await sync(world.mirror())).size == 3
    await world.start_witness(1)
    code, out, err = await run_cli("--home", str(world.home), "cosign", "run", NAME, "--once")
    assert code == 0, (out, err)
    code, out, err = await run_cli("cosign", "run", "--help")
    assert "1 if a served checkpoint got fewer fresh cosignatures than the quorum" in " ".join(out.split())


async def test_cosign_run_keeps_the_served_note_rather_than_serve_one_its_trust_file_refuses(home_world: World):
    """`cosign run --key K` with only a key the trust file does not list drops
    the witnesses' lines (they were not asked). Before, that note replaced
    the served one and every mirror refused the feed."""
    world = home_world
    await configure(world)
    assert (await publish(world, 2, "b1"))[0] == 0
    served = world.pub.feed(NAME).checkpoint
    key = world.tmp / "own.key"
    code, out, err = await run_cli("cosign", "keygen", "publisher.example/cosigner", "--out", str(key))
    assert code == 0, err
    code, out, err = await run_cli("--home", str(world.home), "cosign", "run", NAME, "--once", "--key", str(key))
    assert code == 1, (out, err)
    assert "t: kept: served checkpoint of size 3 kept: its refresh (cosigned by publisher.example/cosigner) would " \
        "be refused" in out and "mirrors under trust version 1" in out and "cosigned by 0 of the 2" in out, out
    assert world.pub.feed(NAME).checkpoint == served
    res = await sync(world.mirror())
    assert res.size == 3 and res.changed


# ---- trust files: one key, one vote ------------------------------------------------


def alias(signer, name: str):
    """The same private key under another name (a different key ID)."""
    return type(signer)(name, signer._key)


async def test_trust_new_and_check_refuse_one_key_listed_twice_under_two_names(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    code, root1, err = await run_cli("trust", "keygen", "example.org/trust/root-1", "--out", str(keys / "r1.key"))
    assert code == 0, err
    code, root2, err = await run_cli("trust", "keygen", "example.org/trust/root-2", "--out", str(keys / "r2.key"))
    code, w1, err = await run_cli("cosign", "keygen", "witness-1.example", "--out", str(keys / "w1.key"))
    code, w2, err = await run_cli("cosign", "keygen", "witness-2.example", "--out", str(keys / "w2.key"))
    from federation.node.keys import load_cosigner, load_signer
    log = Signer.generate("example.org/feeds/t")
    r1 = load_signer(keys / "r1.key")
    w1c = load_cosigner(keys / "w1.key")
    r1_again, w1_again = alias(r1, "example.org/trust/root-1-backup").vkey, alias(w1c, "witness-1b.example").vkey

    async def new(witnesses, quorum, trust_keys, threshold, out):
        return await run_cli("trust", "new", "--origin", "example.org/feeds/t", "--log-key", log.vkey,
                             *[a for w in witnesses for a in ("--witness", w)], "--quorum", str(quorum),
                             *[a for k in trust_keys for a in ("--trust-key", k)], "--threshold", str(threshold),
                             "--sign", str(keys / "r1.key"), "-o", str(tmp_path / out))

    code, out, err = await new([w1.strip(), w2.strip()], 2, [root1.strip(), r1_again], 2, "a.trust")
    assert code == 2 and "trust_keys.keys: key example.org/trust/root-1-backup+" in err \
        and "the same key listed twice under different names" in err, (out, err)
    code, out, err = await new([w1.strip(), w1_again], 2, [root1.strip(), root2.strip()], 1, "b.trust")
    assert code == 2 and "witnesses.keys: key witness-1b.example+" in err, (out, err)
    assert not (tmp_path / "a.trust").exists() and not (tmp_path / "b.trust").exists()
    # A file crafted by hand (and signed by both "keys") is refused by `trust check`.
    code, out, err = await new([w1.strip(), w2.strip()], 2, [root1.strip(), root2.strip()], 1, "good.trust")
    assert code == 0, err
    text = parse_note((tmp_path / "good.trust").read_bytes()).text.decode()
    text = text.replace(root2.strip(), r1_again).replace("threshold = 1", "threshold = 2")
    (tmp_path / "crafted.trust").write_bytes(sign_trust(text.encode(), [r1, alias(r1, "example.org/trust/root-1-backup")]))
    code, out, err = await run_cli("trust", "check", str(tmp_path / "crafted.trust"))
    assert code == 2 and "the same key listed twice under different names" in err, (out, err)


async def test_mirror_refuses_a_served_trust_file_that_lists_one_key_twice(world: World):
    """Trust v2 lists root-1 a second time under another name, threshold 2: the
    holder of root-1 alone could then sign v3 (two signature lines, one key).
    Before: the mirror accepted v2 and then v3, signed by root-1 alone."""
    await world.publish(2)
    m = world.mirror()
    await sync(m)
    r1 = world.roots[0]
    r1b = alias(r1, "example.org/trust/root-1-backup")

    def crafted(version: int, signers) -> bytes:
        # render_trust refuses to write it, so edit a rendered file's text
        text = parse_note(trust_bytes([world.log_key], world.cosigners(), world.roots, world.roots,
                                      version=version)).text
        return sign_trust(text.replace(world.roots[1].vkey.encode(), r1b.vkey.encode()), signers)

    v2 = crafted(2, world.roots + [r1b])
    v3 = crafted(3, [r1, r1b])
    for v, data in ((2, v2), (3, v3)):  # what a publisher without the check would serve
        world.pub.conn.execute("INSERT INTO trust_chain (feed, version, origin, data, accepted_at) "
                               "VALUES (?,?,?,?,0)", (NAME, v, world.pub.feed(NAME).origin, data))
    before = snapshot(m)
    from federation.core.errors import MalformedError
    await expect_failure(m, MalformedError, "malformed", "trust_keys.keys: key example.org/trust/root-1-backup+",
                         "one key, one vote", before=before)
    assert [v for v, _ in world.trust_rows(m)] == [1]


def test_a_key_under_two_names_counts_once_even_in_a_stored_trust_file(world: World):
    """Defence in depth for trust files stored before the parser refused
    duplicates: quorum and threshold counts are per public key."""
    from dataclasses import replace

    from federation.core.trustfile import verified_signers
    tf = TrustChain(world.pub.conn, NAME).current()
    w1 = world.witnesses[0].cosigner
    w1b = Cosigner("witness-1b.example", w1._key)
    legacy = replace(tf, witness_keys=tf.witness_keys + (w1b.verifier,))
    text = parse_note(world.pub.feed(NAME).checkpoint).text
    note = text + b"\n" + w1.cosign(text).line() + w1b.cosign(text).line()
    try:
        quorum_cosignatures(legacy, note, int(time.time()))
        raise AssertionError("one key under two names made a quorum of 2")
    except QuorumError as e:
        assert "cosigned by 1 of the 2" in str(e) and "has the public key of witness witness-1.example" in str(e)
    r1 = world.roots[0]
    doubled = sign_trust(b"text\n", [r1, alias(r1, "example.org/trust/root-1-backup")])
    assert len(verified_signers(parse_note(doubled), [r1.verifier, alias(r1, "example.org/trust/root-1-backup")
                                                      .verifier])) == 1


@pytest.mark.timeout(90)
async def test_cosign_run_once_with_explicit_witnesses_fails_below_the_trust_files_quorum(home_world: World):
    """The trust file asks for 2 of 3 witnesses. Run with two witnesses named
    on the command line (no stored configuration), one of which is down: one
    fresh cosignature, and the down one's previous line kept. The help and
    docs/trust.md promise exit 1 when a round gets fewer fresh cosignatures
    than the quorum; the quorum used is 1, so it exits 0."""
    world = home_world
    await world.publish(2)  # cosigned by all three
    await world.stop_witness(1)
    code, out, err = await run_cli("--home", str(world.home), "cosign", "run", NAME, "--once",
                                   *[a for spec in world.witness_specs([0, 1]) for a in ("--witness", spec)])
    assert "re-cosigned by witness-1.example" in out, (out, err)
    assert code == 1, (out, err)


@pytest.mark.timeout(90)
async def test_cosign_configure_counts_one_witness_key_once(home_world: World):
    """One key, one vote (issue 16) holds for trust files but not for
    ``cosign configure``: the same witness listed twice satisfies
    ``--quorum 2``, and a feed without a published trust chain (nothing else
    checks) is served with that one witness's cosignature, twice."""
    world = home_world
    world.pub.conn.execute("DELETE FROM trust_chain WHERE feed=?", (NAME,))  # a feed without a trust chain
    spec = world.witness_specs([0])[0]
    code, out, err = await run_cli("--home", str(world.home), "cosign", "configure", NAME,
                                   "--witness", spec, "--witness", spec, "--quorum", "2")
    if code == 0:  # accepted: then the quorum of 2 must still need two witnesses
        world.pub.publish(NAME, adds(2), world.log_key)
        code, out, err = await run_cli("--home", str(world.home), "cosign", "run", NAME, "--once")
        lines = [s for s in parse_note(world.pub.feed(NAME).checkpoint).signatures if s.name == "witness-1.example"]
        assert world.pub.feed(NAME).pending_checkpoint is not None, \
            f"served as cosigned by 2 with {len(lines)} line(s) by one witness: {out}"
    assert code != 0, (out, err)
