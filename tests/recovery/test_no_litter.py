"""Kills leave no litter (issue 15, item 5).

A command killed between writing a temporary file and renaming it into
place leaves the file behind. The next run of the same command removes
what killed runs left -- and only that: not a temporary file another live
process holds (``store.tempfiles``: its writer's ``flock``), not a file
that merely looks similar.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys

import pytest
from aiohttp import web

from federation.net.server import PublisherSource, create_app
from federation.net.snapshots import server_extension

from support.disk import acli, batch

pytestmark = pytest.mark.timeout(120)


class HalfSnapshot:
    """Middleware: a snapshot download sends half the file, then stalls."""

    def __init__(self, snapshots):
        self.snapshots = snapshots
        self.stall = True

    @web.middleware
    async def middleware(self, request, handler):
        name = request.path.rsplit("/", 1)[-1]
        if "/snapshot/" not in request.path or name == "index" or not self.stall:
            return await handler(request)
        (path,) = self.snapshots.rglob(f"{name}.snap")
        data = path.read_bytes()
        resp = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        await asyncio.sleep(60)  # the test kills the downloader long before
        return resp


def _held(path):
    """A temporary file another live process holds: its writer's lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


async def test_a_bootstrap_killed_mid_download_leaves_a_file_the_next_sync_removes(node, tmp_path, serve):
    await acli(node.pub, "publish", "tid", str(batch(tmp_path / "v1.csv", 20000, "c1")))
    await acli(node.pub, "snapshot", "write", "tid", "--no-compress")
    half = HalfSnapshot(node.pub / "snapshots")
    db = node.pub / "publisher.db"
    app = create_app([PublisherSource(db)], extensions=[server_extension(db)])
    app.middlewares.append(half.middleware)
    url = await serve(app) + "/feeds/tid/"
    home = tmp_path / "fresh"
    await acli(home, "follow", "tid", "--url", url, "--origin", "127.0.0.1/feeds/tid", "--vkey", node.vkey)
    proc = subprocess.Popen([sys.executable, "-m", "federation", "sync"], env=dict(os.environ, FEDERATION_HOME=str(home)),
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "sync.err", "w"))
    try:
        for _ in range(600):  # 30 s
            partial = [p for p in home.glob(".snapshot-*.tmp") if p.stat().st_size > 0]
            if partial:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the download never started: " + (tmp_path / "sync.err").read_text()
                                 + str(list(home.iterdir())))
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
    assert partial[0].exists()  # the litter a kill leaves
    other = home / ".snapshot-live.tmp"  # another sync's download, in progress
    fd = _held(other)
    lookalike = home / ".snapshot-notes.txt"
    lookalike.write_text("an operator's file")
    killed_heal = home / ".heal-abc123"  # a heal's working copy, its process killed
    killed_heal.mkdir()
    (killed_heal / ".lock").touch()
    (killed_heal / "mirror.db").write_bytes(b"partial copy")
    try:
        half.stall = False
        out = (await acli(home, "sync")).stdout
        assert "version 0 -> 1" in out
        assert not partial[0].exists() and not killed_heal.exists()
        assert other.exists() and lookalike.exists()
    finally:
        os.close(fd)
    assert "ok (version 1" in (await acli(home, "verify")).stdout


async def test_export_and_snapshot_remove_what_killed_runs_left_and_only_that(node, tmp_path):
    await acli(node.pub, "publish", "tid", str(batch(tmp_path / "v1.csv", 10, "c1")))
    out = tmp_path / "static"
    await acli(node.pub, "export", str(out), "tid")
    first = (await acli(node.pub, "snapshot", "write", "tid")).stdout.split()[-1]
    snapdir = next((node.pub / "snapshots").iterdir())
    # What kills between write and rename left, what live writers hold, and look-alikes.
    killed = [out / "tid" / ".tmp-abc123", out / "tid" / "tile" / ".tmp-def456", snapdir / ".snapshot-x1.tmp",
              snapdir / "tmpold.tmp"]
    for p in killed:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    live = [out / "tid" / ".tmp-live", snapdir / ".snapshot-live.tmp"]
    fds = [_held(p) for p in live]
    keep = [out / "tid" / "tmp-not-ours", snapdir / f"{first}.snap"]
    keep[0].write_text("x")
    try:
        await acli(node.pub, "publish", "tid", str(batch(tmp_path / "v2.csv", 10, "c2")))
        await acli(node.pub, "export", str(out), "tid")
        await acli(node.pub, "snapshot", "write", "tid")
        assert [p for p in killed if p.exists()] == []
        assert all(p.exists() for p in live + keep)
    finally:
        for fd in fds:
            os.close(fd)
