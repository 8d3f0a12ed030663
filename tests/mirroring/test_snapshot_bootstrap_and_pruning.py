"""Snapshots, bootstrap from a snapshot, pruning and automatic re-bootstrap,
over real HTTP on loopback. A snapshot download is bounded by the signed tree
(not the unsigned index) and by a deadline.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import subprocess
import sys
import tracemalloc

import aiohttp
import msgpack
import pytest

from federation.core import entries as E
from federation.core.errors import DigestError, MalformedError, TransportError
from federation.core.lthash import LtHash16
from federation.core.merkle import CompactRange
from federation.core.snapshot_format import SnapshotReader, bundle_range, parse_index
from federation.core.tiles import parse_bundle
from federation.net.fetcher import Fetcher
from federation.net.server import PublisherSource, create_app
from federation.net.snapshots import server_extension
from federation.store.activeset import ActiveSet
from federation.store.lthash_workers import ParallelSum
from federation.store.snapshots import ensure_schema, list_snapshots, prune, snapshot_dir, write_snapshot
from federation.sync.bootstrap import bootstrap_feed
from federation.sync.orchestrator import sync_once

from support.feeds import NAME, adds, feed_url, make_feed
from support.loopback import Servers, bounded
from support.mirror_state import snapshot as mirror_state
from support.paths import REPO_ROOT

TIMEOUT = 30.0


def scale_app(db):
    return create_app([PublisherSource(db)], extensions=[server_extension(db)])


async def sync(m, **kw):
    async with asyncio.timeout(TIMEOUT):
        return await sync_once(m, NAME, **kw)


def assert_same_set(m, pf):
    """Mirror head and rows equal the publisher's, recomputed from rows."""
    f, h = m.get(pf.name), pf.head()
    assert (f.applied_size, f.version, f.count, f.digest) == (h.size, h.version, h.count, h.digest)
    assert CompactRange.from_bytes(f.compact).root() == CompactRange.from_bytes(h.compact).root()
    digest, count = ActiveSet(m.conn, f.id).recompute_digest()
    assert (digest.digest(), count) == (h.digest, h.count)
    rows = lambda conn, fid: conn.execute(  # noqa: E731
        "SELECT hash_type, value, case_id, labels FROM hashes WHERE feed=? ORDER BY 1,2,3", (fid,)).fetchall()
    assert rows(m.conn, f.id) == rows(pf.pub.conn, h.id)


def bundle_rows(conn, feed_id):
    return conn.execute("SELECT idx, width FROM tiles WHERE feed=? AND level=-1 ORDER BY idx, width",
                        (feed_id,)).fetchall()


@pytest.fixture
def history(make_publisher, signer):
    """A feed with three versions (adds, a withdrawal, a relabel), 700+ entries."""
    pf = make_publisher("pub.db", signer)
    _, first = pf.publish_adds(400, case="c1")
    pf.publish(adds(300, case="c2", labels=("a", "b"), hash_type="sha256"))
    pf.publish([E.Withdraw("legal", 0, first[0].hash_type, first[0].value)])
    pf.publish([E.Add(first[1].hash_type, first[1].value, "c1", ("other",), 0)])
    return pf


async def test_fresh_mirror_bootstraps_then_follows_the_log(history, serve, make_mirror, caplog):
    ref = write_snapshot(history.path, NAME, compress=True)
    assert (ref.version, ref.count) == (4, 699)
    url = await serve(scale_app(history.path))
    m = make_mirror("m.db", feed_url(url))
    with caplog.at_level(logging.INFO, logger="federation.bootstrap"):
        r = await sync(m)
    assert "bootstrapped from snapshot" in caplog.text
    assert (r.old_version, r.version) == (0, 4)
    assert_same_set(m, history)
    assert m.audit(NAME) == []  # replays from the snapshot's base, not from entry 0
    # The change stream shows every record of the snapshot once, as an add.
    stream = m.changes(NAME, limit=10_000)
    assert [c["action"] for c in stream] == ["add"] * 699
    f = m.get(NAME)
    # Only the last bundle came from the snapshot: the log before it was never fetched.
    assert bundle_rows(m.conn, f.id) == [bundle_range(ref.size)]
    # It follows the log from there, over several bundles.
    history.publish(adds(600, case="c3"))
    history.publish([E.Withdraw("duplicate", 0, case="c2")])
    r2 = await sync(m)
    assert (r2.old_version, r2.version) == (4, 6)
    assert_same_set(m, history)
    assert m.audit(NAME) == []
    assert m.get(NAME).checkpoint == history.head().checkpoint
    assert m.lookup(first_hash(history)[0], first_hash(history)[1])


