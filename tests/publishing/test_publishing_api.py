"""The publishing API (``POST /feeds/NAME/batches``): malformed batches are
refused with 422, a busy store answers 503 and the retry publishes once, and
cosigning after a publish does not break a concurrent publish.

Real SQLite files under ``tmp_path``, keys generated here, real aiohttp
servers (publishing API, witness) on 127.0.0.1 with ephemeral ports.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3

import aiohttp
import pytest
from aiohttp import web

from federation.core.note import Cosigner
from federation.net.publish_api import PublishAPI
from federation.net.server import PublisherSource, create_app
from federation.node.cosigning import cosign_configured
from federation.store.activeset import ActiveSet
from federation.store.publisher import CHUNK
from federation.trust.cosign import CosigningConfig, store_config
from federation.trust.witness import Witness

from support.feeds import make_feed
from support.loopback import BOUND

NDJSON = {"Content-Type": "application/x-ndjson"}
CSV = {"Content-Type": "text/csv"}


def md5(i) -> str:
    return hashlib.md5(str(i).encode()).hexdigest()


def jsonl_adds(n: int, case: str = "api-1", start: int = 0) -> str:
    return "".join(json.dumps({"op": "add", "type": "md5", "hash": md5(i), "case": case, "labels": "csam"}) + "\n"
                   for i in range(start, start + n))


async def post(url, body, headers):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.post(url, data=body, headers=headers) as r:
            return r.status, await r.read()


def consistent(feed) -> bool:
    """The active rows agree with the feed's committed count and digest."""
    head = feed.pub.feed(feed.name)
    digest, n = ActiveSet(feed.pub.conn, head.id).recompute_digest()
    return n == head.count and digest.digest() == head.digest


@pytest.fixture
def tid(tmp_path):
    f = make_feed(tmp_path / "pub.db", "tid")
    f.publish_version()
    yield f
    f.pub.close()


async def api_app(servers, tid, **kw):
    async def after_publish(name):  # as node assembly injects it
        return await cosign_configured(tid.path, name)

    api = PublishAPI(tid.path, {"tid": tid.signer}, after_publish=after_publish, **kw)
    app = create_app([PublisherSource(tid.path)], extensions=[api.install])
    url = await servers.start(app)
    return api, f"{url}/feeds/tid/batches/"


# ---- batch parsing: bad input is a clear InputError --------------------------

# ---- the publishing API ---------------------------------------------------------

@pytest.mark.parametrize("body,headers", [
    ('{"op":"add","type":"md5","hash":123,"case":"c"}\n', NDJSON),
    ("[" * 100_000 + "\n", NDJSON),
    ('op,type,hash,case,labels,reason\nadd,md5,"' + "0" * 200_000 + "\n", CSV),
])
async def test_api_refuses_malformed_batches_with_422(tmp_path, tid, servers, body, headers):
    _, url = await api_app(servers, tid, max_bytes=1 << 20)
    before = tid.pub.feed("tid")
    status, text = await post(url + "b-1", body, headers)
    assert status == 422, text
    assert tid.pub.feed("tid") == before


async def test_api_answers_503_when_storage_is_busy_and_the_retry_publishes_once(tmp_path, tid, servers):
    api, url = await api_app(servers, tid)
    api.publisher.conn.execute("PRAGMA busy_timeout=200")  # the node's 30 s, shortened for the test
    other = sqlite3.connect(tid.path, isolation_level=None)  # e.g. `federation publish` in another process
    try:
        other.execute("BEGIN IMMEDIATE")
        status, text = await post(url + "b-1", jsonl_adds(3), NDJSON)
        assert status == 503, text
        other.execute("ROLLBACK")
    finally:
        other.close()
    status, text = await post(url + "b-1", jsonl_adds(3), NDJSON)
    assert status == 201, text
    status, text = await post(url + "b-1", jsonl_adds(3), NDJSON)
    assert status == 200 and json.loads(text)["replayed"] and json.loads(text)["served"] is True
    assert tid.pub.feed("tid").version == 2


async def test_cosigning_after_a_publish_does_not_break_a_concurrent_publish(tmp_path, tid, servers):
    """Request A's cosigning round (after its publish) must not run on the
    publisher connection while request B's publish transaction is open on it:
    ``TrustChain`` runs ``executescript``, which COMMITs whatever transaction
    is open, so B's half-applied batch was committed and its refusal could no
    longer roll it back."""
    cosigner = Cosigner.generate("witness.example")
    witness = Witness(tmp_path / "witness.db", cosigner)
    witness.add_log(tid.origin, [tid.signer.vkey])
    called = asyncio.Event()
    api: PublishAPI | None = None

    async def add_checkpoint(request: web.Request) -> web.Response:
        body = await request.read()
        if not called.is_set():
            called.set()
            # Answer once B's publish transaction is open (or after 3 s, if B cannot start).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3.0
            while not api.publisher.conn.in_transaction and loop.time() < deadline:
                await asyncio.sleep(0.001)
        return web.Response(body=witness.add_checkpoint(body), content_type="text/plain")

    wapp = web.Application()
    wapp.router.add_post("/witness/add-checkpoint", add_checkpoint)
    wurl = await servers.start(wapp)
    store_config(tid.pub, "tid", CosigningConfig((), ((wurl + "/witness", cosigner.vkey),), 1))
    api, url = await api_app(servers, tid)
    before = tid.pub.feed("tid")

    a = asyncio.create_task(post(url + "a", jsonl_adds(3, "case-a"), NDJSON))
    await asyncio.wait_for(called.wait(), BOUND)
    # B: two chunks of adds, then a withdrawal matching nothing: refused (422), nothing published.
    b_body = jsonl_adds(2 * CHUNK, "case-b", 1000) + json.dumps(
        {"op": "withdraw", "type": "md5", "hash": md5("never"), "reason": "other"}) + "\n"
    b = asyncio.create_task(post(url + "b", b_body, NDJSON))
    (sa, ta), (sb, tb) = await asyncio.wait_for(asyncio.gather(a, b), 2 * BOUND)
    assert sa == 201 and json.loads(ta)["served"], ta
    assert sb == 422, tb
    head = tid.pub.feed("tid")
    assert head.version == before.version + 1 and head.pending_checkpoint is None
    assert consistent(tid)
    active = tid.pub.conn.execute("SELECT count(*) FROM hashes WHERE case_id='case-b'").fetchone()[0]
    assert active == 0
    witness.close()
