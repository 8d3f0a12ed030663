"""Freshness without witnesses (issue 10, section 2): a mirror behind a frozen
relay reports stale; ``feed refresh``, ``serve`` and ``export --watch`` re-sign
quiet feeds (wherever the feed's key is) and never call a served tree the
newest after a newer version was committed; ``doctor`` applies sync's rule;
a follow records its maximum age, and a mirror whose clock runs behind is
told to check it.

Real parts throughout: publishers with keys generated here, servers on
127.0.0.1, mirrors in SQLite files under tmp_path, and the CLI as a user runs
it (``python -m federation`` in a subprocess, run off the event loop so the
test's servers keep answering).
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from federation.core.freshness import log_timestamp
from federation.core.note import Cosigner, Signer, parse_vkey
from federation.net.server import PublisherSource, create_app
from federation.node.assembly import build_app
from federation.node.config import parse_config
from federation.node.doctor import FAIL, OK, run_doctor
from federation.node.home import Home
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher

from support.clearinghouse import Clearinghouse, DAY, MD5, NAME, ORIGIN, acli, cli, follow
from support.feeds import adds, make_feed
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


def parse_vkey_str() -> str:
    from federation.core.note import Signer
    return Signer.generate(ORIGIN).vkey


# ---- 2. freshness by default, not only with witnesses ----------------------------------


async def test_a_mirror_behind_a_frozen_relay_reports_stale_without_a_trust_file(tmp_path, serve_feed):
    """The README's path (plain vkey, no trust file): a relay that keeps
    serving an old checkpoint freezes no mirror silently any more."""
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5], when=int(time.time()) - 3 * 3600)
    frozen = await serve_feed(ch.frozen_copy(tmp_path / "frozen.db"))
    live = await serve_feed(ch.home.publisher_db)
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


async def test_feed_refresh_keeps_a_quiet_feed_fresh_through_a_relay(tmp_path, serve_feed):
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5], when=int(time.time()) - 2 * DAY)
    origin = await serve_feed(ch.home.publisher_db)
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


async def test_doctor_fails_a_frozen_upstream_and_a_rolled_back_relay(tmp_path, serve_feed):
    ch = Clearinghouse(tmp_path / "ch")
    ch.publish([MD5])
    small = await serve_feed(ch.frozen_copy(tmp_path / "v1.db"))  # serves size 2 forever
    ch.publish(["00" * 16], case="c-18")
    live = await serve_feed(ch.home.publisher_db)
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


@pytest.mark.timeout(120)
async def test_doctor_fails_an_upstream_whose_witness_quorum_sync_calls_stale(world, tmp_path):
    from support.feeds import NAME
    from federation.node.doctor import FAIL, OK, run_doctor
    from federation.core.errors import StaleError
    from federation.sync.orchestrator import sync_once
    two_hours_ago = int(time.time()) - 7200
    for w in world.witnesses:
        w.clock = lambda: time.time() - 7200
    world.pub.publish(NAME, adds(2), world.log_key, now=two_hours_ago)
    await world.cosign(now=two_hours_ago)  # the witnesses last cosigned two hours ago (max staleness: 1 h)
    world.pub.refresh_timestamp(NAME, world.log_key)  # the log's own timestamp is fresh
    (tmp_path / "platform").mkdir()
    m = world.mirror("platform/mirror.db")
    with pytest.raises(StaleError, match="over the maximum of 3600 s"):
        await bounded(sync_once(m, NAME))
    checks = await run_doctor(Home(tmp_path / "platform"), timeout=5)
    upstream = [c for c in checks if c.what == f"feed {NAME} upstream"]
    assert upstream and all(c.status == FAIL and "stale" in c.detail for c in upstream), upstream
    assert not [c for c in upstream if c.status == OK]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["created-with-key-elsewhere", "after-rotate-key"])
def test_a_feed_whose_key_is_not_home_private_name_key_can_be_refreshed(tmp_path, where):
    from federation.core.freshness import log_timestamp
    from federation.node.keys import load_signer
    from federation.core.note import parse_vkey
    from federation.store.publisher import Publisher
    home = tmp_path / "clearinghouse"
    batch = tmp_path / "b.csv"
    batch.write_text(f"op,type,hash,case\nadd,md5,{'ab' * 16},c-1\n")
    if where == "created-with-key-elsewhere":
        key = tmp_path / "offline" / "tid.key"
        assert cli(home, "feed", "create", "tid", "--key", str(key), "--access", "public").returncode == 0
        assert cli(home, "publish", "tid", str(batch), "--key", str(key)).returncode == 0
    else:  # the flow 'feed rotate-key --help' shows
        assert cli(home, "feed", "create", "tid", "--access", "public").returncode == 0
        assert cli(home, "publish", "tid", str(batch)).returncode == 0
        key = home / "private" / "tid-2.key"
        assert cli(home, "feed", "rotate-key", "tid", "--new-key", str(key)).returncode == 0
        assert cli(home, "publish", "tid", str(batch), "--key", str(key)).returncode == 0
    pub = Publisher(home / "publisher.db")
    pub.refresh_timestamp("tid", load_signer(key), now=int(time.time()) - 7200)  # stamped two hours ago
    pub.close()
    plain = cli(home, "feed", "refresh", "tid")
    with_key = cli(home, "feed", "refresh", "tid", "--key", str(key)) if plain.returncode else plain
    assert with_key.returncode == 0, (plain.stderr, with_key.stderr)
    pub = Publisher(home / "publisher.db")
    note = pub.feed("tid").checkpoint
    pub.close()
    stamp = log_timestamp(note, [parse_vkey(load_signer(key).vkey)], int(time.time()), 86400).time
    assert stamp is not None and stamp > time.time() - 60


class _ClockBehind:
    """``time`` as seen by a machine whose clock runs ``lag`` seconds behind."""

    def __init__(self, lag: int):
        self.lag = lag

    def time(self) -> float:
        return time.time() - self.lag

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.mark.timeout(120)
async def test_a_mirror_whose_clock_runs_behind_is_told_to_check_its_clock(tmp_path, monkeypatch):
    from federation.store import mirror as mirror_module
    from federation.sync import orchestrator as sync_module
    from federation.core.errors import StaleError
    from federation.store.mirror import Mirror
    from federation.net.server import PublisherSource, create_app
    feed = make_feed(tmp_path / "pub.db", "tid", access="public")
    feed.publish_version()
    servers = Servers()
    try:
        url = await servers.start(create_app([PublisherSource(feed.path)])) + "/feeds/tid/"
        m = Mirror(tmp_path / "mirror.db")
        m.follow("tid", feed.origin, [feed.signer.vkey], [url])
        monkeypatch.setattr(sync_module, "time", _ClockBehind(3600))
        monkeypatch.setattr(mirror_module, "time", _ClockBehind(3600))
        with pytest.raises(StaleError) as failure:
            await bounded(sync_module.sync_once(m, "tid"))
        message = str(failure.value)
        assert " d ago" not in message and "clock" in message, message
        assert m.get("tid").fresh_time != 0
        m.close()
    finally:
        await servers.close()
        feed.pub.close()


@pytest.mark.timeout(120)
def test_export_watch_re_stamps_at_start_whatever_the_machines_uptime(tmp_path):
    from federation.core.freshness import log_timestamp
    from federation.node.keys import load_signer
    from federation.core.note import parse_vkey
    from federation.store.publisher import Publisher
    home = tmp_path / "clearinghouse"
    assert cli(home, "feed", "create", "tid", "--access", "public").returncode == 0
    batch = tmp_path / "b.csv"
    batch.write_text(f"op,type,hash,case\nadd,md5,{'ab' * 16},c-1\n")
    assert cli(home, "publish", "tid", str(batch)).returncode == 0
    signer = load_signer(home / "private" / "tid.key")
    pub = Publisher(home / "publisher.db")
    pub.refresh_timestamp("tid", signer, now=int(time.time()) - 2 * 86400)  # quiet for two days
    pub.close()
    interval = int(time.monotonic()) + 3600  # longer than this machine has been up (CLOCK_MONOTONIC)
    out = tmp_path / "www"
    env = dict(os.environ, FEDERATION_HOME=str(home))
    proc = subprocess.Popen([sys.executable, "-m", "federation", "export", str(out), "--watch", "--interval", "0.2",
                             "--refresh-interval", str(interval)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    key = [parse_vkey(signer.vkey)]
    try:
        deadline = time.monotonic() + 15
        stamp = None
        while time.monotonic() < deadline:
            try:
                stamp = log_timestamp((out / "tid" / "checkpoint").read_bytes(), key, int(time.time()), 86400).time
            except FileNotFoundError:
                stamp = None
            if stamp is not None and stamp > time.time() - 60:
                break
            time.sleep(0.2)
        assert stamp is not None and stamp > time.time() - 60, "the first export of a quiet feed is two days stale"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.timeout(120)
async def test_doctor_accepts_an_upstream_that_sync_accepts_fresh_by_its_seal(tmp_path):
    from federation.node.doctor import FAIL, run_doctor
    from federation.store.mirror import Mirror
    from federation.core.note import Note, parse_note
    from federation.net.server import PublisherSource, create_app
    from federation.sync.orchestrator import sync_once
    feed = make_feed(tmp_path / "pub.db", "tid", access="public")
    feed.publish_version()  # published just now
    # A publisher without the log's timestamp line: only the Ed25519 signature.
    note = parse_note(feed.checkpoint())
    plain = Note(note.text, note.signatures[:1]).to_bytes()
    feed.pub.conn.execute("UPDATE feeds SET checkpoint=? WHERE name='tid'", (plain,))
    home = Home(tmp_path / "platform")
    servers = Servers()
    try:
        url = await servers.start(create_app([PublisherSource(feed.path)])) + "/feeds/tid/"
        m = Mirror(home.mirror_db)
        m.follow("tid", feed.origin, [feed.signer.vkey], [url])
        await bounded(sync_once(m, "tid"))  # fresh: the seal applied was made seconds ago
        m.close()
        assert (await asyncio.to_thread(cli, home.root, "lookup", "md5", "00" * 16)).returncode == 1
        fails = [c for c in await run_doctor(home, timeout=5) if c.status == FAIL]
        assert not fails, fails
    finally:
        await servers.close()
        feed.pub.close()


@pytest.mark.timeout(120)
def test_serve_export_and_doctor_find_a_feeds_key_wherever_it_was_created(tmp_path):
    """``serve``, ``serve --config`` and ``export --watch`` load their
    refresh keys through ``load_refresh_signers``; ``doctor`` checks the same
    file. A feed created with ``--key`` elsewhere is found by all of them."""
    from federation.node.refresh import load_refresh_signers
    home = tmp_path / "clearinghouse"
    key = tmp_path / "offline" / "tid.key"
    assert cli(home, "feed", "create", "tid", "--key", str(key), "--access", "public").returncode == 0
    batch = tmp_path / "b.csv"
    batch.write_text(f"op,type,hash,case\nadd,md5,{'ab' * 16},c-1\n")
    assert cli(home, "publish", "tid", str(batch)).returncode == 0  # no --key: the recorded one
    signers, missing = load_refresh_signers(Home(home), ["tid"])
    assert not missing and list(signers) == ["tid"], missing
    doctor = cli(home, "doctor", "--no-network")
    assert f"OK   feed tid key: {key}" in doctor.stdout, doctor.stdout


@pytest.mark.timeout(120)
async def test_doctor_cannot_tell_the_freshness_of_a_bigger_tree_without_a_timestamp(tmp_path):
    """An upstream ahead of a stale mirror, whose note carries no timestamp:
    sync judges it by the seal of its newest version, which doctor does not
    fetch. Doctor says it cannot tell (warn), rather than calling the
    upstream stale (sync may well accept it) or fresh (it may be frozen too)."""
    import time
    from federation.core.note import Note, parse_note
    from federation.net.server import PublisherSource, create_app
    from federation.node.doctor import WARN, run_doctor
    from federation.store.mirror import Mirror
    from federation.sync.orchestrator import sync_once
    feed = make_feed(tmp_path / "pub.db", "tid", access="public")
    feed.publish_version()
    home = Home(tmp_path / "platform")
    servers = Servers()
    try:
        url = await servers.start(create_app([PublisherSource(feed.path)])) + "/feeds/tid/"
        m = Mirror(home.mirror_db)
        m.follow("tid", feed.origin, [feed.signer.vkey], [url], max_age=3600)
        await bounded(sync_once(m, "tid"))
        m.conn.execute("UPDATE follows SET fresh_time=? WHERE name='tid'", (int(time.time()) - 7200,))
        m.close()
        feed.publish_version()
        note = parse_note(feed.checkpoint())
        feed.pub.conn.execute("UPDATE feeds SET checkpoint=? WHERE name='tid'",
                              (Note(note.text, note.signatures[:1]).to_bytes(),))
        upstream = [c for c in await run_doctor(home, timeout=5) if c.what == "feed tid upstream"]
        assert [c.status for c in upstream] == [WARN] and "seal" in upstream[0].detail, upstream
    finally:
        await servers.close()
        feed.pub.close()


@pytest.mark.timeout(120)
def test_a_refresh_never_says_the_served_tree_is_newest_after_a_newer_version_was_committed(tmp_path):
    """Review of issue 10: with cosigning configured and the witnesses away,
    a publish is committed but not served (pending); refreshing then kept
    stamping the older served tree "newest as of now", so plain-vkey mirrors
    stayed fresh without the pending version (maybe a withdrawal). It is
    stamped as of the pending version's commit at most, and 'feed refresh'
    says so (exit 2): mirrors go stale max_age after the commit."""
    import time
    from federation.core.freshness import log_timestamp
    from federation.core.note import parse_vkey
    from federation.node.keys import load_signer
    from federation.store.publisher import Publisher
    home = tmp_path / "clearinghouse"
    assert cli(home, "feed", "create", "tid", "--access", "public").returncode == 0
    batch = tmp_path / "b.csv"
    batch.write_text(f"op,type,hash,case\nadd,md5,{'ab' * 16},c-1\n")
    assert cli(home, "publish", "tid", str(batch)).returncode == 0
    witness = Cosigner.generate("w.example")
    assert cli(home, "cosign", "configure", "tid", "--witness", f"http://127.0.0.1:9/witness={witness.vkey}",
               "--quorum", "1").returncode == 0
    withdrawal = tmp_path / "w.jsonl"
    withdrawal.write_text('{"op":"withdraw","case":"c-1","reason":"submitter_request"}\n')
    assert cli(home, "publish", "tid", str(withdrawal)).returncode == 3  # committed, not served: pending
    signer = load_signer(home / "private" / "tid.key")
    pub = Publisher(home / "publisher.db")
    try:
        feed = pub.feed("tid")
        assert feed.pending_checkpoint is not None and feed.version == 2
        note = pub.refresh_timestamp("tid", signer, now=feed.updated + 7200)
        stamp = log_timestamp(note, [parse_vkey(signer.vkey)], int(time.time()) + 7200, 86400).time
        assert stamp == feed.updated, "a tree older than the committed version was stamped newest after it"
    finally:
        pub.close()
    r = cli(home, "feed", "refresh", "tid")
    assert r.returncode == 2 and "awaits cosignatures" in r.stderr and "cosign run tid" in r.stderr, r.stderr


@pytest.mark.timeout(120)
def test_a_maximum_age_of_one_refresh_interval_is_warned_about(tmp_path):
    """Review of issue 10: 'follow --help' showed --max-age 3600, the hourly
    refresh itself: one late refresh fails every lookup. The example uses a
    few intervals, and such a maximum age is warned about (follow, node check)."""
    from click.testing import CliRunner
    from federation.cli.main import cli as main
    help_text = CliRunner().invoke(main, ["follow", "--help"]).output
    assert "--max-age 3600" not in help_text and "few" in help_text
    args = ["--url", "http://127.0.0.1:9/feeds/tid/", "--origin", "o.example/tid", "--vkey",
            Signer.generate("o.example/tid").vkey]
    short = cli(tmp_path / "a", "follow", "tid", *args, "--max-age", "3600")
    assert short.returncode == 0 and "warning:" in short.stderr and "refresh interval" in short.stderr
    fine = cli(tmp_path / "b", "follow", "tid", *args, "--max-age", "21600")
    assert fine.returncode == 0 and "warning" not in fine.stderr, fine.stderr
    config = tmp_path / "node.toml"
    config.write_text('[[follow]]\nname = "tid"\norigin = "o.example/tid"\nvkeys = ["%s"]\n'
                      'urls = ["http://127.0.0.1:9/feeds/tid/"]\nmax_age = 1800\n' % args[-1])
    check = cli(tmp_path / "c", "node", "check", str(config))
    assert check.returncode == 0 and "warning: [[follow]] tid max_age" in check.stderr, check.stderr
