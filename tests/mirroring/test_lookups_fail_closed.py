"""Fail closed (issue 10, section 1): a matcher never answers from a mirror it
cannot stand behind -- a missing home, an empty mirror, a feed never synced, a
last sync that failed verification, a relay that rolled back, a fork found
before an upgrade -- and every answer says what it is based on.

Real parts throughout: publishers with keys generated here, servers on
127.0.0.1, mirrors in SQLite files under tmp_path, and the CLI as a user runs
it (``python -m federation`` in a subprocess, run off the event loop so the
test's servers keep answering).
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from federation.net.server import PublisherSource, create_app
from federation.node.home import Home
from federation.platform.node import PlatformNode
from federation.store.mirror import Mirror
from federation.sync.orchestrator import sync_once

from support.clearinghouse import Clearinghouse, DAY, MD5, NAME, ORIGIN, acli, cli, follow
from support.feeds import make_feed
from support.loopback import Servers, bounded, start_app

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def serve_feed():
    runners = []

    async def serve(db: Path) -> str:
        runner, url = await start_app(create_app([PublisherSource(db)]))
        runners.append(runner)
        return f"{url}/feeds/{NAME}/"

    yield serve
    for r in reversed(runners):
        await r.cleanup()


# ---- 1. a matcher never answers from a mirror it cannot stand behind ------------------


@pytest.mark.parametrize("args", [
    ("lookup", "md5", MD5),
    ("lookup", "md5", MD5, "--json"),
    ("platform", "lookup", "md5", MD5),
    ("status",),
    ("verify",),
    ("changes", NAME),
    ("platform", "changes", "--after", "0"),
    ("feed", "list"),
    ("token", "list"),
    ("audit",),
    ("platform", "webhook", "list"),
    ("sync",),
    ("node", "status", "--offline", "CONFIG"),
])
def test_read_only_commands_on_a_missing_home_exit_5_and_create_nothing(tmp_path, args):
    home = tmp_path / "typo"
    if args[-1] == "CONFIG":
        config = tmp_path / "node.toml"
        config.write_text('[node]\nhome = "typo"\n')
        args = (*args[:-1], str(config))
    r = cli(home, *args)
    assert r.returncode == 5, (r.returncode, r.stdout, r.stderr)
    assert "unavailable" in r.stderr and str(home) in r.stderr
    assert "no match" not in r.stdout
    assert not home.exists(), "a read-only command created the home"


def test_lookup_fails_closed_on_an_empty_mirror_and_a_never_synced_feed(tmp_path):
    home = tmp_path / "platform"
    Mirror(home / "mirror.db").close()  # a mirror that follows no feed
    r = cli(home, "lookup", "md5", MD5)
    assert r.returncode == 5 and "follows no feed" in r.stderr, r.stderr
    follow(home, "http://127.0.0.1:9/feeds/tid/", parse_vkey_str())
    r = cli(home, "lookup", "md5", MD5, "--json")
    assert r.returncode == 5
    body = json.loads(r.stdout)
    assert body["kind"] == "unavailable" and [(f["feed"], f["problem"]) for f in body["feeds"]] == \
        [(NAME, "never_synced")]
    # --allow-stale never answers from a feed nothing was ever verified for
    assert cli(home, "lookup", "md5", MD5, "--allow-stale").returncode == 5


def parse_vkey_str() -> str:
    from federation.core.note import Signer
    return Signer.generate(ORIGIN).vkey


async def test_every_answer_says_what_it_is_based_on(tmp_path, serve_feed):
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5])
    url = await serve_feed(ch.home.publisher_db)
    home = tmp_path / "platform"
    follow(home, url, ch.vkey)
    assert (await acli(home, "sync")).returncode == 0
    r = await acli(home, "lookup", "md5", MD5)
    assert r.returncode == 0
    assert "MATCH feed=tid case=c-17" in r.stdout
    assert f"based on {NAME}: version 1 (size 2), as of " in r.stdout and " s ago" in r.stdout
    r = await acli(home, "lookup", "md5", "00" * 16, "--json")
    body = json.loads(r.stdout)
    assert r.returncode == 1 and body["matched"] is False
    (basis,) = body["based_on"]
    assert (basis["feed"], basis["version"], basis["size"], basis["ready"], basis["max_age"]) == \
        (NAME, 1, 2, True, DAY)
    assert 0 <= basis["age"] < 60
    r = await acli(home, "platform", "lookup", "md5", MD5)
    assert r.returncode == 0 and f"based on {NAME}: version 1" in r.stdout


async def test_a_feed_whose_last_sync_failed_verification_fails_lookups(tmp_path, serve_feed):
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5])
    url = await serve_feed(ch.home.publisher_db)
    home = tmp_path / "platform"
    follow(home, url, ch.vkey)
    assert (await acli(home, "sync")).returncode == 0
    # the upstream now serves a checkpoint no trusted key signed (as a hostile relay would)
    m = Mirror(home / "mirror.db")
    m.conn.execute("UPDATE follows SET vkeys=? WHERE name=?", (parse_vkey_str(), NAME))
    m.close()
    sync = await acli(home, "sync")
    assert sync.returncode == 1 and "error (signature)" in sync.stderr
    r = await acli(home, "lookup", "md5", MD5)
    assert r.returncode == 5 and "failed" in r.stderr and "signature" in r.stderr and "--allow-stale" in r.stderr
    assert "MATCH" not in r.stdout
    # knowingly: the last verified version still answers, and says it is based on a failed feed
    r = await acli(home, "lookup", "md5", MD5, "--allow-stale", "--json")
    body = json.loads(r.stdout)
    assert r.returncode == 0 and body["matched"]
    assert [(b["feed"], b["ready"], b["problem"]) for b in body["based_on"]] == [(NAME, False, "failed")]
    # doctor says what sync said
    doctor = await acli(home, "doctor", "--no-network")
    assert doctor.returncode == 1 and f"FAIL feed {NAME} lookups: failed" in doctor.stdout
    # a good sync makes it ready again
    m = Mirror(home / "mirror.db")
    m.conn.execute("UPDATE follows SET vkeys=? WHERE name=?", (ch.vkey, NAME))
    m.close()
    assert (await acli(home, "sync")).returncode == 0
    assert (await acli(home, "lookup", "md5", MD5)).returncode == 0


async def test_http_lookups_answer_503_with_the_reason_and_allow_stale_opts_in(tmp_path, serve_feed):
    ch = Clearinghouse(tmp_path / "ch")
    old = int(time.time()) - 2 * DAY
    ch.publish([MD5], when=old)  # published two days ago, never refreshed since
    mirror_db = tmp_path / "platform" / "mirror.db"
    m = Mirror(mirror_db)
    m.follow(NAME, ORIGIN, [ch.vkey], [await serve_feed(ch.home.publisher_db)])
    with pytest.raises(Exception) as failure:
        await sync_once(m, NAME)
    assert getattr(failure.value, "kind", None) == "stale"
    assert m.get(NAME).version == 1, "what verified was applied (a withdrawal must still land)"
    node = PlatformNode(mirror_db, tmp_path / "platform" / "platform.db")
    runner, base = await start_app(node.app)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/lookup/md5/{MD5}") as r:
                body = await r.json()
                assert r.status == 503 and body["kind"] == "unavailable"
                assert [(f["feed"], f["problem"]) for f in body["feeds"]] == [(NAME, "stale")]
                assert "over the maximum age of 86400 s" in body["error"]
            async with s.post(f"{base}/lookup", json={"queries": [{"type": "md5", "hash": MD5}]}) as r:
                assert r.status == 503
            async with s.get(f"{base}/lookup/md5/{MD5}?allow_stale=true") as r:
                body = await r.json()
                assert r.status == 200 and body["matched"]
                assert body["based_on"][0]["problem"] == "stale" and body["based_on"][0]["age"] >= 2 * DAY
            async with s.get(f"{base}/lookup/md5/{MD5}?allow_stale=maybe") as r:
                assert r.status == 400
            async with s.get(f"{base}/lookup/md5/{MD5}?feed=nope") as r:
                assert r.status == 400 and "not following" in (await r.json())["error"]
    finally:
        await runner.cleanup()
        m.close()


# ---- 2. freshness by default, not only with witnesses ----------------------------------


# ---- the doctor checks what sync checks -------------------------------------------------


def _frozen_copy(feed, path: Path) -> Path:
    """The publisher database as it is now: served, a relay stuck at this tree."""
    import shutil
    feed.pub.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(feed.path, path)
    return path


@pytest.mark.timeout(120)
async def test_a_node_follower_fails_lookups_closed_after_a_relay_rolls_back_like_sync_does(tmp_path):
    from support.loopback import closed_port
    from federation.store.mirror import Mirror
    from federation.node.config import parse_config
    from federation.node.assembly import build_app
    from federation.net.server import PublisherSource, create_app
    from federation.sync.orchestrator import sync_once
    feed = make_feed(tmp_path / "pub.db", "tid", access="public")
    feed.publish_version()
    old = _frozen_copy(feed, tmp_path / "old.db")  # a relay stuck at version 1
    feed.publish_version()
    home = Home(tmp_path / "platform")
    servers = Servers()
    try:
        live = await servers.start(create_app([PublisherSource(feed.path)])) + "/feeds/tid/"
        stuck = await servers.start(create_app([PublisherSource(old)])) + "/feeds/tid/"
        dead = f"http://127.0.0.1:{closed_port()}/feeds/tid/"
        m = Mirror(home.mirror_db)
        m.follow("tid", feed.origin, [feed.signer.vkey], [live])
        await bounded(sync_once(m, "tid"))
        assert m.get("tid").version == 2
        # 'federation sync' from [rolled-back relay, dead origin]: the rollback is what counts
        m.conn.execute("UPDATE follows SET urls=? WHERE name='tid'", (f"{stuck}\n{dead}",))
        m.close()
        r = await asyncio.to_thread(cli, home.root, "sync")
        assert r.returncode == 1 and "rollback" in r.stderr, r.stderr
        lookup = await asyncio.to_thread(cli, home.root, "lookup", "md5", "00" * 16)
        assert lookup.returncode == 5 and "rollback" in lookup.stderr, lookup.stderr
        # a good sync: ready again
        m = Mirror(home.mirror_db)
        m.conn.execute("UPDATE follows SET urls=? WHERE name='tid'", (live,))
        m.close()
        assert (await asyncio.to_thread(cli, home.root, "sync")).returncode == 0
        assert (await asyncio.to_thread(cli, home.root, "lookup", "md5", "00" * 16)).returncode == 1
        # The same upstreams, followed by a 'serve --config' node: the same verdict is expected.
        cfg = parse_config(f'[node]\nlisten = "127.0.0.1:0"\n\n[[follow]]\nname = "tid"\norigin = "{feed.origin}"\n'
                           f'vkeys = ["{feed.signer.vkey}"]\nurls = ["{stuck}", "{dead}"]\ninterval = 60\nwait = 1\n')
        await servers.start(build_app(cfg, home))
        m = Mirror(home.mirror_db)
        try:
            for _ in range(200):
                if m.get("tid").last_error:
                    break
                await asyncio.sleep(0.05)
            assert "rollback" in m.get("tid").last_error
        finally:
            m.close()
        lookup = await asyncio.to_thread(cli, home.root, "lookup", "md5", "00" * 16)
        assert lookup.returncode == 5 and "rollback" in lookup.stderr, (lookup.returncode, lookup.stdout)
    finally:
        await servers.close()
        feed.pub.close()


@pytest.mark.timeout(120)
async def test_an_old_mirror_whose_last_sync_found_a_fork_stays_closed_after_the_upgrade(tmp_path):
    from federation.store.mirror import Mirror
    from federation.net.server import PublisherSource, create_app
    from federation.sync.orchestrator import sync_once
    feed = make_feed(tmp_path / "pub.db", "tid", access="public")
    feed.publish_version()
    home = Home(tmp_path / "platform")
    servers = Servers()
    try:
        url = await servers.start(create_app([PublisherSource(feed.path)])) + "/feeds/tid/"
        m = Mirror(home.mirror_db)
        m.follow("tid", feed.origin, [feed.signer.vkey], [url])
        await bounded(sync_once(m, "tid"))
        # The mirror as the release before this one left it: no freshness columns, and
        # its last sync failed as a whole, recorded as "<kind>: <message>" in last_error
        # (that release's sync.sync_once).
        for column in ("sync_failed", "fresh_time", "max_age"):
            m.conn.execute(f"ALTER TABLE follows DROP COLUMN {column}")
        m.conn.execute("UPDATE follows SET last_error=? WHERE name='tid'",
                       (f"fork: feed tid: {url}checkpoint is a different tree of the same size (split view)",))
        m.close()
    finally:
        await servers.close()
        feed.pub.close()
    r = await asyncio.to_thread(cli, home.root, "lookup", "md5", "00" * 16)
    assert r.returncode == 5 and "fork" in r.stderr, (r.returncode, r.stdout, r.stderr)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args", [
    ("verify", "tid", "--against", "http://127.0.0.1:9/feeds/tid/"),
    ("snapshot", "list", "tid"),
])
def test_more_read_only_commands_on_a_missing_home_exit_5_and_create_nothing(tmp_path, args):
    home = tmp_path / "typo"
    r = cli(home, *args)
    assert not home.exists(), f"{args[0]} created {sorted(p.name for p in home.iterdir())} in {home}"
    assert r.returncode == 5 and "unavailable" in r.stderr, (r.returncode, r.stderr)


@pytest.mark.timeout(120)
def test_bootstrap_on_a_missing_home_exits_5_and_creates_nothing(tmp_path):
    """Next to finding 12's read-only commands: 'bootstrap' of a followed feed
    on a typo'd --home fails closed like 'sync', instead of creating a home
    and an empty mirror only to say it follows no such feed."""
    home = tmp_path / "typo"
    r = cli(home, "bootstrap", "tid")
    assert not home.exists(), sorted(p.name for p in home.iterdir())
    assert r.returncode == 5 and "unavailable" in r.stderr, (r.returncode, r.stderr)
