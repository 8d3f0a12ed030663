"""Access control: member tokens per feed, publisher tokens, limits, audit log."""
from __future__ import annotations

import hashlib
import json

import aiohttp
import pytest

from federation.core.errors import TransportError
from federation.net import longpoll
from federation.net.auth import AccessControl, RateLimiter, TokenStore, install_listing_filter
from federation.net.publish_api import PublishAPI
from federation.net.server import PublisherSource, create_app
from federation.sync.follower import sync_from_upstreams
from federation.sync.orchestrator import sync_once

from support.feeds import follow, make_feed
from support.loopback import BOUND, bounded


@pytest.fixture
def node(tmp_path):
    """Two feeds in one publisher DB: 'tid' (members only) and 'open' (public)."""
    tid = make_feed(tmp_path / "pub.db", "tid")
    pub_open = make_feed(tmp_path / "pub.db", "open")
    tid.publish_version()
    pub_open.publish_version()
    store = TokenStore(tmp_path / "auth.db")
    yield tid, pub_open, store
    tid.pub.close()
    pub_open.pub.close()
    store.close()


async def _app(servers, tmp_path, node, max_bytes=64 * 1024, **ac_kw):
    tid, pub_open, store = node
    ac = AccessControl(store, {"tid": "members", "open": "public"}, **ac_kw)
    api = PublishAPI(tmp_path / "pub.db", {"tid": tid.signer, "open": pub_open.signer}, max_bytes, audit=store)
    app = create_app([PublisherSource(tmp_path / "pub.db")], extensions=[longpoll.install, api.install],
                     middlewares=[ac.middleware, install_listing_filter(ac), longpoll.longpoll_middleware])
    return await servers.start(app)