def first_hash(pf):
    return pf.pub.conn.execute("SELECT hash_type, value FROM hashes WHERE case_id='c3' LIMIT 1").fetchone()


async def test_snapshot_behind_the_checkpoint_and_uncompressed(history, serve, make_mirror):
    ref = write_snapshot(history.path, NAME, compress=False)
    history.publish(adds(10, case="late"))
    url = await serve(scale_app(history.path))
    async with aiohttp.ClientSession() as s:
        async with s.get(feed_url(url) + "snapshot/index") as resp:
            refs, minimum = parse_index(await resp.read())
        async with s.get(feed_url(url) + f"snapshot/{ref.sha256}") as resp:
            body = await resp.read()
    assert refs == [ref] and minimum == 0 and not ref.compressed
    assert hashlib.sha256(body).hexdigest() == ref.sha256
    m = make_mirror("m.db", feed_url(url))
    async with Fetcher(feed_url(url)) as fetcher:
        b = await bootstrap_feed(m, NAME, fetcher, workers=0)
    assert (b.size, b.version, b.count) == (ref.size, 4, 699)
    await sync(m)
    assert_same_set(m, history)


# ---- tampered snapshots ------------------------------------------------------------


def _records(pf):
    rows = pf.pub.conn.execute("SELECT hash_type, value, case_id, labels FROM hashes ORDER BY 1,2,3").fetchall()
    return [[t, v, c, labels.split(",") if labels else []] for t, v, c, labels in rows]


def _plant(pf, header: dict, records: list) -> str:
    """Publish a forged snapshot file in the publisher's index (a malicious server)."""
    packer = msgpack.Packer(use_bin_type=True)
    body = packer.pack(header) + b"".join(packer.pack(r) for r in records)
    sha = hashlib.sha256(body).hexdigest()
    fid = pf.head().id
    ensure_schema(pf.pub.conn)
    d = snapshot_dir(pf.path) / str(fid)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{sha}.snap").write_bytes(body)
    pf.pub.conn.execute("INSERT INTO snapshots VALUES (?,?,?,?,?,?,?,?)",
                        (fid, sha, header["version"], header["size"], header["count"], len(body), 0, 0))
    return sha


def _honest_header(pf) -> dict:
    h = pf.head()
    idx, w = bundle_range(h.size)
    bundle = pf.pub.tile(h.id, -1, idx, w)
    return {"v": 1, "origin": pf.origin, "size": h.size, "version": h.version, "count": h.count, "bundle": bundle}


def _forged_seal_bundle(pf, records) -> bytes:
    """The honest last bundle with its seal replaced by one matching ``records``."""
    h = pf.head()
    idx, w = bundle_range(h.size)
    entries = parse_bundle(pf.pub.tile(h.id, -1, idx, w), w)
    seal = E.decode(entries[-1])
    digest = LtHash16().add(E.element(t, v, c, tuple(labels)) for t, v, c, labels in records).digest()
    forged = E.Seal(seal.version, seal.time, len(records), digest)
    from federation.core.tiles import encode_bundle
    return encode_bundle(entries[:-1] + [E.encode(forged)])


def _tamper_digest(pf):
    recs = _records(pf)
    recs[5][3] = ["injected"]  # same count, one record's labels changed
    return _honest_header(pf), recs


def _tamper_count(pf):
    recs = _records(pf)
    del recs[7]  # a hash silently dropped; the header's count follows suit
    header = _honest_header(pf)
    header["count"] = len(recs)
    return header, recs


