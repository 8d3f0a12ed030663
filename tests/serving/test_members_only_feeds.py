"""Members-only feeds never leak from a server.

Access is stored with the feed (``feed create --access``); plain ``serve``
and ``serve --config`` enforce it with member tokens, a config never opens
a feed stored as members-only, and an anonymous caller cannot tell a hidden
feed from one that does not exist on any route or method under ``/feeds``.
(Static export: ``test_dist_export.py``.)
"""
from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time

import aiohttp
import pytest
from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.errors import InputError, TransportError
from federation.core.layout import tile_path
from federation.core.note import Cosigner, Signer
from federation.core.trustfile import parse_trust
from federation.node.assembly import build_app, build_publisher_app
from federation.node.config import parse_config
from federation.node.home import Home
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher, stored_access
from federation.store.snapshots import prune, write_snapshot
from federation.store.tokens import TokenStore
from federation.sync.orchestrator import sync_once
from federation.trust.rotation import TrustChain, publish_trust

from support.feeds import make_feed, ops_for
from support.loopback import BOUND, Servers, bounded
from support.trust_world import trust_bytes

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def cli_run(home, *args, code=0) -> str:
    r = CliRunner().invoke(cli, ["--home", str(home), *args])
    assert r.exit_code == code, (args, r.output)
    return r.output  # stdout and stderr


