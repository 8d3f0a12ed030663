"""Mirror sync over real HTTP on 127.0.0.1: the semantics of the log arrive intact.

Every sync is bounded in time (``support.mirror_state.sync``) and every test in
time (pytest-timeout).
"""
from __future__ import annotations

import os

import pytest

from federation.core.entries import Add, Withdraw
from federation.core.errors import InputError

from support.feeds import NAME, adds, feed_url
from support.loopback import closed_port
from support.mirror_state import assert_matches_publisher, snapshot, sync
from support.tamper import BUNDLES, CHECKPOINT

pytestmark = pytest.mark.timeout(30)


def active(m, name=NAME):
    f = m.get(name)
    return sorted(m.conn.execute("SELECT hash_type, value, case_id, labels FROM hashes WHERE feed=?", (f.id,)))


async def test_empty_feed_is_nothing_new(publisher, mirror):
    r = await sync(mirror)
    assert not r.changed and (r.size, r.version) == (0, 0)
    assert mirror.get(NAME).last_error is None
    assert mirror.audit(NAME) == []


async def test_the_empty_tree_makes_a_ready_feed_with_nothing_in_it(publisher, mirror):
    """docs/PROTOCOL.md section 3b: the size-0 checkpoint of 'feed create' is
    verified, its log timestamp recorded, and the feed is ready at version 0:
    'no match' is then a verified answer, not a fail-closed one."""
    import time

    from federation.core.readiness import assess
    f = mirror.get(NAME)
    assert assess(f, int(time.time())).problem == "never_synced"
    await sync(mirror)
    f = mirror.get(NAME)
    assert (f.applied_size, f.version, f.count, f.digest) == (0, 0, 0, bytes(2048))
    assert f.fresh_time is not None and assess(f, int(time.time())).ready
    assert f.checkpoint == publisher.head().checkpoint  # stored, and re-served by a relay
    assert mirror.lookup("md5", bytes(16)) == []


async def test_first_sync_then_up_to_date(publisher, proxy, make_mirror):
    m = make_mirror("m.db", proxy.feed_url())
    res, ops = publisher.publish_adds(300)  # one version over two bundles
    r = await sync(m)
    assert (r.old_size, r.size, r.old_version, r.version) == (0, 301, 0, 1) and r.changed
    assert_matches_publisher(m, publisher)
    for a in ops[:5] + ops[-5:]:
        (match,) = m.lookup("md5", a.value)
        assert (match.feed, match.case, match.labels, match.added_version) == (NAME, "case1", ("csam",), 1)
    # Up to date: one request (the checkpoint) and no change at all.
    before, n = snapshot(m), len(proxy.log)
    r = await sync(m)
    assert not r.changed and r.version == 1
    assert proxy.log[n:] == ["feeds/t/checkpoint"]
    assert snapshot(m) == before


async def test_withdraw_by_hash_removes_it_from_every_case(publisher, mirror):
    x = os.urandom(16)
    publisher.publish([Add("md5", x, "caseA", ("csam",), 0), Add("md5", x, "caseB", ("csam",), 0)]
                      + adds(3, "caseC"))
    await sync(mirror)
    assert {mt.case for mt in mirror.lookup("md5", x)} == {"caseA", "caseB"}
    publisher.publish([Withdraw("hash_error", 0, "md5", x)])
    r = await sync(mirror)
    assert r.version == 2
    assert mirror.lookup("md5", x) == []
    assert mirror.get(NAME).count == 3
    assert_matches_publisher(mirror, publisher)
    ch = [c for c in mirror.changes(NAME) if c["version"] == 2]
    assert sorted((c["action"], c["case"], c["reason"]) for c in ch) == [
        ("withdraw", "caseA", "hash_error"), ("withdraw", "caseB", "hash_error")]


async def test_withdraw_by_hash_in_one_case_only(publisher, mirror):
    x = os.urandom(20)
    publisher.publish([Add("sha1", x, "caseA", (), 0), Add("sha1", x, "caseB", ("x",), 0)])
    publisher.publish([Withdraw("legal", 0, "sha1", x, "caseA")])
    await sync(mirror)
    assert [(mt.case, mt.labels) for mt in mirror.lookup("sha1", x)] == [("caseB", ("x",))]
    assert_matches_publisher(mirror, publisher)


async def test_withdraw_by_case(publisher, mirror):
    _, case1 = publisher.publish_adds(5, "case1")
    _, case2 = publisher.publish_adds(4, "case2")
    await sync(mirror)
    assert mirror.get(NAME).count == 9
    publisher.publish([Withdraw("hash_error", 0, case="case1")])
    await sync(mirror)
    assert all(mirror.lookup("md5", a.value) == [] for a in case1)
    assert all(len(mirror.lookup("md5", a.value)) == 1 for a in case2)
    assert mirror.get(NAME).count == 4
    assert_matches_publisher(mirror, publisher)


async def test_readd_after_withdrawal(publisher, mirror):
    x = os.urandom(32)
    publisher.publish([Add("sha256", x, "c", ("a",), 0)])
    await sync(mirror)
    publisher.publish([Withdraw("submitter_request", 0, "sha256", x)])
    await sync(mirror)
    assert mirror.lookup("sha256", x) == []
    publisher.publish([Add("sha256", x, "c", ("b",), 0)])
    await sync(mirror)
    (mt,) = mirror.lookup("sha256", x)
    assert (mt.labels, mt.added_version) == (("b",), 3)
    assert [c["action"] for c in mirror.changes(NAME)] == ["add", "withdraw", "add"]
    assert_matches_publisher(mirror, publisher)


