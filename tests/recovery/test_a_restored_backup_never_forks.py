"""Issue 15, item 2: the publisher records the newest checkpoint it signed
outside its database (``store.served``) and refuses to sign from a tree
that does not extend it; ``feed recover`` accepts only a verified copy that
extends it (``node.recover``), and writes nothing otherwise."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import aiohttp
import pytest

from federation.core.checkpoint import Checkpoint
from federation.core.errors import ForkError, MalformedError, SignatureError, StorageError, TransportError, \
    UnavailableError
from federation.core.note import Signer
from federation.net.fetcher import Fetcher
from federation.net.relay import RelaySource
from federation.net.publish_api import PublishAPI
from federation.net.server import PublisherSource, create_app
from federation.node.recover import recover_feed
from federation.node.refresh import refresh_feeds
from federation.store.publisher import Publisher
from federation.store.served import read_served, record_served, served_path
from federation.store.snapshots import prune, write_snapshot
from federation.sync.orchestrator import sync_feed

from support.feeds import follow, make_feed, ops_for
from support.loopback import bounded
from support.tamper import clone_db, flip_bundle_entry


def _restore(feed, copy):
    """Put ``copy`` back in place of the feed's database (the operator's restore)."""
    feed.pub.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{feed.path}{suffix}").unlink(missing_ok=True)
    shutil.copy(copy, feed.path)
    feed.pub = Publisher(feed.path)


def test_every_signing_refuses_a_database_older_than_what_was_served(tmp_path, feed):
    feed.publish_version()
    week_old = clone_db(feed.path, tmp_path / "week-old.db")
    feed.publish_version()
    feed.publish_version()
    served = feed.pub.feed("tid")
    _restore(feed, week_old)
    old = feed.pub.feed("tid")
    with pytest.raises(UnavailableError) as e:
        feed.publish_version()
    assert f"size {old.size}" in str(e.value) and f"size {served.size}" in str(e.value)
    assert "federation feed recover tid --from URL" in str(e.value)
    with pytest.raises(UnavailableError):
        feed.pub.refresh_timestamp("tid", feed.signer)
    with pytest.raises(UnavailableError):
        feed.pub.rotate_key("tid", feed.signer, Signer.generate(feed.origin))
    assert feed.pub.feed("tid") == old  # nothing signed, nothing written
    assert read_served(feed.path, "tid").note == served.checkpoint  # the record never moves back


def test_a_record_one_version_behind_is_accepted(tmp_path, feed):
    """A crash after the commit and before the record leaves it a version
    behind: the tree still extends it (checked through the stored tiles)."""
    feed.publish_version(300)
    behind = read_served(feed.path, "tid").note
    feed.publish_version(7)
    served_path(feed.path, "tid").write_bytes(behind)
    r = feed.publish_version(3)
    assert read_served(feed.path, "tid").note == feed.checkpoint()
    assert r.version == 3


def test_a_database_holding_another_tree_is_a_fork(tmp_path):
    signer = Signer.generate("clearinghouse.example/feeds/tid")
    a = make_feed(tmp_path / "a.db", signer=signer)
    b = make_feed(tmp_path / "b.db", signer=signer)
    a.publish(ops_for(1))
    b.publish(ops_for(1, case="another-case"))  # same size, another root
    shutil.copy(served_path(b.path, "tid"), served_path(a.path, "tid"))
    with pytest.raises(ForkError, match="differs from the checkpoint this node served"):
        a.publish_version()
    a.pub.close()
    b.pub.close()


def test_a_larger_tree_not_extending_the_record_is_a_fork(tmp_path):
    signer = Signer.generate("clearinghouse.example/feeds/tid")
    a = make_feed(tmp_path / "a.db", signer=signer)
    b = make_feed(tmp_path / "b.db", signer=signer)
    a.publish(ops_for(1, 300))
    a.publish(ops_for(2))
    b.publish(ops_for(1, 300, case="another-case"))
    shutil.copy(served_path(b.path, "tid"), served_path(a.path, "tid"))  # b's smaller tree, not a's prefix
    with pytest.raises(ForkError):
        a.publish_version()
    a.pub.close()
    b.pub.close()


def test_a_damaged_record_fails_closed(tmp_path, feed):
    feed.publish_version()
    served_path(feed.path, "tid").write_bytes(b"not a checkpoint\n")
    with pytest.raises(StorageError, match="damaged"):
        feed.publish_version()
    served_path(feed.path, "tid").write_bytes(b"x" * 70_000)
    with pytest.raises(StorageError, match="over"):
        feed.publish_version()


def test_a_served_feed_cannot_be_created_anew(tmp_path, feed):
    feed.publish_version()
    feed.pub.close()
    feed.path.unlink()
    pub = Publisher(feed.path)
    with pytest.raises(UnavailableError, match="would fork"):
        pub.create_feed("tid", feed.origin, Signer.generate(feed.origin))
    # Another log (another origin) may take the name; its record replaces the old one.
    other = Signer.generate("clearinghouse.example/feeds/other")
    pub.create_feed("tid", other.name, other)
    assert read_served(feed.path, "tid").checkpoint.origin == other.name
    pub.close()


# ---- recovery accepts only a verified copy that extends what was served ----------------

async def _relay(tmp_path, feed, servers, name="relay.db"):
    url = await servers.publisher(feed.path)
    relay = follow(tmp_path / name, feed, [f"{url}/feeds/tid/"])
    await bounded(sync_feed_from(relay, url))
    return relay


async def sync_feed_from(m, url):
    async with Fetcher([f"{url}/feeds/tid/"]) as f:
        return await sync_feed(m, "tid", f)


async def test_recover_refuses_a_copy_behind_what_was_served(tmp_path, feed, servers):
    feed.publish_version(300)
    relay = await _relay(tmp_path, feed, servers)
    relay_url = await servers.start(create_app([RelaySource(tmp_path / "relay.db")]))
    feed.publish_version()  # the relay never saw this one
    served = feed.pub.feed("tid")
    feed.pub.close()
    feed.path.unlink()
    with pytest.raises(UnavailableError, match=f"serves the log up to size .* this node has served size {served.size}"):
        await bounded(recover_feed(feed.path, "tid", f"{relay_url}/feeds/tid/", feed.signer.verifier))
    pub = Publisher(feed.path)
    assert pub.feeds() == []  # nothing written
    pub.close()
    relay.close()


async def test_recover_refuses_a_tampering_copy_and_writes_nothing(tmp_path, feed, servers):
    feed.publish_version(300)
    feed.publish_version()
    relay = await _relay(tmp_path, feed, servers)

    class Tampering(RelaySource):
        def tile(self, name, level, index, width):
            data = super().tile(name, level, index, width)
            return flip_bundle_entry(data, 3) if data is not None and level == -1 else data

    relay_url = await servers.start(create_app([Tampering(tmp_path / "relay.db")]))
    feed.pub.close()
    feed.path.unlink()
    with pytest.raises(MalformedError):
        await bounded(recover_feed(feed.path, "tid", f"{relay_url}/feeds/tid/", feed.signer.verifier))
    with pytest.raises(SignatureError):
        await bounded(recover_feed(feed.path, "tid", f"{relay_url}/feeds/tid/",
                                   Signer.generate(feed.origin).verifier))
    pub = Publisher(feed.path)
    assert pub.feeds() == []
    pub.close()
    relay.close()


async def test_the_publishing_api_and_the_servers_refresh_refuse_too(tmp_path, feed, servers):
    """Over HTTP the refusal is a 503 naming the way out (never a 500), and
    the server's refresh round reports it instead of dying."""
    feed.publish_version()
    week_old = clone_db(feed.path, tmp_path / "week-old.db")
    feed.publish_version()
    _restore(feed, week_old)
    old = feed.pub.feed("tid")
    api = PublishAPI(feed.path, {"tid": feed.signer})
    url = await servers.start(create_app([PublisherSource(feed.path)], extensions=[api.install]))
    body = '{"op":"add","type":"md5","hash":"9e107d9d372bb6826bd81d3542a419d6","case":"c-1"}\n'
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s:
        async with s.post(f"{url}/feeds/tid/batches/b-1", data=body,
                          headers={"Content-Type": "application/x-ndjson"}) as r:
            assert r.status == 503, await r.text()
            assert "feed recover" in await r.text()
    (result,) = refresh_feeds(feed.pub, {"tid": feed.signer})
    assert result.problem.startswith("unavailable:") and "feed recover" in result.problem
    assert feed.pub.feed("tid") == old


