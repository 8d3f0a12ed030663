"""Fail closed (issue 10, sections 1 and 2): a matcher never answers from a
mirror it cannot stand behind, and every feed has freshness without witnesses.

Real parts throughout: publishers with keys generated here, servers on
127.0.0.1, mirrors in SQLite files under tmp_path, and the CLI as a user runs
it (``python -m federation`` in a subprocess, run off the event loop so the
test's servers keep answering).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from helpers_tamper import start_app

from federation.node.doctor import FAIL, OK, run_doctor
from federation.core.entries import Add
from federation.core.freshness import log_timestamp
from federation.node.home import Home
from federation.node.keys import write_new_key
from federation.store.mirror import Mirror
from federation.node.config import parse_config
from federation.node.assembly import build_app
from federation.core.note import parse_vkey
from federation.platform.node import PlatformNode
from federation.store.publisher import Publisher
from federation.net.server import PublisherSource, create_app
from federation.sync.orchestrator import sync_once

pytestmark = pytest.mark.timeout(90)

NAME = "tid"
ORIGIN = "clearinghouse.test/feeds/tid"
MD5 = "9e107d9d372bb6826bd81d3542a419d6"
DAY = 86400


def cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, FEDERATION_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "federation", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


async def acli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(cli, home, *args)


class Clearinghouse:
    """A publisher home made by the CLI (key in HOME/private), served on loopback."""

    def __init__(self, root: Path):
        self.home = Home(root)
        out = cli(root, "feed", "create", NAME, "--origin", ORIGIN, "--access", "public")
        assert out.returncode == 0, out.stderr
        self.vkey = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("vkey:"))
        from federation.node.keys import load_signer
        self.signer = load_signer(self.home.key_path(NAME))

    def publish(self, hashes: list[str], case: str = "c-17", when: int | None = None):
        pub = Publisher(self.home.publisher_db)
        try:
            return pub.publish(NAME, [Add("md5", bytes.fromhex(h), case, ("csam",), 0) for h in hashes],
                               self.signer, now=when)
        finally:
            pub.close()

    def checkpoint(self) -> bytes:
        pub = Publisher(self.home.publisher_db)
        try:
            return pub.feed(NAME).checkpoint
        finally:
            pub.close()

    def frozen_copy(self, path: Path) -> Path:
        """A copy of the publisher database as it is now: served, it is a relay
        or CDN that keeps serving this checkpoint forever."""
        pub = Publisher(self.home.publisher_db)
        pub.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pub.close()
        shutil.copy(self.home.publisher_db, path)
        return path


@pytest.fixture
async def servers():
    runners = []

    async def serve(db: Path) -> str:
        runner, url = await start_app(create_app([PublisherSource(db)]))
        runners.append(runner)
        return f"{url}/feeds/{NAME}/"

    yield serve
    for r in reversed(runners):
        await r.cleanup()


def follow(home: Path, url: str, vkey: str, *extra: str) -> None:
    r = cli(home, "follow", NAME, "--url", url, "--origin", ORIGIN, "--vkey", vkey, *extra)
    assert r.returncode == 0, r.stderr


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


async def test_every_answer_says_what_it_is_based_on(tmp_path, servers):
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5])
    url = await servers(ch.home.publisher_db)
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


async def test_a_feed_whose_last_sync_failed_verification_fails_lookups(tmp_path, servers):
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5])
    url = await servers(ch.home.publisher_db)
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


async def test_http_lookups_answer_503_with_the_reason_and_allow_stale_opts_in(tmp_path, servers):
    ch = Clearinghouse(tmp_path / "ch")
    old = int(time.time()) - 2 * DAY
    ch.publish([MD5], when=old)  # published two days ago, never refreshed since
    mirror_db = tmp_path / "platform" / "mirror.db"
    m = Mirror(mirror_db)
    m.follow(NAME, ORIGIN, [ch.vkey], [await servers(ch.home.publisher_db)])
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


async def test_a_mirror_behind_a_frozen_relay_reports_stale_without_a_trust_file(tmp_path, servers):
    """The README's path (plain vkey, no trust file): a relay that keeps
    serving an old checkpoint freezes no mirror silently any more."""
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5], when=int(time.time()) - 3 * 3600)
    frozen = await servers(ch.frozen_copy(tmp_path / "frozen.db"))
    live = await servers(ch.home.publisher_db)
    assert (await acli(ch.home.root, "feed", "refresh")).returncode == 0  # the live publisher is alive

    behind = tmp_path / "behind-frozen"
    follow(behind, frozen, ch.vkey, "--max-age", "3600")
    r = await acli(behind, "sync")
    assert r.returncode == 1 and "error (stale)" in r.stderr and "frozen" in r.stderr, r.stderr
    r = await acli(behind, "lookup", "md5", MD5)
    assert r.returncode == 5 and "stale" in r.stderr
    assert json.loads((await acli(behind, "status", "--json")).stdout)["followed"][0]["problem"] == "stale"

    # with the origin as a fallback, the frozen relay is passed over (and reported)
    both = tmp_path / "with-fallback"
    r = cli(both, "follow", NAME, "--url", frozen, "--url", live, "--origin", ORIGIN, "--vkey", ch.vkey,
            "--max-age", "3600")
    assert r.returncode == 0
    assert (await acli(both, "sync")).returncode == 0
    assert (await acli(both, "lookup", "md5", MD5)).returncode == 0
    status = json.loads((await acli(both, "status", "--json")).stdout)["followed"][0]
    assert status["ready"] and "stale" in status["last_error"]


async def test_feed_refresh_keeps_a_quiet_feed_fresh_through_a_relay(tmp_path, servers):
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5], when=int(time.time()) - 2 * DAY)
    origin = await servers(ch.home.publisher_db)
    relay_home = Home(tmp_path / "relay")
    cfg = parse_config(f'[node]\nlisten = "127.0.0.1:0"\n\n[[follow]]\nname = "{NAME}"\norigin = "{ORIGIN}"\n'
                       f'vkeys = ["{ch.vkey}"]\nurls = ["{origin}"]\nrelay = true\ninterval = 0.2\nwait = 0.5\n'
                       f'max_age = {3 * DAY}\n')
    runner, relay = await start_app(build_app(cfg, relay_home))
    try:
        relayed = f"{relay}/feeds/{NAME}/"
        home = tmp_path / "platform"
        follow(home, relayed, ch.vkey)
        for _ in range(100):  # the relay's follower syncs on its own
            if (await acli(home, "sync")).returncode != 3:
                break
            await asyncio.sleep(0.1)
        assert (await acli(home, "lookup", "md5", MD5)).returncode == 5  # two days old: stale
        before = ch.checkpoint()
        r = await acli(ch.home.root, "feed", "refresh")
        assert r.returncode == 0 and f"{NAME}: checkpoint of size 2 re-stamped" in r.stdout
        after = ch.checkpoint()
        key = parse_vkey(ch.vkey)
        assert log_timestamp(after, [key], int(time.time()), DAY).time > log_timestamp(before, [key], int(time.time()), DAY).time
        # the relay re-serves the refreshed note unchanged (the same tree: nothing to apply)
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                async with s.get(relayed + "checkpoint") as resp:
                    if await resp.read() == after:
                        break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the relay never passed the refreshed checkpoint on")
        assert (await acli(home, "sync")).returncode == 0
        assert (await acli(home, "lookup", "md5", MD5)).returncode == 0
    finally:
        await runner.cleanup()


async def test_serve_refreshes_checkpoints_on_a_schedule(tmp_path):
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5], when=int(time.time()) - DAY)
    port = _free_port()
    env = dict(os.environ, FEDERATION_HOME=str(ch.home.root))
    proc = subprocess.Popen([sys.executable, "-m", "federation", "serve", "--port", str(port),
                             "--refresh-interval", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    key = parse_vkey(ch.vkey)
    try:
        seen = set()
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(seen) < 2:
                try:
                    async with s.get(f"http://127.0.0.1:{port}/feeds/{NAME}/checkpoint") as r:
                        stamp = log_timestamp(await r.read(), [key], int(time.time()), DAY).time
                        if stamp is not None and time.time() - stamp < 60:
                            seen.add(stamp)
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        assert len(seen) >= 2, "serve did not re-stamp the checkpoint at start-up and again a second later"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_feed_refresh_without_the_key_exits_2(tmp_path):
    ch = Clearinghouse(tmp_path / "ch")
    ch.home.key_path(NAME).rename(tmp_path / "elsewhere.key")
    r = cli(ch.home.root, "feed", "refresh")
    assert r.returncode == 2 and "not refreshed" in r.stderr


# ---- the doctor checks what sync checks -------------------------------------------------


async def test_doctor_fails_a_frozen_upstream_and_a_rolled_back_relay(tmp_path, servers):
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5])
    small = await servers(ch.frozen_copy(tmp_path / "v1.db"))  # serves size 2 forever
    ch.publish(["00" * 16], case="c-18")
    live = await servers(ch.home.publisher_db)
    home = Home(tmp_path / "platform")
    follow(home.root, live, ch.vkey)
    assert (await acli(home.root, "sync")).returncode == 0
    checks = await run_doctor(home, timeout=5)
    assert not [c for c in checks if c.status == FAIL], checks
    assert any(c.status == OK and c.what == f"feed {NAME} lookups" for c in checks)

    # a relay serving the older tree: sync calls it a rollback, so must the doctor
    m = Mirror(home.mirror_db)
    m.conn.execute("UPDATE follows SET urls=? WHERE name=?", (small, NAME))
    m.close()
    fails = [c for c in await run_doctor(home, timeout=5) if c.status == FAIL]
    assert any(c.what == f"feed {NAME} upstream" and "rollback" in c.detail for c in fails), fails

    # a frozen (old-stamped) upstream of the same tree, for a feed with a short maximum age,
    # an hour after the mirror last verified anything fresh (its fresh_time, which holds the
    # applied seal's time: sync counts it, and so does the doctor)
    m = Mirror(home.mirror_db)
    m.conn.execute("UPDATE follows SET urls=?, max_age=60, fresh_time=? WHERE name=?",
                   (live, int(time.time()) - 3600, NAME))
    m.close()
    pub = Publisher(ch.home.publisher_db)
    pub.refresh_timestamp(NAME, ch.signer, now=int(time.time()) - 3600)
    pub.close()
    fails = [c for c in await run_doctor(home, timeout=5) if c.status == FAIL]
    assert any(c.what == f"feed {NAME} upstream" and c.detail.split(": ", 1)[1].startswith("stale")
               for c in fails), fails
    r = await acli(home.root, "doctor")
    assert r.returncode == 1 and "stale" in r.stdout


def test_follow_records_its_maximum_age(tmp_path):
    home = tmp_path / "platform"
    follow(home, "http://127.0.0.1:9/feeds/tid/", parse_vkey_str(), "--max-age", "600")
    status = json.loads(cli(home, "status", "--json").stdout)["followed"][0]
    assert status["max_age"] == 600 and status["ready"] is False and status["problem"] == "never_synced"
    assert cli(home, "follow", "x", "--url", "http://127.0.0.1:9/", "--origin", "o.example/x", "--vkey",
               parse_vkey_str(), "--max-age", "0").returncode == 2


async def test_export_watch_refreshes_the_static_copy(tmp_path):
    """A static host cannot sign: 'export --watch' re-stamps where the key is,
    so mirrors of the static copy do not see a quiet feed as frozen."""
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5], when=int(time.time()) - DAY)
    out = tmp_path / "www"
    env = dict(os.environ, FEDERATION_HOME=str(ch.home.root))
    proc = subprocess.Popen([sys.executable, "-m", "federation", "export", str(out), "--watch", "--interval", "0.2",
                             "--refresh-interval", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    key = parse_vkey(ch.vkey)
    try:
        seen = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(seen) < 2:
            try:
                stamp = log_timestamp((out / NAME / "checkpoint").read_bytes(), [key], int(time.time()), DAY).time
            except FileNotFoundError:
                stamp = None
            if stamp is not None and time.time() - stamp < 60:
                seen.add(stamp)
            await asyncio.sleep(0.2)
        assert len(seen) >= 2, "export --watch did not keep re-stamping the exported checkpoint"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