async def test_relabel(publisher, mirror):
    x = os.urandom(32)
    publisher.publish([Add("pdq", x, "c", ("a",), 0)] + adds(2))
    await sync(mirror)
    publisher.publish([Add("pdq", x, "c", ("a", "b"), 0)])
    await sync(mirror)
    (mt,) = mirror.lookup("pdq", x)
    assert (mt.labels, mt.added_version) == (("a", "b"), 1)
    assert mirror.get(NAME).count == 3
    assert [c["action"] for c in mirror.changes(NAME) if c["version"] == 2] == ["relabel"]
    assert_matches_publisher(mirror, publisher)


async def test_duplicates_are_no_ops(publisher, mirror):
    x = os.urandom(144)
    a = Add("photodna", x, "c", ("csam",), 0)
    publisher.publish([a, a, a])
    publisher.publish([a] + adds(1))
    r = await sync(mirror)
    assert r.version == 2
    assert len(mirror.lookup("photodna", x)) == 1
    assert mirror.get(NAME).count == 2
    assert [c["action"] for c in mirror.changes(NAME)] == ["add", "add"]
    assert_matches_publisher(mirror, publisher)


async def test_unknown_withdrawal(publisher, mirror):
    publisher.publish_adds(3)
    size = publisher.head().size
    ghost = os.urandom(16)
    with pytest.raises(InputError, match="matches no active hash"):
        publisher.publish([Withdraw("other", 0, "md5", ghost)])
    with pytest.raises(InputError, match="case nosuchcase"):
        publisher.publish([Withdraw("other", 0, case="nosuchcase")])
    assert publisher.head().size == size  # nothing was published
    await sync(mirror)
    before = snapshot(mirror)
    r = publisher.publish([Withdraw("other", 0, "md5", ghost), Withdraw("other", 0, case="nosuchcase")],
                          allow_unknown_withdrawals=True)
    assert r.no_effect == 2
    res = await sync(mirror)
    assert res.version == 2 and res.changed
    after = snapshot(mirror)
    assert after["hashes"] == before["hashes"] and after["count"] == before["count"]
    assert after["digest"] == before["digest"]
    assert after["changes"] == before["changes"]  # no-ops leave no change rows
    assert_matches_publisher(mirror, publisher)


async def test_many_versions_in_one_sync(publisher, proxy, make_mirror):
    m = make_mirror("m.db", proxy.feed_url())
    sizes = [publisher.publish_adds(100 + 37 * i, f"case{i}")[0].size for i in range(6)]
    x = os.urandom(16)
    publisher.publish([Add("md5", x, "case9", (), 0)])
    publisher.publish([Withdraw("duplicate", 0, case="case2"), Withdraw("duplicate", 0, "md5", x)])
    r = await sync(m, concurrency=3)
    assert (r.old_version, r.version, r.size) == (0, 8, publisher.head().size)
    f = m.get(NAME)
    versions = m.conn.execute("SELECT version, size FROM versions WHERE feed=? ORDER BY version", (f.id,)).fetchall()
    assert [v for v, _ in versions] == list(range(1, 9))
    assert [s for _, s in versions][:6] == sizes
    assert m.lookup("md5", x) == []
    assert_matches_publisher(m, publisher)
    # Each bundle was fetched exactly once, no tile twice.
    tiles = proxy.requests(r"/tile/")
    assert len(tiles) == len(set(tiles))
    assert len(proxy.requests(BUNDLES)) == (publisher.head().size + 255) // 256
    assert len(proxy.requests(CHECKPOINT)) == 1


async def test_several_syncs_track_the_publisher(publisher, mirror):
    keep: list[Add] = []
    for i in range(8):
        res, ops = publisher.publish_adds(60 + 50 * i, f"c{i}", labels=("a", f"l{i}"))
        keep += ops
        if i % 3 == 2:
            gone, keep = keep[:10], keep[10:]
            publisher.publish([Withdraw("hash_error", 0, a.hash_type, a.value) for a in gone])
        r = await sync(mirror)
        assert r.version == publisher.head().version
        assert_matches_publisher(mirror, publisher)
    assert mirror.get(NAME).count == len(keep)
    assert sorted(v for _, v, _, _ in active(mirror)) == sorted(a.value for a in keep)


async def test_two_mirrors_agree(publisher, server, proxy, make_mirror):
    m1 = make_mirror("m1.db", feed_url(server))
    m2 = make_mirror("m2.db", [feed_url(f"http://127.0.0.1:{closed_port()}"), proxy.feed_url()])  # first URL is dead
    publisher.publish_adds(400, "a")
    await sync(m1)
    publisher.publish([Withdraw("legal", 0, case="a")] + adds(10, "b"))
    await sync(m1)
    await sync(m2)  # m2 gets both versions in one go, through the fallback URL
    publisher.publish_adds(5, "c")
    await sync(m2)
    await sync(m1)
    assert snapshot(m1, with_times=False) == snapshot(m2, with_times=False)
    for m in (m1, m2):
        assert_matches_publisher(m, publisher)
        assert m.get(NAME).count == 15


async def test_mirror_in_sync_with_pre_existing_partial_bundle(publisher, mirror):
    """Versions ending mid-bundle: the mirror rebuilds partial bundles/tiles
    from its own store and keeps serving-identical bytes."""
    for n in (1, 254, 0, 255, 511, 2):
        if n:
            publisher.publish_adds(n)
        else:
            publisher.publish([Withdraw("other", 0, case="case1")])
        await sync(mirror)
        assert_matches_publisher(mirror, publisher)
