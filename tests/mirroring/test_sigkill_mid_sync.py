"""SIGKILL a mirror mid-sync: it is left at a whole version and resumes from it.

The sync runs in a subprocess (``python -c`` calling ``federation.sync.sync_once``)
against a server in this process whose entry-bundle responses are slowed
down by a middleware. A separate read-only SQLite connection polls
``follows.version``; once it is at least 2 and below the final version the
subprocess gets SIGKILL.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from aiohttp import web

from federation.core import entries as E
from federation.core.tiles import parse_bundle
from federation.net.server import PublisherSource, create_app
from federation.store.mirror import Mirror
from federation.store.tilestore import TileStore

from support.feeds import NAME, feed_url
from support.mirror_state import assert_matches_publisher, snapshot, sync
from support.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(60)

REPO = str(REPO_ROOT)
VERSIONS = 32
ADDS_PER_VERSION = 300  # 301 entries a version: every version spans two bundles
POLL_EVERY = 0.01
MAX_POLLS = 1500  # 15 s

SYNC_CODE = """
import asyncio, sys
from federation.store.mirror import Mirror
from federation.sync.orchestrator import sync_once
m = Mirror(sys.argv[1])
asyncio.run(sync_once(m, sys.argv[2], concurrency=int(sys.argv[3])))
print("finished")
"""


class SlowBundles:
    """Middleware delaying every entry-bundle response by 100-300 ms; logs bundle paths."""

    def __init__(self):
        self.enabled = True
        self.log: list[str] = []

    @web.middleware
    async def middleware(self, request, handler):
        if "/tile/entries/" in request.path:
            self.log.append(request.path)
            if self.enabled:
                await asyncio.sleep(random.uniform(0.1, 0.3))
        return await handler(request)


@pytest.fixture
async def slow_feed(publisher, serve):
    """A feed of VERSIONS versions served by a server with slow bundles."""
    sizes = {0: 0}
    for v in range(1, VERSIONS + 1):
        sizes[v] = publisher.publish_adds(ADDS_PER_VERSION, f"case{v}")[0].size
    assert sizes[VERSIONS] - sizes[VERSIONS - 1] > 256
    slow = SlowBundles()
    app = create_app([PublisherSource(publisher.path)])
    app.middlewares.append(slow.middleware)
    url = await serve(app)
    return publisher, url, slow, sizes


def _writing(probe: sqlite3.Connection) -> bool:
    """Whether another connection holds the write lock (is inside a write transaction)."""
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            return True
        raise
    probe.execute("ROLLBACK")
    return False


async def run_and_kill(db: Path, min_version: int, final: int, mid_transaction: bool = False) -> int:
    """Start a sync subprocess; SIGKILL it once the DB shows min_version <= version < final.

    With ``mid_transaction``, after that point wait until the subprocess is
    inside a write transaction (applying a version: the write lock is taken)
    and kill it right then.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SYNC_CODE, str(db), NAME, "1",
        env={**os.environ, "PYTHONPATH": REPO}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    probe = sqlite3.connect(str(db), timeout=0, isolation_level=None)
    seen = None
    caught_writing = False
    try:
        for _ in range(MAX_POLLS):
            (seen,) = ro.execute("SELECT version FROM follows WHERE name=?", (NAME,)).fetchone()
            if proc.returncode is not None:
                break
            if seen >= min_version:
                if not mid_transaction:
                    break
                if _writing(probe):
                    caught_writing = True
                    break
            await asyncio.sleep(POLL_EVERY if seen < min_version else 0.001)
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(10):
            out, err = await proc.communicate()
    finally:
        ro.close()
        probe.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, out, err)
    assert seen is not None and min_version <= seen < final, f"version {seen} when killing; output {out!r} {err!r}"
    assert caught_writing or not mid_transaction, "never saw the sync inside a write transaction"
    return seen


def assert_whole_version(m: Mirror, sizes: dict[int, int]):
    """The mirror holds exactly versions 1..f.version: rows, tiles and head agree with that version's seal."""
    f = m.get(NAME)
    assert m.audit(NAME) == []
    assert f.applied_size == sizes[f.version]
    assert f.count == f.version * ADDS_PER_VERSION
    last = f.applied_size - 1
    width = f.applied_size - (last // 256) * 256
    bundle = TileStore(m.conn, f.id).get(-1, last // 256, width)
    seal = E.decode(parse_bundle(bundle, width)[-1])
    assert isinstance(seal, E.Seal)
    assert (seal.version, seal.count, seal.digest) == (f.version, f.count, f.digest)
    versions = m.conn.execute("SELECT version FROM versions WHERE feed=? ORDER BY version", (f.id,)).fetchall()
    assert [v for (v,) in versions] == list(range(1, f.version + 1))
    assert m.conn.execute("SELECT max(added_version) FROM hashes WHERE feed=?", (f.id,)).fetchone()[0] == f.version


async def test_sigkill_mid_sync_resumes_from_last_whole_version(slow_feed, make_mirror):
    """Killed while applying a version (write lock held): that version is not there at all."""
    pub, url, slow, sizes = slow_feed
    db = make_mirror("killed.db", feed_url(url)).path  # the subprocess uses its own connection

    killed_at = await run_and_kill(db, 2, VERSIONS, mid_transaction=True)

    m = Mirror(db)
    try:
        assert_whole_version(m, sizes)
        f = m.get(NAME)
        assert f.version >= killed_at  # it may have applied more before the signal landed
        resume_from = f.applied_size

        slow.log.clear()
        r = await sync(m, timeout=30)
        assert (r.old_version, r.old_size) == (f.version, resume_from)  # resumed, not restarted
        assert (r.version, r.size) == (VERSIONS, sizes[VERSIONS])
        first = int(slow.log[0].rsplit("/", 1)[-1].split(".")[0])
        assert first == resume_from // 256, slow.log[:3]
        assert len(slow.log) == (sizes[VERSIONS] - 1) // 256 - resume_from // 256 + 1
        assert_matches_publisher(m, pub)

        slow.enabled = False
        ref = make_mirror("oneshot.db", feed_url(url))
        await sync(ref)
        assert snapshot(m, with_times=False) == snapshot(ref, with_times=False)
    finally:
        m.close()


async def test_two_kills_then_resume(slow_feed, make_mirror):
    """Killed between versions, resumed in a new process and killed again
    mid-transaction: still whole, still resumable."""
    pub, url, slow, sizes = slow_feed
    db = make_mirror("killed.db", feed_url(url)).path

    first = await run_and_kill(db, 2, VERSIONS)
    second = await run_and_kill(db, first + 2, VERSIONS, mid_transaction=True)
    assert second > first

    m = Mirror(db)
    try:
        assert_whole_version(m, sizes)
        r = await sync(m, timeout=30)
        assert r.old_version >= second and r.version == VERSIONS
        assert_matches_publisher(m, pub)
        slow.enabled = False
        ref = make_mirror("oneshot.db", feed_url(url))
        await sync(ref)
        assert snapshot(m, with_times=False) == snapshot(ref, with_times=False)
    finally:
        m.close()