async def call(method: str, url: str, token: str | None = None):
    """(status, headers without Date, body) of one request."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.request(method, url, headers=headers, allow_redirects=False) as r:
            body = await r.read()
            return r.status, sorted((k, v) for k, v in r.headers.items() if k != "Date"), body


# ---- access is a property of the feed ------------------------------------------


def test_feed_access_is_stored_listed_and_changeable(tmp_path):
    home = tmp_path / "h"
    assert "access: members" in cli_run(home, "feed", "create", "ncii")  # the default fails closed
    assert "access: public" in cli_run(home, "feed", "create", "tid", "--access", "public")
    rows = {line.split("\t")[0]: line.split("\t")[1] for line in cli_run(home, "feed", "list").splitlines()}
    assert rows == {"ncii": "members", "tid": "public"}
    status = json.loads(CliRunner().invoke(cli, ["--home", str(home), "status", "--json"]).output)
    assert {f["name"]: f["access"] for f in status["published"]} == rows
    assert "published ncii (members)" in cli_run(home, "status")
    cli_run(home, "feed", "set-access", "ncii", "public")
    assert "members" in cli_run(home, "feed", "set-access", "tid", "members")
    pub = Publisher(home / "publisher.db")
    assert (pub.feed("ncii").access, pub.feed("tid").access) == ("public", "members")
    with pytest.raises(InputError):
        pub.set_access("tid", "open")
    with pytest.raises(InputError):
        pub.create_feed("x", "o.example/x", Signer.generate("o.example/x"), access="everyone")
    pub.close()
    cli_run(home, "feed", "set-access", "nope", "public", code=2)
    cli_run(home, "feed", "create", "bad", "--access", "open", code=2)
    assert not (home / "private" / "bad.key").exists()


OLD_FEEDS = """
CREATE TABLE feeds (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL UNIQUE,
    vkey TEXT NOT NULL,
    size INTEGER NOT NULL,
    version INTEGER NOT NULL,
    count INTEGER NOT NULL,
    digest BLOB NOT NULL,
    compact BLOB NOT NULL,
    checkpoint BLOB NOT NULL,
    updated INTEGER NOT NULL,
    pending_checkpoint BLOB            -- committed, signed, not served until cosigned (NULL: none)
);
"""  # the table before feeds had an access


def test_old_publisher_database_becomes_members_only(tmp_path):
    new = make_feed(tmp_path / "new.db", access="public")
    columns = "id, name, origin, vkey, size, version, count, digest, compact, checkpoint, updated, pending_checkpoint"
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.executescript(OLD_FEEDS)
    conn.execute("ATTACH ? AS new", (str(tmp_path / "new.db"),))
    conn.execute(f"INSERT INTO feeds SELECT {columns} FROM new.feeds")
    conn.commit()
    conn.close()
    ro = sqlite3.connect(f"file:{tmp_path / 'old.db'}?mode=ro", uri=True)
    assert stored_access(ro, "tid") == "members" and stored_access(ro, "nope") is None  # before migration
    ro.close()
    pub = Publisher(tmp_path / "old.db")
    try:
        head = pub.feed("tid")
        assert head.access == "members" and head.checkpoint == new.checkpoint() and head.pending_checkpoint is None
        pub.publish("tid", ops_for(1), new.signer)
        assert pub.feed("tid").version == 1
        pub.set_access("tid", "public")
        assert pub.feed("tid").access == "public"
    finally:
        pub.close()
        new.pub.close()


# ---- plain serve enforces it ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def plain_serve(tmp_path):
    """``federation serve`` (no config) as a real process over a home with a
    members-only feed ``ncii`` and a public feed ``tid``."""
    home = tmp_path / "clearinghouse"
    out = cli_run(home, "feed", "create", "ncii", "--origin", "clearinghouse.example/feeds/ncii")
    vkey = next(line.split()[1] for line in out.splitlines() if line.startswith("vkey:"))
    cli_run(home, "feed", "create", "tid", "--origin", "clearinghouse.example/feeds/tid", "--access", "public")
    batch = tmp_path / "b.csv"
    for name in ("ncii", "tid"):
        batch.write_text(f"op,type,hash,case\nadd,md5,{'ab' * 16 if name == 'ncii' else 'cd' * 16},c-1\n")
        cli_run(home, "publish", name, str(batch))
    token = cli_run(home, "token", "issue", "platform-a", "--feed", "ncii").split()[-1]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "federation", "--home", str(home), "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + BOUND
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"serve did not start: {proc.stderr.read().decode()}")
            time.sleep(0.05)  # waiting on another process's bind; no event to await
    yield home, f"http://127.0.0.1:{port}", token, vkey
    proc.terminate()
    proc.wait(10)


async def test_plain_serve_enforces_the_stored_access_with_member_tokens(plain_serve, tmp_path):
    home, url, token, vkey = plain_serve
    hidden = await call("GET", f"{url}/feeds/ncii/checkpoint")
    absent = await call("GET", f"{url}/feeds/nope/checkpoint")
    assert hidden[0] == 401 and hidden == absent
    status, _, body = await call("GET", f"{url}/feeds/ncii/checkpoint", token)
    pub = Publisher(home / "publisher.db")
    assert status == 200 and body == pub.feed("ncii").checkpoint
    assert (await call("GET", f"{url}/feeds/tid/checkpoint"))[0] == 200
    _, headers, listing = await call("GET", f"{url}/feeds")
    assert [f["name"] for f in json.loads(listing)["feeds"]] == ["tid"]
    _, _, listing = await call("GET", f"{url}/feeds", token)
    assert [f["name"] for f in json.loads(listing)["feeds"]] == ["ncii", "tid"]
    # A mirror needs the member token, as from a 'serve --config' node.
    m = Mirror(tmp_path / "m.db")
    m.follow("ncii", "clearinghouse.example/feeds/ncii", [vkey], [f"{url}/feeds/ncii/"])
    with pytest.raises(TransportError, match="401"):
        await bounded(sync_once(m, "ncii"))
    r = await bounded(sync_once(m, "ncii", headers={"Authorization": f"Bearer {token}"}))
    assert r.version == 1 and m.get("ncii").count == 1
    m.close()
    # A change of access takes effect on the running server at once.
    cli_run(home, "feed", "set-access", "tid", "members")
    assert (await call("GET", f"{url}/feeds/tid/checkpoint"))[0] == 401
    cli_run(home, "feed", "set-access", "ncii", "public")
    assert (await call("GET", f"{url}/feeds/ncii/checkpoint"))[0] == 200
    pub.close()


# ---- serve --config: never more open than the stored access -----------------------------


@pytest.fixture
def stored(tmp_path):
    """A home with 'ncii' stored members-only and 'tid' stored public."""
    home = Home.resolve(str(tmp_path / "node"))
    ncii = make_feed(home.publisher_db, "ncii")
    tid = make_feed(home.publisher_db, "tid", access="public")
    ncii.publish_version()
    tid.publish_version()
    yield home, ncii, tid
    ncii.pub.close()
    tid.pub.close()


async def test_a_config_never_opens_a_members_only_feed(stored):
    home, ncii, tid = stored
    with pytest.raises(InputError, match="feed set-access ncii public"):
        build_app(parse_config('[[publish]]\nname = "ncii"\naccess = "public"\n'), home, signers={})
    servers = Servers()
    try:
        # Omitted: as stored. "members" narrows a public feed.
        url = await servers.start(build_app(parse_config('[[publish]]\nname = "ncii"\n\n[[publish]]\nname = "tid"\n'),
                                            home, signers={}))
        assert (await call("GET", f"{url}/feeds/ncii/checkpoint"))[0] == 401
        assert (await call("GET", f"{url}/feeds/tid/checkpoint"))[0] == 200
        narrow = await servers.start(build_app(parse_config('[[publish]]\nname = "tid"\naccess = "members"\n'),
                                               home, signers={}))
        assert (await call("GET", f"{narrow}/feeds/tid/checkpoint"))[0] == 401
        # Closed while running: the stricter of config and stored holds at once.
        both = await servers.start(build_app(parse_config('[[publish]]\nname = "tid"\naccess = "public"\n'),
                                             home, signers={}))
        assert (await call("GET", f"{both}/feeds/tid/checkpoint"))[0] == 200
        tid.pub.set_access("tid", "members")
        assert (await call("GET", f"{both}/feeds/tid/checkpoint"))[0] == 401
        assert (await call("GET", f"{both}/feeds/tid/checkpoint?wait=1&after=0"))[0] == 401
    finally:
        await servers.close()


def test_a_feed_fetched_with_a_token_is_members_only_downstream():
    follow = ('[[follow]]\nname = "ncii"\norigin = "o.example/feeds/ncii"\nvkeys = ["k"]\n'
              'urls = ["http://127.0.0.1:9/feeds/ncii/"]\nrelay = true\ntoken_env = "NCII_TOKEN"\n')
    with pytest.raises(InputError, match="members only"):
        parse_config(follow + 'access = "public"\n')
    assert parse_config(follow).access() == {"ncii": "members"}
    assert parse_config(follow.replace('token_env = "NCII_TOKEN"\n', "")).access() == {"ncii": "public"}


# ---- hidden feeds are indistinguishable from absent ones ----------------------------------


def _give_everything(feed, home: Home) -> str:
    """Full tiles, a snapshot, pruned bundles and a trust chain: every route
    has something to say about this feed. Returns the snapshot's sha256."""
    feed.publish_version(300)
    ref = write_snapshot(home.publisher_db, feed.name, progress=False)
    feed.publish_version(3)
    prune(home.publisher_db, feed.name)
    roots = [Signer.generate("o.example/trust/root")]
    publish_trust(feed.pub.conn, feed.name, trust_bytes([feed.signer], [Cosigner.generate("w.example")], roots,
                                                         roots, quorum=1, threshold=1, origin=feed.origin))
    return ref.sha256


