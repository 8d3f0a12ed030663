"""Static export, served for real by nginx on loopback, and mirrors syncing through it."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.errors import InputError, StorageError
from federation.core.layout import tile_path
from federation.core.note import Cosigner, Signer
from federation.net.export import export_feed
from federation.net.server import PublisherSource, create_app
from federation.store.snapshots import prune, write_snapshot
from federation.sync.follower import watch_feed
from federation.sync.orchestrator import sync_once
from federation.trust.rotation import publish_trust

from support.feeds import follow, make_feed, snapshot
from support.loopback import BOUND, Servers, bounded
from support.system_tools import require_system_tool
from support.trust_world import trust_bytes

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
        location ~ /(snapshot/index|trust/latest)$ {{
            default_type text/plain;
            add_header Cache-Control "no-cache";
        }}
        location ~ /(snapshot|trust)/ {{
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
    import federation.net.export as X
    feed.publish_version()
    calls = []
    real = X.write_atomic

    def failing(path, data, fsync=True):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError("disk full")
        real(path, data, fsync)

    monkeypatch.setattr(X, "write_atomic", failing)
    with pytest.raises(StorageError, match="disk full"):  # the disk's error, as ours (one error line)
        export_feed(feed.path, "tid", other)
    monkeypatch.undo()
    assert "checkpoint" not in calls
    from federation.core.checkpoint import checkpoint_size
    assert checkpoint_size((other / "checkpoint").read_bytes()) < feed.pub.feed("tid").size
    with pytest.raises(InputError):
        export_feed(feed.path, "nope", out)


# ---- access: a static directory has no access control ------------------------------------


def cli_run(home, *args, code=0) -> str:
    r = CliRunner().invoke(cli, ["--home", str(home), *args])
    assert r.exit_code == code, (args, r.output, r.exception)
    return r.output  # stdout and stderr


NCII_HASH = "ab" * 16  # md5 of the members-only feed: must never appear in the public directory


def _home_with_two_feeds(tmp_path) -> Path:
    home = tmp_path / "clearinghouse"
    cli_run(home, "feed", "create", "ncii", "--origin", "clearinghouse.example/feeds/ncii")
    cli_run(home, "feed", "create", "tid", "--origin", "clearinghouse.example/feeds/tid", "--access", "public")
    batch = tmp_path / "b.csv"
    for name, value in (("ncii", NCII_HASH), ("tid", "cd" * 16)):
        batch.write_text(f"op,type,hash,case\nadd,md5,{value},c-1\n")
        cli_run(home, "publish", name, str(batch))
    return home


def _holds(root: Path, value: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and value in p.read_bytes()]


async def test_export_leaves_members_only_feeds_out_of_the_public_directory(tmp_path, nginx):
    base, root = nginx
    home = _home_with_two_feeds(tmp_path)
    out = root / "feeds"
    said = cli_run(home, "export", str(out))
    assert "ncii: not exported: members-only" in said and "tid: size" in said
    assert sorted(p.name for p in out.iterdir()) == ["tid"] and not _holds(root, bytes.fromhex(NCII_HASH))
    assert (await _get(f"{base}/feeds/ncii/checkpoint"))[0] == 404
    assert (await _get(f"{base}/feeds/tid/checkpoint"))[0] == 200
    # Named: refused, nothing written.
    assert "members-only" in cli_run(home, "export", str(tmp_path / "named"), "ncii", code=2)
    assert not (tmp_path / "named").exists()
    # Told explicitly: written, and it says what and where.
    private = tmp_path / "members-only"
    said = cli_run(home, "export", str(private), "ncii", "--include-members-only")
    assert f"MEMBERS-ONLY feed written in the clear to {private / 'ncii'}/" in said
    assert (private / "ncii" / "checkpoint").exists() and _holds(private, bytes.fromhex(NCII_HASH))
    # A feed closed after it was exported: the copy left in the public directory is an error.
    cli_run(home, "feed", "set-access", "tid", "members")
    said = cli_run(home, "export", str(out), code=2)
    assert "tid: not exported" in said and "still in the export directory" in said
    with pytest.raises(InputError, match="members-only"):
        export_feed(home / "publisher.db", "tid", tmp_path / "lib")
    assert not (tmp_path / "lib").exists()


async def test_export_mirror_exports_only_feeds_its_config_declares_public(tmp_path):
    up = make_feed(tmp_path / "up.db", "tid", access="public")
    up_ncii = make_feed(tmp_path / "up.db", "ncii")
    up.publish_version()
    up_ncii.publish_version()
    servers = Servers()
    try:
        url = await servers.start(create_app([PublisherSource(tmp_path / "up.db")]))
        home = tmp_path / "relay"
        home.mkdir()
        for f in (up, up_ncii):
            m = follow(home / "mirror.db", f, [f"{url}/feeds/{f.name}/"])
            await bounded(sync_once(m, f.name))
            m.close()
    finally:
        await servers.close()
        up.pub.close()
        up_ncii.pub.close()
    config = tmp_path / "relay.toml"
    config.write_text(f'[node]\nhome = "relay"\n\n'
                      f'[[follow]]\nname = "tid"\norigin = "{up.origin}"\nvkeys = ["{up.signer.vkey}"]\n'
                      f'urls = ["{url}/feeds/tid/"]\nrelay = true\n\n'
                      f'[[follow]]\nname = "ncii"\norigin = "{up_ncii.origin}"\nvkeys = ["{up_ncii.signer.vkey}"]\n'
                      f'urls = ["{url}/feeds/ncii/"]\ntoken_env = "NCII_TOKEN"\n')
    out = tmp_path / "static"
    # No config: nothing says any followed feed may be public.
    said = cli_run(home, "export", "--mirror", str(out))
    assert "tid: not exported: access unknown without --config" in said and not out.exists()
    cli_run(home, "export", "--mirror", str(out), "tid", code=2)
    # The config declares tid public; ncii is fetched with a token, so members-only.
    said = cli_run(tmp_path / "elsewhere", "export", "--mirror", str(out), "--config", str(config))
    assert "ncii: not exported: members-only" in said and sorted(p.name for p in out.iterdir()) == ["tid"]
    cli_run(tmp_path / "elsewhere", "export", "--mirror", str(out), "ncii", "--config", str(config), code=2)
    cli_run(home, "export", str(out), "--config", str(config), code=2)  # --config is for followed feeds


# ---- pruning, snapshots and trust: a pruned feed followed from a static host from scratch -----


async def test_a_pruned_feed_is_followed_from_scratch_through_nginx(tmp_path, feed, nginx):
    base, root = nginx
    out = root / "feeds" / "tid"
    roots = [Signer.generate("clearinghouse.example/trust/root")]
    trust = trust_bytes([feed.signer], [Cosigner.generate("w.example")], roots, roots, quorum=1, threshold=1,
                        origin=feed.origin)
    publish_trust(feed.pub.conn, "tid", trust)
    feed.publish_version(600)
    feed.publish_version(5)
    first = export_feed(feed.path, "tid", out)  # before pruning: every bundle is there
    assert first.minimum_index == 0 and first.removed == 0 and first.trust_versions == 1
    early = out / tile_path(-1, 0)
    assert early.exists()
    ref = write_snapshot(feed.path, "tid", progress=False)
    feed.publish_version(5)
    minimum = prune(feed.path, "tid")
    assert minimum == ref.size == 607  # 600 + seal + 5 + seal
    r = export_feed(feed.path, "tid", out)
    # Bundles 0, 1, 2.p/89 (size 601) and 2.p/95 (607) end at or below 607; 2.p/101 (613) is the head's.
    assert r.minimum_index == minimum and r.removed == 4 and r.snapshots == 1
    assert not early.exists() and not (out / tile_path(-1, 2, 95)).exists() and (out / tile_path(-1, 2, 101)).exists()
    assert (await _get(f"{base}/feeds/tid/{tile_path(-1, 0)}"))[0] == 404
    status, body, _ = await _get(f"{base}/feeds/tid/snapshot/index")
    assert status == 200 and json.loads(body)["minimum_index"] == minimum
    assert json.loads(body)["snapshots"][0]["sha256"] == ref.sha256
    assert (await _get(f"{base}/feeds/tid/trust/latest"))[1] == trust == (await _get(f"{base}/feeds/tid/trust/1"))[1]
    # A fresh mirror bootstraps from the static host's snapshot and follows the log on from it.
    m = follow(tmp_path / "fresh.db", feed, [f"{base}/feeds/tid/"])
    res = await bounded(sync_once(m, "tid"))
    head = feed.pub.feed("tid")
    f = m.get("tid")
    assert f.base_size == ref.size and (res.version, f.count, f.digest) == (head.version, head.count, head.digest)
    assert m.audit("tid") == []
    # Snapshot at the head and prune to it: the partial bundle of the size stays in the
    # database (the next publish extends it) but is pruned from the export, as the server's 410.
    ref2 = write_snapshot(feed.path, "tid", progress=False)
    assert prune(feed.path, "tid") == ref2.size == head.size
    r = export_feed(feed.path, "tid", out)
    partial = out / tile_path(-1, head.size // 256, head.size % 256)
    assert r.removed == 1 and not partial.exists() and r.snapshots == 2
    m2 = follow(tmp_path / "fresh2.db", feed, [f"{base}/feeds/tid/"])
    await bounded(sync_once(m2, "tid"))
    assert m2.get("tid").base_size == head.size and m2.get("tid").digest == head.digest and m2.audit("tid") == []
    again = export_feed(feed.path, "tid", out)
    assert (again.written, again.removed, again.checkpoint_changed) == (0, 0, False)