async def req(method, url, token=None, data=None, headers=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.request(method, url, data=data, headers=h) as r:
            return r.status, await r.read()


async def test_tokens_are_stored_hashed_and_revocable(tmp_path, node):
    _, _, store = node
    t, secret = store.issue("platform-a", "member", ["tid"])
    raw = (tmp_path / "auth.db").read_bytes() + (tmp_path / "auth.db-wal").read_bytes()
    assert secret.split("_", 2)[2].encode() not in raw  # the secret (it may itself hold "_")
    assert store.authenticate(secret).id == t.id
    assert store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.authenticate("fedtok_" + t.id) is None and store.authenticate("") is None
    store.revoke(t.id)
    assert store.authenticate(secret) is None


async def test_read_access_does_not_reveal_which_feeds_exist(tmp_path, node, servers):
    tid, _, store = node
    url = await _app(servers, tmp_path, node)
    _, member = store.issue("platform-a", "member", ["tid"])
    _, other = store.issue("platform-b", "member", ["elsewhere"])
    # Missing token: the same 401 for a protected feed and for one that does not exist.
    s1, b1 = await req("GET", f"{url}/feeds/tid/checkpoint")
    s2, b2 = await req("GET", f"{url}/feeds/secret-feed/checkpoint")
    assert (s1, b1) == (s2, b2) and s1 == 401
    # A token without scope: the same 403 for existing and non-existing feeds.
    s1, b1 = await req("GET", f"{url}/feeds/tid/checkpoint", other)
    s2, b2 = await req("GET", f"{url}/feeds/secret-feed/tile/0/000", other)
    assert (s1, b1) == (s2, b2) and s1 == 403
    # Wrong or malformed tokens: 401, even on a public feed.
    for bad in ("fedtok_aaaaaaaaaaaa_" + "x" * 43, "garbage", member + "x"):
        assert (await req("GET", f"{url}/feeds/open/checkpoint", bad))[0] == 401
    assert (await req("GET", f"{url}/feeds/tid/checkpoint", headers={"Authorization": "Basic dTpw"}))[0] == 401
    # The right token reads; the public feed needs none.
    s, body = await req("GET", f"{url}/feeds/tid/checkpoint", member)
    assert s == 200 and body == tid.checkpoint()
    assert (await req("GET", f"{url}/feeds/open/checkpoint"))[0] == 200
    # The listing shows only what the caller may read.
    _, listing = await req("GET", f"{url}/feeds")
    assert [f["name"] for f in json.loads(listing)["feeds"]] == ["open"]
    _, listing = await req("GET", f"{url}/feeds", member)
    assert sorted(f["name"] for f in json.loads(listing)["feeds"]) == ["open", "tid"]


async def test_mirror_syncs_with_member_token_and_audit_records_versions(tmp_path, node, servers):
    tid, _, store = node
    url = await _app(servers, tmp_path, node)
    tok, member = store.issue("platform-a", "member", ["tid"])
    m = follow(tmp_path / "m.db", tid, [f"{url}/feeds/tid/"])
    with pytest.raises(TransportError, match="401"):
        await bounded(sync_once(m, "tid"))
    await bounded(sync_once(m, "tid", headers={"Authorization": f"Bearer {member}"}))
    tid.publish_version()
    await bounded(sync_from_upstreams(m, "tid", [f"{url}/feeds/tid/"], {"Authorization": f"Bearer {member}"}))
    assert m.get("tid").version == 2
    fetches = [(r["member"], r["size"]) for r in store.audit("tid") if r["action"] == "fetch"]
    assert fetches == [("platform-a", 6), ("platform-a", 12)]  # one row per version fetched
    store.revoke(tok.id)
    assert (await req("GET", f"{url}/feeds/tid/checkpoint", member))[0] == 401


async def test_rate_limit_per_token(tmp_path, node, servers):
    _, _, store = node
    url = await _app(servers, tmp_path, node)
    _, slow = store.issue("platform-a", "member", ["tid"], rate=0.01, burst=3)
    _, fast = store.issue("platform-b", "member", ["tid"])
    codes = [(await req("GET", f"{url}/feeds/tid/checkpoint", slow))[0] for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert (await req("GET", f"{url}/feeds/tid/checkpoint", fast))[0] == 200  # buckets are per token


def test_rate_limiter_refills():
    rl = RateLimiter()
    assert [rl.allow("k", 1.0, 2, now=0.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert rl.allow("k", 1.0, 2, now=1.0) == 0.0


BATCH = "\n".join(json.dumps({"op": "add", "type": "md5", "hash": hashlib.md5(str(i).encode()).hexdigest(),
                              "case": "api-1", "labels": "csam"}) for i in range(4)) + "\n"


async def test_publishing_api_is_idempotent_and_needs_a_publisher_token(tmp_path, node, servers):
    tid, _, store = node
    url = await _app(servers, tmp_path, node)
    _, member = store.issue("platform-a", "member", ["tid"])
    _, publisher = store.issue("ingest", "publisher", ["tid"])
    _, other_pub = store.issue("ingest-b", "publisher", ["open"])
    post = f"{url}/feeds/tid/batches/b-0001"
    ctype = {"Content-Type": "application/x-ndjson"}
    assert (await req("POST", post, None, BATCH, ctype))[0] == 401
    assert (await req("POST", post, member, BATCH, ctype))[0] == 403
    assert (await req("POST", post, other_pub, BATCH, ctype))[0] == 403
    assert (await req("POST", f"{url}/feeds/nope/batches/b-1", other_pub, BATCH, ctype))[0] == 403
    s, body = await req("POST", post, publisher, BATCH, ctype)
    first = json.loads(body)
    assert s == 201 and first["version"] == 2 and first["adds"] == 4 and not first["replayed"]
    # A retry with the same id and body is the same version, not a new one.
    s, body = await req("POST", post, publisher, BATCH, ctype)
    assert s == 200 and json.loads(body)["version"] == 2 and json.loads(body)["replayed"]
    assert tid.pub.feed("tid").version == 2
    # The same id with another body is a conflict.
    assert (await req("POST", post, publisher, BATCH.replace("api-1", "api-2"), ctype))[0] == 409
    # CSV works too.
    csv = "op,type,hash,case,labels,reason\nwithdraw,,,api-1,,submitter_request\n"
    s, body = await req("POST", f"{url}/feeds/tid/batches/b-0002", publisher, csv, {"Content-Type": "text/csv"})
    assert s == 201 and json.loads(body)["withdrawals"] == 1
    audit = [(r["member"], r["action"], r["size"]) for r in store.audit("tid") if r["action"] == "publish"]
    assert audit == [("ingest", "publish", first["size"]), ("ingest", "publish", tid.pub.feed("tid").size)]


@pytest.mark.parametrize("path,body,headers,status", [
    ("batches/b-1", "{not json", {"Content-Type": "application/x-ndjson"}, 422),
    ("batches/b-1", "", {"Content-Type": "application/x-ndjson"}, 422),
    ("batches/b-1", '{"op":"withdraw","case":"never","reason":"other"}\n', {"Content-Type": "application/x-ndjson"}, 422),
    ("batches/b-1", b"\xff\xfe", {"Content-Type": "application/x-ndjson"}, 400),
    ("batches/b-1", BATCH, {"Content-Type": "image/png"}, 415),
    ("batches/" + "x" * 129, BATCH, {"Content-Type": "application/x-ndjson"}, 400),
    ("batches/bad%20id", BATCH, {"Content-Type": "application/x-ndjson"}, 400),
    ("batches/b-1", "x" * 70_000, {"Content-Type": "application/x-ndjson"}, 413),
    ("checkpoint", BATCH, {"Content-Type": "application/x-ndjson"}, 405),
])
async def test_malformed_and_oversized_requests_are_refused(tmp_path, node, servers, path, body, headers, status):
    tid, _, store = node
    url = await _app(servers, tmp_path, node, max_bytes=64 * 1024)
    _, publisher = store.issue("ingest", "publisher", ["tid"])
    before = tid.pub.feed("tid")
    s, _ = await req("POST", f"{url}/feeds/tid/{path}", publisher, body, headers)
    assert s == status
    assert tid.pub.feed("tid") == before  # nothing was published


async def test_oversized_chunked_body_is_refused(tmp_path, node, servers):
    """No Content-Length: the limit is enforced while streaming."""
    tid, _, store = node
    url = await _app(servers, tmp_path, node, max_bytes=64 * 1024)
    _, publisher = store.issue("ingest", "publisher", ["tid"])

    async def chunks():
        for _ in range(100):
            yield b"x" * 4096

    s, _ = await req("POST", f"{url}/feeds/tid/batches/b-9", publisher, chunks(),
                     {"Content-Type": "application/x-ndjson"})
    assert s == 413 and tid.pub.feed("tid").version == 1


async def test_oversized_headers_and_paths_are_refused(tmp_path, node, servers):
    url = await _app(servers, tmp_path, node)
    assert (await req("GET", f"{url}/feeds/open/tile/" + "9" * 9000))[0] in (400, 414, 431)
    assert (await req("GET", f"{url}/feeds/open/checkpoint", headers={"X-Big": "y" * 20000}))[0] in (400, 431)
    # The client resolves the dots to /feeds/etc/passwd: an unknown feed, so 401 like any protected one.
    assert (await req("GET", f"{url}/feeds/open/tile/../../etc/passwd"))[0] == 401
    assert (await req("GET", f"{url}/feeds/open/tile/0/x001/../000"))[0] == 404
