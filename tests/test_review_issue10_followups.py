"""Follow-ups to the review of issue 10 (tests/test_review_issue10.py): the
cases next to each finding that its own test does not cover, and the
review's un-numbered findings.

Real parts throughout: publishers with keys generated here, aiohttp servers
on 127.0.0.1, SQLite files under tmp_path, and the CLI as a user runs it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from dist_fixtures import BOUND, Servers, bounded, make_feed
from federation.core.note import Signer
from federation.node.home import Home
from federation.core.note import Cosigner
from trust_fixtures import trust_bytes

pytestmark = pytest.mark.timeout(120)


def cli(home: Path, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, FEDERATION_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "federation", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


async def get(url: str, token: str | None = None) -> tuple[int, dict, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.get(url, headers=headers) as r:
            return r.status, dict(r.headers), await r.read()


# ---- finding 1: caching ---------------------------------------------------------------


async def test_public_feeds_keep_public_caching_behind_access_control(tmp_path):
    """The other half of finding 1: only members-only answers become
    ``private``; a public feed's stay ``public`` (CDNs may cache them), with
    or without a token on the request."""
    from federation.net.server import CHECKPOINT_CACHE, IMMUTABLE_CACHE
    from federation.node.assembly import build_publisher_app
    from federation.store.tokens import TokenStore
    home = Home(tmp_path / "clearinghouse")
    tid = make_feed(home.publisher_db, "tid", access="public")
    tid.publish_version()
    store = TokenStore(home.auth_db)
    _, token = store.issue("platform-a", "member", ["tid"])
    store.close()
    servers = Servers()
    try:
        url = await servers.start(build_publisher_app(home)) + "/feeds/tid/"
        for who in (None, token):
            status, headers, _ = await get(url + "checkpoint", who)
            assert status == 200 and headers["Cache-Control"] == CHECKPOINT_CACHE
            status, headers, _ = await get(url + "tile/0/000.p/6", who)
            assert status == 200 and headers["Cache-Control"] == IMMUTABLE_CACHE
    finally:
        await servers.close()
        tid.pub.close()


# ---- finding 4: a node config's trust file -------------------------------------------------


async def test_a_trust_file_added_to_a_followed_feeds_config_puts_it_under_the_file(tmp_path):
    """A feed a node followed with vkeys alone, whose config then gains a
    trust file: from the next start it syncs under the file's policy (before:
    the existing follow kept syncing without any quorum)."""
    from federation.node.config import parse_config
    from federation.node.assembly import prepare_mirror
    from federation.store.mirror import Mirror
    from federation.trust.rotation import policy_for
    feed = make_feed(tmp_path / "pub.db", "tid", access="public")
    roots = [Signer.generate("clearinghouse.example/trust/root")]
    trust = tmp_path / "tid.trust"
    trust.write_bytes(trust_bytes([feed.signer], [Cosigner.generate("w.example")], roots, roots, quorum=1,
                                  threshold=1, max_staleness=3600, origin=feed.origin))
    home = Home(tmp_path / "platform")
    url = "http://127.0.0.1:9/feeds/tid/"
    plain = f'[[follow]]\nname = "tid"\norigin = "{feed.origin}"\nvkeys = ["{feed.signer.vkey}"]\nurls = ["{url}"]\n'
    prepare_mirror(home, parse_config(plain))
    m = Mirror(home.mirror_db)
    assert policy_for(m, "tid") is None
    m.close()
    prepare_mirror(home, parse_config(plain + f'trust = "{trust}"\n'))
    m = Mirror(home.mirror_db)
    try:
        assert policy_for(m, "tid") is not None, "the config's trust file is not in force"
        assert list(m.get("tid").vkeys) == [feed.signer.vkey]
    finally:
        m.close()
        feed.pub.close()


# ---- finding 10: the key a feed is signed with ----------------------------------------------


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


# ---- finding 12: commands on a typo'd home ------------------------------------------------


def test_bootstrap_on_a_missing_home_exits_5_and_creates_nothing(tmp_path):
    """Next to finding 12's read-only commands: 'bootstrap' of a followed feed
    on a typo'd --home fails closed like 'sync', instead of creating a home
    and an empty mirror only to say it follows no such feed."""
    home = tmp_path / "typo"
    r = cli(home, "bootstrap", "tid")
    assert not home.exists(), sorted(p.name for p in home.iterdir())
    assert r.returncode == 5 and "unavailable" in r.stderr, (r.returncode, r.stderr)


# ---- finding 13: doctor's freshness rule is sync's -----------------------------------------


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


# ---- platform serve without --auth ----------------------------------------------------------


def test_platform_serve_without_auth_is_refused_on_a_non_loopback_address(tmp_path, monkeypatch):
    """Review of issue 10: 'platform serve --host 0.0.0.0' without --auth served
    every hash of the mirror in the clear to anyone who reached the port."""
    from click.testing import CliRunner
    from federation.cli.main import cli as main
    from federation.net import httpserver
    served = []
    monkeypatch.setattr(httpserver, "run_app", lambda app, host, port, **kw: served.append(host))
    home = str(tmp_path / "home")
    for host in ("0.0.0.0", "::", "192.0.2.7", "node.example"):
        r = CliRunner().invoke(main, ["--home", home, "platform", "serve", "--host", host, "--port", "9"])
        assert r.exit_code == 2 and "--auth" in r.output and "loopback" in r.output, (host, r.output)
    assert served == []
    for args in (["--host", "127.0.0.1"], ["--host", "::1"], ["--host", "localhost"], ["--host", "0.0.0.0", "--auth"],
                 ["--host", "0.0.0.0", "--insecure-no-auth"]):
        r = CliRunner().invoke(main, ["--home", home, "platform", "serve", *args, "--port", "9"])
        assert r.exit_code == 0, (args, r.output)
    assert served == ["127.0.0.1", "::1", "localhost", "0.0.0.0", "0.0.0.0"]


# ---- refresh while a version is pending -----------------------------------------------------


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


# ---- a maximum age of a few refreshes ---------------------------------------------------------


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