def _fills(canonical: str, sha: str) -> list[str]:
    """Concrete paths below ``/feeds/{name}`` for one route."""
    rest = canonical.removeprefix("/feeds/{name}")
    options = {"{path}": ["0/000", "entries/000", "entries/001.p/47"], "{which}": ["latest", "1"],
               "{sha}": [sha, "index"], "{batch_id}": ["b1"], "{id}": ["b1"]}
    paths = [rest]
    for placeholder, values in options.items():
        if placeholder in rest:
            paths = [p.replace(placeholder, v) for p in paths for v in values]
    assert all("{" not in p for p in paths), paths  # a new route: give its parameters a value here
    return paths


async def _walk(url: str, app, hidden: str, sha: str, token: str | None = None, methods=METHODS) -> int:
    """Every route under /feeds/{name}, every method: ``hidden`` answers as a
    feed that does not exist. Returns how many requests were compared."""
    routes = sorted({r.resource.canonical for r in app.router.routes()
                     if r.resource is not None and r.resource.canonical.startswith("/feeds/{name}")})
    assert len(routes) >= 5, routes
    n = 0
    for canonical in routes:
        for rest in _fills(canonical, sha):
            for method in methods:
                a = await call(method, f"{url}/feeds/{hidden}{rest}", token)
                b = await call(method, f"{url}/feeds/never-existed{rest}", token)
                assert a == b, (method, rest, a, b)
                assert a[0] != 429, "rate limited: the comparison says nothing"
                n += 1
    return n


async def _listing_hides(url: str, hidden: str) -> None:
    _, headers, body = await call("GET", f"{url}/feeds")
    assert hidden not in body.decode() and json.loads(body)["feeds"]
    _, head_headers, head_body = await call("HEAD", f"{url}/feeds")
    assert head_body == b"" and dict(head_headers)["Content-Length"] == str(len(body)) == dict(headers)["Content-Length"]


async def test_anonymous_callers_cannot_tell_hidden_feeds_from_absent_ones(stored):
    home, ncii, tid = stored
    sha = _give_everything(ncii, home)
    servers = Servers()
    try:
        node = build_app(parse_config('[node]\nanonymous_rate = 1000\nanonymous_burst = 100000\n\n'
                                      '[[publish]]\nname = "ncii"\n\n[[publish]]\nname = "tid"\n'),
                         home, signers={"ncii": ncii.signer, "tid": tid.signer})
        url = await servers.start(node)
        assert (await call("GET", f"{url}/feeds/tid/checkpoint"))[0] == 200
        assert await _walk(url, node, "ncii", sha) > 50
        await _listing_hides(url, "ncii")
        # Plain serve: the same (fewer methods: its anonymous rate limit is the default one).
        plain = build_publisher_app(home)
        url = await servers.start(plain)
        assert await _walk(url, plain, "ncii", sha, methods=("GET", "HEAD", "POST", "OPTIONS")) > 20
        await _listing_hides(url, "ncii")
    finally:
        await servers.close()