def _tamper_inclusion(pf):
    recs = _records(pf)
    del recs[3]  # drop a hash and forge a seal that agrees: not in the signed tree
    header = _honest_header(pf)
    header["count"] = len(recs)
    header["bundle"] = _forged_seal_bundle(pf, recs)
    return header, recs


def _tamper_order(pf):
    recs = _records(pf)
    recs[1], recs[2] = recs[2], recs[1]
    return _honest_header(pf), recs


def _tamper_unknown_type(pf):
    recs = _records(pf)
    recs[0][0] = "aaa"  # well-formed, still first in order, but no record of an active set
    return _honest_header(pf), recs


def _tamper_long_case(pf):
    recs = _records(pf)
    recs[-1][2] = "z" * 256  # no LtHash element holds a 256-byte field (u8 lengths): not well-formed
    return _honest_header(pf), recs


@pytest.mark.parametrize("tamper, exc, kind, words", [
    (_tamper_digest, DigestError, "digest", "digest"),
    (_tamper_unknown_type, DigestError, "digest", "digest"),
    (_tamper_long_case, MalformedError, "malformed", "cannot be an active record"),
    (_tamper_count, DigestError, "digest", "states 698 hashes, its seal says 699"),
    (_tamper_inclusion, MalformedError, "malformed", "inclusion proof"),
    (_tamper_order, MalformedError, "malformed", "key order"),
])
async def test_tampered_snapshot_is_refused_and_mirror_unchanged(history, serve, make_mirror,
                                                                 tamper, exc, kind, words):
    header, recs = tamper(history)
    _plant(history, header, recs)
    url = await serve(scale_app(history.path))
    m = make_mirror("m.db", feed_url(url))
    before = mirror_state(m)
    with pytest.raises(exc) as err:
        await sync(m)
    assert err.value.kind == kind and words in str(err.value)
    assert mirror_state(m) == before
    assert m.get(NAME).last_error.startswith(kind)
    assert m.conn.execute("SELECT count(*) FROM hashes").fetchone()[0] == 0


async def test_snapshot_not_matching_its_name_is_refused(history, serve, make_mirror):
    ref = write_snapshot(history.path, NAME, compress=False)
    path = snapshot_dir(history.path) / str(history.head().id) / f"{ref.sha256}.snap"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    url = await serve(scale_app(history.path))
    m = make_mirror("m.db", feed_url(url))
    before = mirror_state(m)
    with pytest.raises(MalformedError, match="hashes to .* not its name"):
        await sync(m)
    assert mirror_state(m) == before


async def test_server_without_snapshots_replays_the_log(history, serve, make_mirror):
    url = await serve(history.path)  # plain server: no snapshot routes at all
    m = make_mirror("m.db", feed_url(url))
    await sync(m)
    assert_same_set(m, history)
    assert len(bundle_rows(m.conn, m.get(NAME).id)) > 1


# ---- pruning -------------------------------------------------------------------------


