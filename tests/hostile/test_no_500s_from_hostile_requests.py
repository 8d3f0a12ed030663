"""No 500s from input: the issue's examples against the real HTTP routes.

Each route answers 4xx with a body naming the problem where it answered 500
before (issue 10, section 4). Real apps on 127.0.0.1, real SQLite files.
"""
from __future__ import annotations

import json

import aiohttp
import pytest

from federation.core.checkpoint import Checkpoint
from federation.core.note import Cosigner, Signer, sign_note
from federation.core.witnessformat import add_checkpoint_body
from federation.net import longpoll
from federation.net.auth import AccessControl, TokenStore
from federation.net.publish_api import PublishAPI
from federation.net.server import PublisherSource, create_app
from federation.trust.witness import Witness, install_witness

from support.feeds import make_feed
from support.images import md5_add
from support.loopback import BOUND, start

MD5 = "9e107d9d372bb6826bd81d3542a419d6"


async def request(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.request(method, url, data=data, headers=headers or {}) as r:
            return r.status, r.headers, await r.read()


def assert_names(status: int, body: bytes, want: int, *words: str) -> None:
    assert status == want, (status, body[:300])
    text = body.decode()
    for w in words:
        assert w in text, text
    if body.startswith(b"{"):
        assert json.loads(body)["kind"] == "input"


# ---- platform node: POST /lookup, the change stream, consumer acks ----------------

@pytest.mark.parametrize("body, words", [
    (b'{"queries": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", ("nested",)),
    (b'{"queries": [{"type": "pdq", "hash": "%s", "threshold": %s}]}' % (b"0" * 64, b"9" * 5000), ("digits",)),
    (b'{"queries": [{"type": "pdq", "hash": "%s", "threshold": 1e400}]}' % (b"0" * 64), ("range",)),
    (b'{"queries": [{"type": "md5", "hash": "%s", "threshold": NaN}]}' % MD5.encode(), ("NaN",)),
])
async def test_post_lookup_with_deep_json_or_huge_numbers_is_400(deployment, body, words):
    status, _, data = await request("POST", deployment.url + "lookup", body, {"Content-Type": "application/json"})
    assert_names(status, data, 400, *words)


@pytest.mark.parametrize("query", ["after=99999999999999999999999", "after=" + "9" * 5000, "after=-1",
                                   "limit=99999999999999999999999", "after=%C2%B2"])
async def test_changes_with_huge_cursor_in_the_query_is_400(deployment, query):
    status, _, data = await request("GET", f"{deployment.url}changes?{query}")
    assert_names(status, data, 400)


@pytest.mark.parametrize("cursor", [b"9" * 5000, b"99999999999999999999999", b"1e400", b"[" * 50_000])
async def test_consumer_ack_with_a_5000_digit_cursor_is_400(deployment, cursor):
    deployment.publish([md5_add("x", "c1")])
    await deployment.sync()
    status, _, data = await request("POST", deployment.url + "consumers/moderation/ack", b'{"cursor": %s}' % cursor,
                                    {"Content-Type": "application/json"})
    assert_names(status, data, 400, "cursor" if cursor[:1] != b"[" else "nested")


# ---- the publishing API ------------------------------------------------------------

@pytest.fixture
async def publishing(tmp_path, servers):
    feed = make_feed(tmp_path / "pub.db", "open")
    store = TokenStore(tmp_path / "auth.db")
    _, token = store.issue("ingest", "publisher", ["open"])
    ac = AccessControl(store, {"open": "public"})
    api = PublishAPI(tmp_path / "pub.db", {"open": feed.signer}, 64 * 1024, audit=store)
    app = create_app([PublisherSource(tmp_path / "pub.db")], extensions=[longpoll.install, api.install],
                     middlewares=[ac.middleware, longpoll.longpoll_middleware])
    url = await servers.start(app)
    yield f"{url}/feeds/open/batches/", {"Authorization": f"Bearer {token}"}, feed
    feed.pub.close()
    store.close()


async def test_publishing_api_jsonl_with_a_5000_digit_integer_is_422(publishing):
    url, auth, _ = publishing
    body = b'{"op": "add", "type": "md5", "hash": "%s", "case": "c1", "labels": %s}\n' % (MD5.encode(), b"9" * 5000)
    status, _, data = await request("POST", url + "b1", body, {**auth, "Content-Type": "application/x-ndjson"})
    assert status == 422 and b"line 1" in data, (status, data)


async def test_publishing_api_csv_with_a_bom_is_published(publishing):
    url, auth, feed = publishing
    body = "\ufeffop,type,hash,case,labels,reason\nadd,md5,%s,c1,csam,\n" % MD5
    status, _, data = await request("POST", url + "b2", body.encode(), {**auth, "Content-Type": "text/csv"})
    assert status == 201, data
    assert feed.pub.feed("open").count == 1


# ---- the witness ---------------------------------------------------------------------

async def test_witness_refuses_a_signed_checkpoint_beyond_64_bit_sizes_with_400(tmp_path):
    log_key = Signer.generate("example.org/feeds/t")
    w = Witness(tmp_path / "w.db", Cosigner.generate("witness.example"))
    w.add_log(log_key.name, [log_key.vkey])
    runner, url = await start(create_app([], extensions=[install_witness(w)]))
    try:
        body = Checkpoint(log_key.name, 1, bytes(32)).body().replace(b"\n1\n", b"\n99999999999999999999\n")
        note = sign_note(body, [log_key])
        status, _, data = await request("POST", url + "witness/add-checkpoint", add_checkpoint_body(0, [], note))
        assert status == 400, (status, data)
        assert b"size" in data
    finally:
        await runner.cleanup()
        w.close()


# ---- compressed responses ------------------------------------------------------------

async def test_compressed_bundles_carry_vary_accept_encoding(tmp_path, servers):
    feed = make_feed(tmp_path / "pub.db", "open")
    feed.publish_version(20)
    url = await servers.start(create_app([PublisherSource(tmp_path / "pub.db")]))
    size = feed.pub.feed("open").size
    for encoding in ("gzip", "identity"):
        status, headers, _ = await request("GET", f"{url}/feeds/open/tile/entries/000.p/{size}",
                                           headers={"Accept-Encoding": encoding})
        assert status == 200
        assert "Accept-Encoding" in headers.get("Vary", ""), (encoding, dict(headers))
    feed.pub.close()
