"""A sync next to other writers of the same mirror: a store locked by
another writer is a ``storage`` error, and rows staged by another sync are
never applied. Real servers on 127.0.0.1, real SQLite.
"""
from __future__ import annotations

import asyncio
import re
import sqlite3

import pytest

from federation.core import entries as E
from federation.core.errors import ForkError, StorageError
from federation.net.fetcher import Fetcher
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher
from federation.sync.orchestrator import sync_feed

from support.feeds import NAME, adds
from support.mirror_state import assert_matches_publisher, snapshot, sync
from support.tamper import TamperProxy, clone_db, feed_head

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def m(publisher, server, make_mirror):
    """A mirror at version 1 (size 301), straight from the publisher."""
    m = make_mirror("m.db", f"{server}/feeds/{NAME}/")
    publisher.publish_adds(300, "case1")
    await sync(m)
    assert_matches_publisher(m, publisher)
    return m


async def test_store_locked_by_another_writer_is_a_storage_error(m, publisher):
    """Another process (a second sync, a node's follower of another feed)
    holds the mirror DB's write lock longer than the busy timeout. The sync
    must fail with the documented kind (``storage``), not let a raw
    ``sqlite3.OperationalError`` escape (which ``watch_feed``/``sync_all``
    do not catch), and must change nothing."""
    publisher.publish_adds(10, "case2")
    m.conn.execute("PRAGMA busy_timeout=50")  # the 30 s default, shortened for the test
    before = snapshot(m)
    other = sqlite3.connect(m.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError) as info:
            await sync(m)
        assert info.value.kind == "storage" and "locked" in str(info.value)
        async with Fetcher(m.get(NAME).urls[0]) as f:  # the node's path (push.sync_from_upstreams)
            with pytest.raises(StorageError, match="locked"):
                async with asyncio.timeout(15):
                    await sync_feed(m, NAME, f)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert snapshot(m) == before and m.audit(NAME) == []
    r = await sync(m)
    assert r.version == 2
    assert_matches_publisher(m, publisher)


# ---- staged versions and two syncs of the same mirror ---------------------------------

def _hold(pattern: str, reached: asyncio.Event, release: asyncio.Event):
    """Proxy rule: hold matching requests until ``release`` is set, then forward."""
    async def rule(proxy, request, path):
        if re.search(pattern, path):
            reached.set()
            await release.wait()
        return None
    return rule


async def test_staged_rows_of_another_sync_are_not_applied(m, publisher, serve, tmp_path, monkeypatch):
    """Two syncs of the same mirror DB (two processes: a node and a CLI sync,
    say), fed a split view: two trees of the same size, both validly signed,
    both extending the mirror. Their big versions are staged in the shared
    ``staging`` table. Sync B clears A's staged rows and stages its own, then
    dies; A finishes and applies. A must apply only the entries it verified
    against its own checkpoint -- not B's rows -- and so must leave the mirror
    as it was (the two forks differ only in timestamps, so their seals' count
    and digest agree and cannot catch the mix)."""
    from federation.core import verify
    monkeypatch.setattr(verify, "SPILL_AT", 100)
    ops = [E.Add(a.hash_type, a.value, a.case, a.labels, 0) for a in adds(300, "fork")]
    forks = []
    for i, stamp in enumerate((1_700_000_000, 1_700_000_001)):
        db = clone_db(publisher.path, tmp_path / f"fork{i}.db")
        p = Publisher(db)
        try:
            p.publish(NAME, ops, publisher.signer, now=stamp)
        finally:
            p.close()
        forks.append(await serve(db))
    assert feed_head(tmp_path / "fork0.db")[1:] == feed_head(tmp_path / "fork1.db")[1:]  # same version, count, digest
    proxy_a, proxy_b = TamperProxy(forks[0]), TamperProxy(forks[1])
    await proxy_a.start()
    await proxy_b.start()
    m_b = Mirror(m.path)  # the other process's connection
    try:
        reached, release = asyncio.Event(), asyncio.Event()
        proxy_a.add(_hold(r"/tile/entries/002\.p/90$", reached, release))  # A's last bundle
        reached_b, never = asyncio.Event(), asyncio.Event()
        proxy_b.add(_hold(r"/tile/entries/002\.p/90$", reached_b, never))  # B is killed on its last bundle
        before = snapshot(m)
        fid = m.get(NAME).id

        async def run_a():
            async with Fetcher(proxy_a.feed_url()) as f:
                return await sync_feed(m, NAME, f)

        task_a = asyncio.create_task(run_a())
        async with asyncio.timeout(15):
            await reached.wait()
            while m.conn.execute("SELECT count(*) FROM staging WHERE feed=?", (fid,)).fetchone()[0] < 200:
                await asyncio.sleep(0.01)  # A staged entries 301..500 (from fork 0)
            async with Fetcher(proxy_b.feed_url()) as f:
                # B stages 301..500 from fork 1, then its process dies (here:
                # cancelled), so nothing clears its rows before A goes on.
                task_b = asyncio.create_task(sync_feed(m_b, NAME, f))
                await reached_b.wait()  # after B cleared the table: wait for its own rows
                while m.conn.execute("SELECT count(*) FROM staging WHERE feed=?", (fid,)).fetchone()[0] < 200:
                    await asyncio.sleep(0.01)
                task_b.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task_b
            release.set()
            with pytest.raises(StorageError, match="not the ones this sync verified"):
                await task_a
        assert snapshot(m) == before, "a sync applied staged entries it had not verified"
        assert m.audit(NAME) == []
        proxy_a.clear()
        proxy_b.clear()
        async with Fetcher(proxy_a.feed_url()) as f:  # alone, A's view applies whole
            assert (await sync_feed(m, NAME, f)).version == 2
        assert m.audit(NAME) == []
        async with Fetcher(proxy_b.feed_url()) as f:  # and B's is then the fork it is
            with pytest.raises(ForkError):
                await sync_feed(m, NAME, f)
    finally:
        release.set()
        m_b.close()
        await proxy_a.close()
        await proxy_b.close()