async def test_pruning_denies_bundles_keeps_tiles_and_lagging_mirror_rebootstraps(history, serve, make_mirror, caplog):
    url = await serve(scale_app(history.path))
    lagging = make_mirror("lag.db", feed_url(url))
    await sync(lagging, snapshots=False)  # replays the log: at version 4
    history.publish(adds(500, case="c4"))
    history.publish([E.Withdraw("submitter_request", 0, case="c1")])
    ref = write_snapshot(history.path, NAME)
    with pytest.raises(Exception, match="never decreases|above the newest"):
        prune(history.path, NAME, minimum=ref.size + 1)
    minimum = prune(history.path, NAME)
    assert minimum == ref.size == history.head().size
    fid = history.head().id
    # Erasure: no stored bundle ends at or below the minimum, except the partial
    # bundle of the current size, kept for the next publish (and denied).
    left = [(i, w) for i, w in bundle_rows(history.pub.conn, fid) if i * 256 + w <= minimum]
    assert left in ([], [(minimum // 256, minimum % 256)])
    async with aiohttp.ClientSession() as s:
        async with s.get(feed_url(url) + "tile/entries/000") as resp:
            assert resp.status == 410
        async with s.get(feed_url(url) + "tile/0/000") as resp:
            assert resp.status == 200  # hash tiles stay
        async with s.get(feed_url(url) + "snapshot/index") as resp:
            assert parse_index(await resp.read())[1] == minimum
    with pytest.raises(Exception, match="never decreases"):
        prune(history.path, NAME, minimum=minimum - 1)
    # The publisher keeps publishing on top of a pruned log.
    history.publish(adds(20, case="c5"))
    with caplog.at_level(logging.WARNING, logger="federation.bootstrap"):
        r = await sync(lagging)
    assert "fell behind the upstream's pruned range" in caplog.text
    assert (r.old_version, r.version) == (4, 7)
    assert_same_set(lagging, history)
    assert lagging.audit(NAME) == []
    # The withdrawals inside the pruned range still reach change-stream consumers:
    # the re-bootstrap records the difference between the old and the new set.
    after = [c for c in lagging.changes(NAME, limit=100_000) if c["version"] > 4]
    withdrawn = {c["case"] for c in after if c["action"] == "withdraw"}
    added = {c["case"] for c in after if c["action"] == "add"}
    assert withdrawn == {"c1"} and all(c["reason"] == "rebootstrap" for c in after if c["action"] == "withdraw")
    assert added == {"c4", "c5"}
    before = lagging.conn.execute("SELECT count(*) FROM changes WHERE version <= 4").fetchone()[0]
    assert before > 0  # the old stream is kept; consumers' cursors stay valid
    # Withdrawn hashes of the pruned range are no longer on the lagging mirror either.
    assert not lagging.conn.execute("SELECT 1 FROM hashes WHERE case_id='c1'").fetchone()
    assert min(i * 256 + w for i, w in bundle_rows(lagging.conn, lagging.get(NAME).id)) > minimum - 256


async def test_lagging_mirror_without_snapshot_route_fails_as_transport(history, serve, make_mirror):
    app_url = await serve(scale_app(history.path))
    m = make_mirror("lag.db", feed_url(app_url))
    await sync(m, snapshots=False)
    history.publish(adds(300, case="c9"))
    write_snapshot(history.path, NAME)
    prune(history.path, NAME)
    before = mirror_state(m)
    with pytest.raises(TransportError, match="410"):
        await sync(m, snapshots=False)
    assert mirror_state(m) == before


# ---- streaming and workers ----------------------------------------------------------


def test_reader_streams_in_bounded_memory(tmp_path):
    """500k records (~18 MB uncompressed): the reader's peak allocation stays
    near its read size, not the file size."""
    path = tmp_path / "big.snap"
    n = 500_000
    packer = msgpack.Packer(use_bin_type=True)
    with open(path, "wb") as f:
        f.write(packer.pack({"v": 1, "origin": "o", "size": 1, "version": 1, "count": n, "bundle": b""}))
        for i in range(n):
            f.write(packer.pack(["sha1", i.to_bytes(20, "big"), "case", ["x"]]))
    size = path.stat().st_size
    assert size > 17_000_000
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            reader = SnapshotReader(f, read_size=256 * 1024)
            seen = sum(len(b) for b in reader.records(batch=1024))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == n
    assert peak < size / 4, f"peak {peak} bytes for a {size}-byte file"


def test_parallel_sum_equals_serial():
    elems = [i.to_bytes(8, "big") * 3 for i in range(20_000)]
    with ParallelSum(workers=1) as p:
        for i in range(0, len(elems), 3000):
            p.add(elems[i:i + 3000])
        got = p.result()
    assert got == LtHash16().add(elems)


def test_parallel_sum_of_records_with_two_workers():
    records = [("md5", i.to_bytes(16, "big"), f"c{i % 9}", ("a", "b") if i % 2 else ()) for i in range(9000)]
    with ParallelSum(workers=2) as p:
        for i in range(0, len(records), 1000):
            p.add_records(records[i:i + 1000])
        got = p.result()
    assert got == LtHash16().add(E.elements_of(records))


def test_large_publish_from_a_script_without_main_guard(tmp_path):
    """Worker processes must not re-run the caller's __main__ (multiprocessing's
    spawn would, and such a script would hang or fork without end)."""
    script = tmp_path / "publish_script.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from federation.store.publisher import Publisher
from federation.core.note import Signer
from federation.core.entries import Add
from federation.core.lthash import LtHash16
from federation.core.entries import element
p = Publisher({str(tmp_path / "p.db")!r})
s = Signer.generate("o.example/f")
p.create_feed("f", "o.example/f", s)
ops = [Add("md5", i.to_bytes(16, "big"), "c", (), 0) for i in range(40000)]
r = p.publish("f", ops, s)
want = LtHash16().add(element(o.hash_type, o.value, o.case, o.labels) for o in ops).digest()
print("OK" if p.feed("f").digest == want and r.count == 40000 else "BAD")
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


def test_snapshot_index_lists_and_rejects_malformed(history):
    a = write_snapshot(history.path, NAME)
    history.publish(adds(3, case="z"))
    b = write_snapshot(history.path, NAME, compress=False)
    conn = sqlite3.connect(history.path)
    assert [r.size for r in list_snapshots(conn, history.head().id)] == [a.size, b.size]
    conn.close()
    for bad in (b"not json", b'{"snapshots": [{"sha256": "zz"}]}', b'{"snapshots": 3}'):
        with pytest.raises(MalformedError):
            parse_index(bad)


def _tamper_bundle_entry(pf):
    """An entry before the seal in the snapshot's bundle is swapped for another
    validly encoded one: the seal's inclusion still holds, the leaves do not."""
    header = _honest_header(pf)
    h = pf.head()
    idx, w = bundle_range(h.size)
    entries = parse_bundle(header["bundle"], w)
    entries[0] = E.encode(E.Add("md5", bytes(16), "forged", (), 0))
    from federation.core.tiles import encode_bundle
    header["bundle"] = encode_bundle(entries)
    return header, _records(pf)


async def test_snapshot_bundle_with_a_forged_entry_is_refused(history, serve, make_mirror):
    history.publish(adds(40, case="more"))  # a last bundle with many entries before the seal
    header, recs = _tamper_bundle_entry(history)
    _plant(history, header, recs)
    url = await serve(scale_app(history.path))
    m = make_mirror("m.db", feed_url(url))
    before = mirror_state(m)
    with pytest.raises(MalformedError, match="not the signed tree's leaves"):
        await sync(m)
    assert mirror_state(m) == before


def test_cli_snapshot_list_and_prune(tmp_path):
    from click.testing import CliRunner

    from federation.cli.main import cli

    home = str(tmp_path / "node")
    run = lambda *a: CliRunner().invoke(cli, ["--home", home, *a], catch_exceptions=False)  # noqa: E731
    assert run("feed", "create", "tid").exit_code == 0
    batch = tmp_path / "b.csv"
    batch.write_text("op,type,hash,case,labels\n" + "".join(
        f"add,md5,{hashlib.md5(str(i).encode()).hexdigest()},c{i % 3},csam\n" for i in range(300)))
    assert run("publish", "tid", str(batch)).exit_code == 0
    r = run("prune", "tid")
    assert r.exit_code == 2 and "no snapshot" in r.output
    r = run("snapshot", "write", "tid")
    assert r.exit_code == 0 and "300 hashes" in r.output
    r = run("prune", "tid")
    assert r.exit_code == 0 and "minimum index 301" in r.output
    r = run("snapshot", "list", "tid")
    assert "version 1\tsize 301\t300 hashes" in r.output and "minimum index 301" in r.output
    for cmd in (["snapshot"], ["snapshot", "write"], ["snapshot", "list"], ["prune"], ["bootstrap"]):
        assert "Example:" in run(*cmd, "--help").output


async def test_a_snapshot_download_is_bounded_by_the_signed_tree_not_the_unsigned_index(tmp_path):
    from aiohttp import web
    from federation.store.mirror import Mirror
    from federation.net.server import PublisherSource, create_app
    from federation.sync.orchestrator import sync_once
    feed = make_feed(tmp_path / "pub.db", "tid", access="public")
    feed.publish_version()  # a tree of 6 entries: any snapshot of it is a few KiB
    claimed = 64 << 20
    sent = [0]

    async def checkpoint(request):
        return web.Response(body=feed.checkpoint(), content_type="text/plain")

    async def index(request):
        size = feed.pub.feed("tid").size
        return web.json_response({"snapshots": [dict(sha256="ab" * 32, version=1, size=size, count=5,
                                                     bytes=claimed, compressed=False)], "minimum_index": 0})

    async def snapshot(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        chunk = b"\0" * (1 << 20)
        try:
            while sent[0] < claimed:
                await resp.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    hostile_app = web.Application()
    hostile_app.router.add_get("/feeds/tid/checkpoint", checkpoint)
    hostile_app.router.add_get("/feeds/tid/snapshot/index", index)
    hostile_app.router.add_get("/feeds/tid/snapshot/{sha}", snapshot)
    servers = Servers()
    try:
        hostile = await servers.start(hostile_app) + "/feeds/tid/"
        honest = await servers.start(create_app([PublisherSource(feed.path)])) + "/feeds/tid/"
        m = Mirror(tmp_path / "mirror.db")
        m.follow("tid", feed.origin, [feed.signer.vkey], [hostile, honest])
        await bounded(sync_once(m, "tid"), 60)
        assert m.get("tid").version == 1  # the honest upstream served the sync
        m.close()
        assert sent[0] < claimed // 2, f"the mirror took {sent[0] >> 20} MiB of 'snapshot' for a 6-entry tree"
    finally:
        await servers.close()
        feed.pub.close()


@pytest.mark.timeout(150)
async def test_a_relay_dripping_a_snapshot_cannot_hold_a_fresh_follower_forever(tmp_path):
    from aiohttp import web
    from federation.store.mirror import Mirror
    from federation.net.server import PublisherSource, create_app
    from federation.sync.orchestrator import sync_once
    feed = make_feed(tmp_path / "pub.db", "tid", access="public")
    feed.publish_version()
    stop = asyncio.Event()

    async def checkpoint(request):
        return web.Response(body=feed.checkpoint(), content_type="text/plain")

    async def index(request):
        size = feed.pub.feed("tid").size
        return web.json_response({"snapshots": [dict(sha256="ab" * 32, version=1, size=size, count=5,
                                                     bytes=4096, compressed=False)], "minimum_index": 0})

    async def snapshot(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        try:
            for _ in range(4096):  # one byte a second: never idle for the 60 s sock_read allows
                await resp.write(b"\0")
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                    break
                except asyncio.TimeoutError:
                    pass
        except (ConnectionError, RuntimeError):
            pass
        return resp

    hostile_app = web.Application()
    hostile_app.router.add_get("/feeds/tid/checkpoint", checkpoint)
    hostile_app.router.add_get("/feeds/tid/snapshot/index", index)
    hostile_app.router.add_get("/feeds/tid/snapshot/{sha}", snapshot)
    servers = Servers()
    m = Mirror(tmp_path / "mirror.db")
    try:
        hostile = await servers.start(hostile_app) + "/feeds/tid/"
        honest = await servers.start(create_app([PublisherSource(feed.path)])) + "/feeds/tid/"
        m.follow("tid", feed.origin, [feed.signer.vkey], [hostile, honest])
        # Tiles and checkpoints get 60 s each (fetcher.DEFAULT_TIMEOUT); a snapshot of 4 KiB no more than that.
        await asyncio.wait_for(sync_once(m, "tid"), 75)
        assert m.get("tid").version == 1
    finally:
        stop.set()
        m.close()
        await servers.close()
        feed.pub.close()
