"""Change stream: ordered, resumable, per-consumer cursors; signed webhooks that never lose a withdrawal."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.entries import Withdraw
from federation.platform.changes import (IDEMPOTENCY_HEADER, PlatformStore, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign,
                                         verify_signature)
from federation.platform.node import PlatformNode

from support.deployment import FEED, ORIGIN
from support.images import md5_add
from support.loopback import start

pytestmark = pytest.mark.timeout(60)


async def get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return r.status, await r.json()


async def post(url: str, body) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=body) as r:
            return r.status, await r.json()


async def publish_add_then_withdraw(d):
    d.publish([md5_add(f"h{i}", f"case-{i % 2}") for i in range(4)])
    await d.sync()
    d.publish([Withdraw("submitter_request", 0, case="case-1")])
    await d.sync()


async def test_stream_is_ordered_paged_and_carries_provenance(deployment):
    await publish_add_then_withdraw(deployment)
    seen, after = [], 0
    while True:
        status, page = await get(f"{deployment.url}changes?after={after}&limit=2")
        assert status == 200 and len(page["changes"]) <= 2
        if not page["changes"]:
            break
        seen += page["changes"]
        after = page["next"]
    assert [c["seq"] for c in seen] == sorted({c["seq"] for c in seen}) and len(seen) == 6
    assert [c["action"] for c in seen] == ["add"] * 4 + ["withdraw"] * 2
    assert {c["case"] for c in seen[4:]} == {"case-1"}
    w = seen[-1]
    assert (w["feed"], w["origin"], w["version"], w["reason"], w["type"], w["labels"]) == \
        (FEED, ORIGIN, 2, "submitter_request", "md5", ["csam"])
    assert page["head"] == seen[-1]["seq"]
    status, page = await get(f"{deployment.url}changes?after=0&feed=other")
    assert status == 200 and page["changes"] == []
    status, page = await get(f"{deployment.url}changes?after=-1")
    assert status == 400 and page["kind"] == "input"


async def test_consumer_cursor_resumes_only_after_ack(deployment):
    await publish_add_then_withdraw(deployment)
    base = f"{deployment.url}consumers/moderation/"
    _, page = await get(base + "changes?limit=3")
    assert page["cursor"] == 0 and len(page["changes"]) == 3
    _, again = await get(base + "changes?limit=3")
    assert again["changes"] == page["changes"]  # not acknowledged: delivered again
    status, ack = await post(base + "ack", {"cursor": page["next"]})
    assert status == 200 and ack["cursor"] == page["next"]
    _, rest = await get(base + "changes")
    assert [c["action"] for c in rest["changes"]] == ["add", "withdraw", "withdraw"]
    # backwards acks do not move the cursor; acks past the head are refused
    _, ack = await post(base + "ack", {"cursor": 1})
    assert ack["cursor"] == page["next"]
    status, err = await post(base + "ack", {"cursor": rest["head"] + 1})
    assert status == 400 and "past the newest change" in err["error"]
    # the cursor is in SQLite: another store on the same file sees it
    assert PlatformStore(deployment.root / "platform.db").cursor("moderation") == page["next"]
    # consumers are independent
    _, other = await get(f"{deployment.url}consumers/audit/changes")
    assert other["cursor"] == 0 and len(other["changes"]) == 6


class Receiver:
    """A webhook endpoint on loopback that fails the first ``fail`` attempts."""

    def __init__(self, secret: str, fail: int = 0):
        self.secret, self.fail = secret, fail
        self.attempts: list[dict] = []
        self.accepted: asyncio.Queue = asyncio.Queue()
        self.seen: asyncio.Queue = asyncio.Queue()  # every attempt, accepted or not
        self.app = web.Application()
        self.app.router.add_post("/hook", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        a = dict(key=request.headers[IDEMPOTENCY_HEADER], body=json.loads(body),
                 valid=verify_signature(self.secret, request.headers[SIGNATURE_HEADER],
                                        request.headers[TIMESTAMP_HEADER], body))
        self.attempts.append(a)
        await self.seen.put(a)
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=503)
        await self.accepted.put(a)
        return web.Response(status=204)


async def test_webhook_is_signed_retried_with_stable_key_and_acked_after_2xx(deployment):
    secret = "ab" * 32
    rx = Receiver(secret, fail=2)
    runner, rx_url = await start(rx.app)
    try:
        store = PlatformStore(deployment.root / "platform.db")
        store.add_webhook("mod", rx_url + "hook", secret)
        await publish_add_then_withdraw(deployment)
        got = []
        while sum(len(a["body"]["changes"]) for a in got) < 6:
            got.append(await asyncio.wait_for(rx.accepted.get(), 10))
        changes = [c for a in got for c in a["body"]["changes"]]
        assert [c["seq"] for c in changes] == sorted(c["seq"] for c in changes)
        assert [c["action"] for c in changes].count("withdraw") == 2
        assert all(a["valid"] for a in rx.attempts)
        # the two failed attempts and the success carry the same batch and key
        first_key = rx.attempts[0]["key"]
        assert [a["key"] for a in rx.attempts[:3]] == [first_key] * 3
        assert rx.attempts[0]["body"] == rx.attempts[2]["body"]
        hook = store.webhook("mod")
        assert hook.cursor == changes[-1]["seq"] and hook.inflight_last is None and hook.delivered == 6
    finally:
        await runner.cleanup()


def test_signature_rejects_tampering_and_replay():
    secret = "0f" * 32
    body = b'{"changes":[]}'
    sig = sign(secret, 1000, body)
    assert verify_signature(secret, sig, "1000", body, now=1010)
    assert not verify_signature(secret, sig, "1000", body + b" ", now=1010)
    assert not verify_signature("1f" * 32, sig, "1000", body, now=1010)
    assert not verify_signature(secret, sig, "1001", body, now=1010)
    assert not verify_signature(secret, sig, "1000", body, now=2000)  # too old: replay
    assert not verify_signature(secret, sig, "soon", body, now=1010)


async def test_withdrawal_survives_receiver_outage_and_node_restart(deployment):
    """The endpoint is down while a withdrawal is applied; the node restarts; it still arrives, same key."""
    secret = "cd" * 32
    rx = Receiver(secret, fail=10**6)
    runner, rx_url = await start(rx.app)
    try:
        store = PlatformStore(deployment.root / "platform.db")
        store.add_webhook("mod", rx_url + "hook", secret)
        deployment.publish([md5_add("w", "case-w")])
        await deployment.sync()
        deployment.publish([Withdraw("legal", 0, case="case-w")])
        await deployment.sync()
        for _ in range(4):  # the node's 4th attempt starts after the 3rd failure was recorded
            await asyncio.wait_for(rx.seen.get(), 10)
        hook = store.webhook("mod")
        assert hook.cursor == 0 and hook.attempts >= 3 and hook.last_status == 503
        key = rx.attempts[-1]["key"]
        # "crash": stop the node, start a new one on the same files, endpoint back up
        await deployment.node.app.shutdown()
        await deployment.node.app.cleanup()
        rx.fail = 0
        node2 = PlatformNode(deployment.root / "mirror.db", deployment.root / "platform.db",
                             poll=5.0, retry_base=0.05, retry_cap=0.2)
        r2, _ = await start(node2.app)
        try:
            got = [await asyncio.wait_for(rx.accepted.get(), 10)]
            while got[-1]["body"]["cursor"] < 2:
                got.append(await asyncio.wait_for(rx.accepted.get(), 10))
            assert got[0]["key"] == key  # the in-flight batch was resent unchanged
            actions = [(c["action"], c["case"]) for a in got for c in a["body"]["changes"]]
            assert ("withdraw", "case-w") in actions
            assert store.webhook("mod").cursor == 2
        finally:
            await r2.cleanup()
    finally:
        await runner.cleanup()


async def test_cli_changes_consumer_and_webhooks(deployment):
    await publish_add_then_withdraw(deployment)
    home = str(deployment.root)
    r = CliRunner().invoke(cli, ["--home", home, "platform", "changes", "--consumer", "c", "--limit", "4"])
    assert r.exit_code == 0, r.output
    first = [json.loads(x) for x in r.output.splitlines()]
    assert [c["seq"] for c in first] == [1, 2, 3, 4]
    r = CliRunner().invoke(cli, ["--home", home, "platform", "changes", "--consumer", "c"])
    assert [json.loads(x)["action"] for x in r.output.splitlines()] == ["withdraw", "withdraw"]
    r = CliRunner().invoke(cli, ["--home", home, "platform", "changes", "--consumer", "c"])
    assert r.output == ""
    r = CliRunner().invoke(cli, ["--home", home, "platform", "changes", "--after", "5"])
    assert [json.loads(x)["seq"] for x in r.output.splitlines()] == [6]
    r = CliRunner().invoke(cli, ["--home", home, "platform", "changes"])
    assert r.exit_code == 2
    r = CliRunner().invoke(cli, ["--home", home, "platform", "webhook", "add", "h1", "http://127.0.0.1:9/x",
                                 "--from-now"])
    assert r.exit_code == 0 and "from seq 6" in r.output and "secret: " in r.output
    r = CliRunner().invoke(cli, ["--home", home, "platform", "webhook", "list"])
    (listed,) = [json.loads(x) for x in r.output.splitlines()]
    assert listed["name"] == "h1" and "secret" not in listed
    r = CliRunner().invoke(cli, ["--home", home, "platform", "webhook", "remove", "h1"])
    assert r.exit_code == 0
    r = CliRunner().invoke(cli, ["--home", home, "platform", "webhook", "remove", "h1"])
    assert r.exit_code == 2
