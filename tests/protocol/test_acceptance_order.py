"""The acceptance object (``core.acceptance``) owns the order of verification.

Bytes come from a real publisher (SQLite under tmp_path, a key generated
here); the object under test is pure. Every step called out of order is
refused with ``OrderError`` (never an ``assert``), and leaves the object
FAILED so that the right step is refused after it too; a step that fails
verification does the same.
"""
from __future__ import annotations

import pytest

from federation.core.acceptance import Acceptance
from federation.core.checkpoint import parse_checkpoint_body
from federation.core.errors import ForkError, MalformedError, NothingNew, OrderError, RollbackError
from federation.core.headproof import last_bundle
from federation.core.merkle import CompactRange
from federation.core.note import parse_note, parse_vkey
from federation.core.snapshot_format import SnapshotHeader
from federation.core.trustfile import Freshness
from federation.core.verify import TrustedState, Version

from support.feeds import make_feed

EMPTY = TrustedState(None, 0, CompactRange(), 0)


class Log:
    """A published feed's bytes, as an upstream would serve them."""

    def __init__(self, tmp_path):
        self.feed = make_feed(tmp_path / "pub.db")
        self.id = self.feed.pub.feed("tid").id
        self.keys = [parse_vkey(self.feed.signer.vkey)]
        self.notes = []
        for n in (300, 10):  # the first version fills a whole tile of 256 entries
            self.feed.publish_version(n)
            self.notes.append(self.feed.checkpoint())

    def acceptance(self, trusted: TrustedState = EMPTY, quorum: bool = False) -> Acceptance:
        return Acceptance(self.feed.origin, self.keys, trusted, quorum=quorum)

    def tile(self, level: int, index: int, width: int) -> bytes:
        data = self.feed.pub.tile(self.id, level, index, width)
        assert data is not None, (level, index, width)
        return data


@pytest.fixture
def log(tmp_path):
    return Log(tmp_path)


def sync(log: Log, acc: Acceptance, note: bytes) -> list[Version]:
    """The whole log path, in order, as ``orchestrator.sync_feed`` drives it."""
    acc.open_checkpoint(note)
    acc.accept_checkpoint()
    for t in acc.tiles_for_entries():
        acc.add_tile(*t, log.tile(*t))
    acc.prove_tiles()
    acc.prove_extension()
    versions = []
    for i, w in acc.bundles():
        versions += acc.add_bundle(i, w, log.tile(-1, i, w))
    acc.finish()
    return versions


def trusted_after(versions: list[Version], note: bytes) -> TrustedState:
    compact = CompactRange()
    for v in versions:
        for h in v.hashes:
            compact.append(h)
    return TrustedState(parse_checkpoint_body(parse_note(note).text), compact.size, compact, versions[-1].seal.version)


def test_in_order_the_log_is_accepted_version_by_version(log):
    acc = log.acceptance()
    versions = sync(log, acc, log.notes[1])
    assert [v.seal.version for v in versions] == [1, 2] and acc.state == "DONE" and acc.version == 2
    assert versions[-1].end == acc.checkpoint.size
    # From the first version's state, only the second is new.
    first = sync(log, log.acceptance(), log.notes[0])
    later = sync(log, log.acceptance(trusted_after(first, log.notes[0])), log.notes[1])
    assert [v.seal.version for v in later] == [2] and later[0].start == first[-1].end


# The steps of the log path, in order.
STEPS = ["open_checkpoint", "accept_checkpoint", "tiles_for_entries", "add_tile", "prove_tiles",
         "prove_extension", "bundles", "add_bundle", "finish"]


def _reference(log):
    """Tiles and bundles of a correct run to the newest checkpoint."""
    acc = log.acceptance()
    acc.open_checkpoint(log.notes[1])
    acc.accept_checkpoint()
    tiles = list(acc.tiles_for_entries())
    for t in tiles:
        acc.add_tile(*t, log.tile(*t))
    acc.prove_tiles()
    acc.prove_extension()
    return tiles, list(acc.bundles())


