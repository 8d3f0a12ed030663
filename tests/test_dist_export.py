"""Static export, served for real by nginx on loopback, and mirrors syncing through it."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from dist_fixtures import BOUND, bounded, feed, follow, snapshot  # noqa: F401
from federation.errors import InputError
from system_tools import require_system_tool
from federation.export import export_feed
from federation.layout import tile_path
from federation.push import watch_feed
from federation.sync import sync_once

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    gzip on;
    gzip_types application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location ~ /checkpoint$ {{
            default_type "text/plain; charset=utf-8";
            add_header Cache-Control "no-cache";
        }}
        location ~ /tile/ {{
            default_type application/octet-stream;
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nginx(tmp_path):
    """nginx serving tmp_path/www on 127.0.0.1:<free port>; yields the base URL."""
    require_system_tool(NGINX is not None, "nginx", "apt-get install -y nginx-light")
    root = tmp_path / "www"
    root.mkdir()
    for attempt in range(5):  # the free port can be taken between probe and bind
        port = _free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp_path, port=port, root=root))
        proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)  # waiting on another process's bind; no event to await
        if proc.poll() is None:
            break
    else:
        pytest.fail(f"nginx did not start: {(tmp_path / 'nginx-error.log').read_text()}")
    yield f"http://127.0.0.1:{port}", root
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _get(url: str):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.get(url) as r:
            return r.status, await r.read(), dict(r.headers)


async def test_mirror_syncs_through_nginx_serving_an_export(tmp_path, feed, nginx):
    base, root = nginx
    out = root / "feeds" / "tid"
    feed.publish_version(600)  # more than two full tiles and bundles
    r1 = export_feed(feed.path, "tid", out)
    assert r1.written > 4 and r1.checkpoint_changed and r1.size == feed.pub.feed("tid").size
    status, body, headers = await _get(f"{base}/feeds/tid/checkpoint")
    assert status == 200 and body == feed.checkpoint() and headers["Content-Type"].startswith("text/plain")
    m = follow(tmp_path / "m.db", feed, [f"{base}/feeds/tid/"])
    res = await bounded(sync_once(m, "tid"))
    assert res.version == 1 and m.audit("tid") == []

    # Incremental: a withdrawal and a small batch write only new files.
    feed.withdraw_case("case-1")
    feed.publish_version(3)
    r2 = export_feed(feed.path, "tid", out)
    assert 0 < r2.written < 10 and r2.skipped >= r1.written - 3
    again = export_feed(feed.path, "tid", out)
    assert again.written == 0 and not again.checkpoint_changed
    res = await bounded(sync_once(m, "tid"))
    head = feed.pub.feed("tid")
    f = m.get("tid")
    assert (res.version, f.count, f.digest) == (3, head.count, head.digest) and m.audit("tid") == []
    # Every exported file is byte-identical to what the publisher's server would serve.
    for level, idx, width, data in feed.pub.conn.execute("SELECT level, idx, width, data FROM tiles"):
        status, body, _ = await _get(f"{base}/feeds/tid/{tile_path(level, idx, width)}")
        assert status == 200 and body == data
    assert not list(out.rglob(".tmp-*"))


async def test_follower_polls_a_static_host(tmp_path, feed, nginx):
    """nginx ignores ?wait: the follower notices and falls back to polling."""
    base, root = nginx
    out = root / "feeds" / "tid"
    export_feed(feed.path, "tid", out)
    m = follow(tmp_path / "m.db", feed, [f"{base}/feeds/tid/"])
    changed: asyncio.Queue = asyncio.Queue()
    task = asyncio.create_task(watch_feed(m, "tid", [f"{base}/feeds/tid/"], wait=20, interval=0.2,
                                          on_change=changed.put_nowait))
    try:
        r = feed.publish_version()
        export_feed(feed.path, "tid", out)
        assert (await bounded(changed.get())).size == r.size
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_mirror_behind_a_stale_export_is_not_rolled_back(tmp_path, feed, nginx):
    base, root = nginx
    out = root / "feeds" / "tid"
    feed.publish_version()
    export_feed(feed.path, "tid", out)
    old = (out / "checkpoint").read_bytes()
    feed.publish_version()
    export_feed(feed.path, "tid", out)
    m = follow(tmp_path / "m.db", feed, [f"{base}/feeds/tid/"])
    await bounded(sync_once(m, "tid"))
    before = snapshot(m, "tid")
    (out / "checkpoint").write_bytes(old)  # a CDN serving an old copy
    with pytest.raises(Exception) as e:
        await bounded(sync_once(m, "tid"))
    assert getattr(e.value, "kind", None) == "rollback" and snapshot(m, "tid") == before


def test_export_refuses_to_roll_back_and_writes_checkpoint_last(tmp_path, feed, monkeypatch):
    out = tmp_path / "out"
    feed.publish_version()
    export_feed(feed.path, "tid", out)
    newer = feed.pub.feed("tid")
    # Another export (of a newer copy) already wrote a bigger tree: refuse to go back.
    other = tmp_path / "other"
    feed.publish_version()
    export_feed(feed.path, "tid", other)
    shutil.copy(other / "checkpoint", out / "checkpoint")
    older_db = tmp_path / "older.db"
    src = sqlite3.connect(feed.path)
    dst = sqlite3.connect(older_db)
    src.backup(dst)
    dst.execute("UPDATE feeds SET checkpoint=?, size=? WHERE name='tid'", (newer.checkpoint, newer.size))
    dst.commit()
    dst.close()
    src.close()
    with pytest.raises(InputError, match="roll back"):
        export_feed(older_db, "tid", out)
    # Checkpoint last: if writing fails part-way, the old checkpoint stays.
    import federation.export as X
    feed.publish_version()
    calls = []
    real = X.write_atomic

    def failing(path, data, fsync=True):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError("disk full")
        real(path, data, fsync)

    monkeypatch.setattr(X, "write_atomic", failing)
    with pytest.raises(OSError):
        export_feed(feed.path, "tid", other)
    monkeypatch.undo()
    assert "checkpoint" not in calls
    from federation.push import checkpoint_size
    assert checkpoint_size((other / "checkpoint").read_bytes()) < feed.pub.feed("tid").size
    with pytest.raises(InputError):
        export_feed(feed.path, "nope", out)