async def test_a_member_token_learns_nothing_about_feeds_the_node_does_not_serve(stored, tmp_path):
    """Not in the config (a draft in the same publisher database) or followed
    but not relayed: 404 on every route, trust and snapshots included, even for
    a token scoped to every feed."""
    home, ncii, tid = stored
    sha = _give_everything(ncii, home)  # in publisher.db, not in the config below
    relayed = make_feed(tmp_path / "up.db", "relayed", access="public")
    mirror = Mirror(home.mirror_db)
    follow_only = Signer.generate("o.example/feeds/followed")
    mirror.follow("followed", follow_only.name, [follow_only.vkey], ["http://127.0.0.1:9/feeds/followed/"])
    roots = [Signer.generate("o.example/trust/root")]
    TrustChain(mirror.conn, "followed").start(parse_trust(trust_bytes(
        [follow_only], [Cosigner.generate("w.example")], roots, roots, quorum=1, threshold=1,
        origin=follow_only.name)))
    mirror.close()
    from federation.net.auth import TokenStore
    store = TokenStore(home.root / "auth.db")
    _, everything = store.issue("platform-a", "member", ["*"])
    store.close()
    config = parse_config(
        '[[publish]]\nname = "tid"\n\n'
        f'[[follow]]\nname = "relayed"\norigin = "{relayed.origin}"\nvkeys = ["{relayed.signer.vkey}"]\n'
        'urls = ["http://127.0.0.1:9/feeds/relayed/"]\nrelay = true\ninterval = 60\n\n'
        f'[[follow]]\nname = "followed"\norigin = "{follow_only.name}"\nvkeys = ["{follow_only.vkey}"]\n'
        'urls = ["http://127.0.0.1:9/feeds/followed/"]\ninterval = 60\n')
    servers = Servers()
    try:
        node = build_app(config, home, signers={"tid": tid.signer})
        url = await servers.start(node)
        assert (await call("GET", f"{url}/feeds/tid/checkpoint", everything))[0] == 200
        for hidden in ("ncii", "followed"):
            assert await _walk(url, node, hidden, sha, everything, methods=("GET", "HEAD")) > 10
    finally:
        await servers.close()
        relayed.pub.close()


async def get(url: str, token: str | None = None) -> tuple[int, dict, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.get(url, headers=headers) as r:
            return r.status, dict(r.headers), await r.read()


async def test_members_only_answers_are_never_marked_cacheable_by_shared_caches(tmp_path):
    """RFC 9111 3.5: a shared cache must not reuse an answer to a request with
    Authorization -- unless the answer says ``public``. Every answer of a
    members-only feed is such an answer, so none may say ``public``."""
    home = Home(tmp_path / "clearinghouse")
    ncii = make_feed(home.publisher_db, "ncii")  # members-only (the default)
    ncii.publish_version(300)
    ref = write_snapshot(home.publisher_db, "ncii", progress=False)
    ncii.publish_version(3)
    prune(home.publisher_db, "ncii")
    roots = [Signer.generate("o.example/trust/root")]
    publish_trust(ncii.pub.conn, "ncii", trust_bytes([ncii.signer], [Cosigner.generate("w.example")], roots, roots,
                                                     quorum=1, threshold=1, origin=ncii.origin))
    store = TokenStore(home.root / "auth.db")
    _, token = store.issue("platform-a", "member", ["ncii"])
    store.close()
    size = ncii.pub.feed("ncii").size
    servers = Servers()
    try:
        url = await servers.start(build_publisher_app(home)) + "/feeds/ncii/"
        paths = ["checkpoint", "checkpoint?wait=0&after=0", tile_path(0, 0), tile_path(-1, size // 256, size % 256),
                 "snapshot/index", f"snapshot/{ref.sha256}", "trust/latest", "trust/1"]
        seen = {}
        for path in paths:
            status, headers, _ = await get(url + path, token)
            assert status == 200, (path, status)
            assert (await get(url + path))[0] == 401  # members-only indeed
            seen[path] = headers.get("Cache-Control", "")
        shared = {p: cc for p, cc in seen.items() if "public" in cc or not ("private" in cc or "no-store" in cc)}
        assert not shared, f"members-only answers a shared cache may keep and hand to anyone: {shared}"
    finally:
        await servers.close()
        ncii.pub.close()


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