def _call(log, acc, step, tiles, bundles):
    """Call ``step`` as a correct run would (lazy plans are read to their end)."""
    if step == "open_checkpoint":
        return acc.open_checkpoint(log.notes[1])
    if step == "tiles_for_entries":
        return list(acc.tiles_for_entries())
    if step == "add_tile":
        for t in tiles:
            acc.add_tile(*t, log.tile(*t))
        return None
    if step == "bundles":
        return list(acc.bundles())
    if step == "add_bundle":
        for i, w in bundles:
            acc.add_bundle(i, w, log.tile(-1, i, w))
        return None
    return getattr(acc, step)()


@pytest.mark.parametrize("done", range(len(STEPS) + 1))
def test_every_step_out_of_order_is_refused(log, done):
    """After the first ``done`` steps, every step but the next is refused
    with ``OrderError``, and the object is FAILED: the next step is refused too."""
    tiles, bundles = _reference(log)
    nxt = STEPS[done] if done < len(STEPS) else None
    for wrong in STEPS:
        if wrong == nxt:
            continue
        acc = log.acceptance()
        for step in STEPS[:done]:
            _call(log, acc, step, tiles, bundles)
        with pytest.raises(OrderError) as e:
            _call(log, acc, wrong, tiles, bundles)
        assert acc.state == "FAILED", (done, wrong)
        assert log.feed.origin in str(e.value)
        if nxt is not None:
            with pytest.raises(OrderError, match="FAILED"):
                _call(log, acc, nxt, tiles, bundles)


def _accepted(log, trusted=EMPTY, note=None) -> Acceptance:
    acc = log.acceptance(trusted)
    acc.open_checkpoint(note or log.notes[1])
    acc.accept_checkpoint()
    return acc


def test_under_a_trust_file_no_checkpoint_is_accepted_without_its_quorum(log):
    acc = log.acceptance(quorum=True)
    acc.open_checkpoint(log.notes[1])
    with pytest.raises(OrderError, match="witness quorum"):
        acc.accept_checkpoint()
    assert acc.state == "FAILED"
    ok = log.acceptance(quorum=True)
    ok.open_checkpoint(log.notes[1])
    fresh = Freshness({"w": 1}, 1)
    assert ok.accept_checkpoint(fresh).size > 0 and ok.fresh is fresh


def test_only_tiles_it_asked_for_once_each_and_all_of_them(log):
    acc = _accepted(log)
    plan = acc.tiles_for_entries()
    first = next(plan)
    acc.add_tile(*first, log.tile(*first))
    with pytest.raises(OrderError, match="before the plan of tiles was read to its end"):
        acc.prove_tiles()

    acc = _accepted(log)
    tiles = list(acc.tiles_for_entries())
    with pytest.raises(OrderError, match="twice"):
        acc.add_tile(*tiles[0], log.tile(*tiles[0]))
        acc.add_tile(*tiles[0], log.tile(*tiles[0]))

    acc = _accepted(log)
    tiles = list(acc.tiles_for_entries())
    assert (5, 0, 1) not in tiles
    with pytest.raises(OrderError, match="without being asked for it"):
        acc.add_tile(5, 0, 1, b"")

    acc = _accepted(log)
    tiles = list(acc.tiles_for_entries())
    for t in tiles[:-1]:
        acc.add_tile(*t, log.tile(*t))
    with pytest.raises(OrderError, match="1 asked-for tiles not added"):
        acc.prove_tiles()


def test_bundles_in_order_and_all_before_finish(log):
    tiles, bundles = _reference(log)
    assert len(bundles) >= 2
    acc = _accepted(log)
    assert list(acc.tiles_for_entries()) == tiles
    _call(log, acc, "add_tile", tiles, bundles)
    acc.prove_tiles()
    acc.prove_extension()
    acc.bundles()
    with pytest.raises(OrderError, match="out of order"):
        i, w = bundles[1]
        acc.add_bundle(i, w, log.tile(-1, i, w))

    acc = _accepted(log)
    assert list(acc.tiles_for_entries()) == tiles
    _call(log, acc, "add_tile", tiles, bundles)
    acc.prove_tiles()
    acc.prove_extension()
    acc.bundles()
    i, w = bundles[0]
    acc.add_bundle(i, w, log.tile(-1, i, w))
    with pytest.raises(OrderError, match="finish before every bundle was added"):
        acc.finish()