async def test_recover_on_a_current_database_remakes_a_lost_record(tmp_path, feed, servers):
    """HOME/state lost (a new disk, a careless restore): ``feed recover`` from
    a copy re-makes the record from the verified checkpoint, and the guard
    works again."""
    feed.publish_version(300)
    week_old = clone_db(feed.path, tmp_path / "week-old.db")
    feed.publish_version()
    relay = await _relay(tmp_path, feed, servers)
    relay_url = await servers.start(create_app([RelaySource(tmp_path / "relay.db")]))
    served_path(feed.path, "tid").unlink()
    before = feed.pub.feed("tid")
    r = await bounded(recover_feed(feed.path, "tid", f"{relay_url}/feeds/tid/", feed.signer.verifier))
    assert not r.changed and feed.pub.feed("tid") == before
    assert read_served(feed.path, "tid").note == before.checkpoint
    feed.pub.close()
    clone_db(week_old, feed.path)  # restored through SQLite: the server keeps its connection open
    feed.pub = Publisher(feed.path)
    assert feed.pub.feed("tid").size < before.size
    with pytest.raises(UnavailableError):
        feed.publish_version()
    relay.close()


async def test_recovery_takes_the_key_that_signs_the_served_log_now(tmp_path, feed, servers):
    """The key was rotated after the backup: the recovered row names the new
    key and its file, so the next publish signs with it."""
    feed.publish_version(300)
    backup = clone_db(feed.path, tmp_path / "backup.db")
    new = Signer.generate(feed.origin)
    feed.pub.rotate_key("tid", feed.signer, new, key_file="/keys/tid-2.key")
    feed.signer = new
    feed.publish_version()
    relay = await _relay(tmp_path, feed, servers)
    relay_url = await servers.start(create_app([RelaySource(tmp_path / "relay.db")]))
    feed.pub.close()
    clone_db(backup, feed.path)
    feed.pub = Publisher(feed.path)
    assert feed.pub.feed("tid").key_file is None
    await bounded(recover_feed(feed.path, "tid", f"{relay_url}/feeds/tid/", new.verifier,
                               key_file="/keys/tid-2.key"))
    head = feed.pub.feed("tid")
    assert (head.vkey, head.key_file) == (new.vkey, "/keys/tid-2.key")
    assert feed.publish_version().version == 3
    relay.close()