def test_a_failed_verification_ends_the_acceptance(log):
    acc = _accepted(log)
    tiles = list(acc.tiles_for_entries())
    bad = tiles[0]
    data = bytearray(log.tile(*bad))
    data[0] ^= 1
    acc.add_tile(*bad, bytes(data))
    for t in tiles[1:]:
        acc.add_tile(*t, log.tile(*t))
    with pytest.raises(MalformedError):
        acc.prove_tiles()
    assert acc.state == "FAILED"
    with pytest.raises(OrderError, match="FAILED"):
        acc.prove_extension()


def test_nothing_new_is_final(log):
    first = sync(log, log.acceptance(), log.notes[1])
    acc = log.acceptance(trusted_after(first, log.notes[1]))
    acc.open_checkpoint(log.notes[1])
    with pytest.raises(NothingNew):
        acc.accept_checkpoint()
    assert acc.state == "CURRENT" and acc.signed.raw == log.notes[1]
    with pytest.raises(OrderError, match="CURRENT"):
        acc.tiles_for_entries()


def test_rollback_and_fork_fail_the_acceptance(log):
    first = sync(log, log.acceptance(), log.notes[1])
    acc = log.acceptance(trusted_after(first, log.notes[1]))
    acc.open_checkpoint(log.notes[0])
    with pytest.raises(RollbackError):
        acc.accept_checkpoint()
    assert acc.state == "FAILED"
    with pytest.raises(OrderError):
        acc.tiles_for_entries()
    # A trusted tree the new checkpoint does not extend: a fork, found at prove_extension.
    other = make_feed(log.feed.path.parent / "other.db", origin=log.feed.origin, signer=log.feed.signer)
    other.publish_version(7)
    ours = parse_checkpoint_body(parse_note(other.checkpoint()).text)
    acc = log.acceptance(TrustedState(ours, 0, CompactRange(), 0))
    acc.open_checkpoint(log.notes[1])
    acc.accept_checkpoint()
    for t in acc.tiles_for_extension():
        acc.add_tile(*t, log.tile(*t))
    acc.prove_tiles()
    with pytest.raises(ForkError):
        acc.prove_extension()
    assert acc.state == "FAILED"


def test_paths_do_not_mix(log):
    """An extension check (gossip) ends at EXTENDED; a snapshot head is proven
    only by prove_head, and only after asking for its tiles."""
    acc = _accepted(log)
    for t in acc.tiles_for_extension():
        acc.add_tile(*t, log.tile(*t))
    acc.prove_tiles()
    assert acc.prove_extension() == []  # nothing trusted yet: nothing to extend
    with pytest.raises(OrderError, match=r"EXTENDED \(entries\).*EXTENDED \(extension\)"):
        acc.bundles()

    cp = parse_checkpoint_body(parse_note(log.notes[1]).text)
    size = 300 + 1  # the first version: 300 adds and its seal
    index, width = last_bundle(size)
    header = SnapshotHeader(log.feed.origin, size, 1, 300, log.tile(-1, index, width))
    acc = _accepted(log)
    with pytest.raises(OrderError, match="prove_head"):
        acc.prove_head()
    acc = _accepted(log)
    for t in acc.tiles_for_head(header):
        acc.add_tile(*t, log.tile(*t))
    with pytest.raises(OrderError, match="proven by prove_head"):
        acc.prove_tiles()
    acc = _accepted(log)
    for t in acc.tiles_for_head(header):
        acc.add_tile(*t, log.tile(*t))
    head = acc.prove_head()
    assert head.seal.version == 1 and head.compact.size == size and acc.state == "HEAD" and cp.size > size
    with pytest.raises(OrderError, match="HEAD"):
        acc.bundles()