def test_concurrent_records_never_move_back(tmp_path):
    """Two publishers of one database (the API and the CLI) record after
    their commits, in any interleaving: the record ends at the larger tree."""
    signer = Signer.generate("clearinghouse.example/feeds/tid")
    notes = [Checkpoint(signer.name, n, bytes(32)).sign([signer]) for n in range(1, 241)]
    db = tmp_path / "pub.db"

    def record(mine):
        for note in mine:
            record_served(db, "tid", note)

    threads = [threading.Thread(target=record, args=(notes[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert read_served(db, "tid").checkpoint.size == 240


async def test_a_pruned_copy_cannot_recover_a_lost_database_and_says_why(tmp_path, feed, servers):
    """Recovery from snapshots is not supported: a copy that pruned the
    entries the database lacks is refused with the reason, nothing written."""
    feed.publish_version(300)
    write_snapshot(feed.path, "tid")
    prune(feed.path, "tid")
    feed.publish_version()
    copy = clone_db(feed.path, tmp_path / "member.db")  # a member node's copy, pruned like the publisher
    url = await servers.publisher(copy)
    feed.pub.close()
    feed.path.unlink()
    with pytest.raises(TransportError, match="prunes its log"):
        await bounded(recover_feed(feed.path, "tid", f"{url}/feeds/tid/", feed.signer.verifier))
    pub = Publisher(feed.path)
    assert pub.feeds() == []
    pub.close()


async def test_recover_refuses_to_build_on_a_database_the_served_log_does_not_extend(tmp_path, servers):
    signer = Signer.generate("clearinghouse.example/feeds/tid")
    mine = make_feed(tmp_path / "mine.db", signer=signer, access="public")
    served = make_feed(tmp_path / "served.db", signer=signer, access="public")
    mine.publish(ops_for(1, 300))
    served.publish(ops_for(1, 300, case="another-case"))
    served.publish(ops_for(2))
    relay = await _relay(tmp_path, served, servers)
    relay_url = await servers.start(create_app([RelaySource(tmp_path / "relay.db")]))
    before = mine.pub.feed("tid")
    with pytest.raises(ForkError):
        await bounded(recover_feed(mine.path, "tid", f"{relay_url}/feeds/tid/", signer.verifier))
    assert mine.pub.feed("tid") == before
    for f in (mine, served):
        f.pub.close()
    relay.close()
