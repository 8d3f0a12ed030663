"""Webhook delivery against misbehaving receivers (issue 16): delivered means
delivered to the configured receiver. Redirects are never followed; an
answer is read only as a bounded prefix; each webhook has its own worker, so
a hanging receiver delays nobody else. Real receivers on loopback, a real
platform node over a real mirror."""
from __future__ import annotations

import asyncio
import json
import resource
import time

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from federation.cli.main import cli
from federation.platform.changes import PlatformStore

from support.images import md5_add
from support.loopback import start_app

pytestmark = pytest.mark.timeout(60)


class Target:
    """A receiver that records every request, whatever its method, and accepts it."""

    def __init__(self):
        self.requests: list[tuple[str, bytes]] = []
        self.got = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_route("*", "/hook", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, await request.read()))
        self.got.set()
        return web.Response(status=204)


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_redirects_are_not_followed_and_are_failed_deliveries(deployment):
    """A 302 would turn the delivery into a GET elsewhere and a 307 re-POST the
    signed body to another host; before, that host's 2xx moved the cursor and
    the configured receiver silently missed the changes."""
    target = Target()
    runners = []
    r, target_url = await start_app(target.app)
    runners.append(r)
    redirector = web.Application()
    for code in (302, 307):
        async def redirect(request, code=code):
            await request.read()
            return web.Response(status=code, headers={"Location": target_url + "/hook"})
        redirector.router.add_post(f"/r{code}", redirect)
    r, redirect_url = await start_app(redirector)
    runners.append(r)
    try:
        store = PlatformStore(deployment.root / "platform.db")
        for code in (302, 307):
            store.add_webhook(f"h{code}", f"{redirect_url}/r{code}", "ab" * 32)
        deployment.publish([md5_add(f"h{i}", "case-1") for i in range(3)])
        await deployment.sync()
        await wait_for(lambda: all(store.webhook(f"h{c}").attempts >= 2 or store.webhook(f"h{c}").cursor > 0
                                   for c in (302, 307)), 10, "two attempts per webhook")
        assert target.requests == []  # the second receiver never got the body (nor a GET)
        for code in (302, 307):
            hook = store.webhook(f"h{code}")
            assert hook.cursor == 0 and hook.delivered == 0 and hook.inflight_last == 3
            assert hook.last_status == code
            assert hook.last_error == (f"HTTP {code}: redirect to {target_url}/hook not followed "
                                       "(a webhook is delivered only to its configured URL)")
        # the failure is visible to operators: `webhook list` and GET /webhooks
        out = CliRunner().invoke(cli, ["--home", str(deployment.root), "platform", "webhook", "list"])
        listed = {h["name"]: h for h in map(json.loads, out.output.splitlines())}
        async with aiohttp.ClientSession() as s:
            async with s.get(deployment.url + "webhooks") as resp:
                served = {h["name"]: h for h in (await resp.json())["webhooks"]}
        for view in (listed, served):
            for code in (302, 307):
                h = view[f"h{code}"]
                assert h["cursor"] == 0 and h["last_status"] == code and "not followed" in h["last_error"]
                assert h["attempts"] >= 2 and h["inflight"] == [1, 3]
        store.close()
    finally:
        for r in reversed(runners):
            await r.cleanup()


class HugeAnswer:
    """Answers 500 with a body of ``total`` bytes, generated lazily; records
    how many bytes each attempt could push before the node hung up."""

    def __init__(self, total: int):
        self.total = total
        self.sent: list[int] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.sent.append(0)
        resp = web.StreamResponse(status=500, headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        chunk = b"x" * (1 << 20)
        try:
            while self.sent[-1] < self.total:
                await resp.write(chunk)
                self.sent[-1] += len(chunk)
        except (ConnectionError, RuntimeError):  # the node hung up
            pass
        return resp


async def test_a_huge_error_answer_is_read_as_a_bounded_prefix(deployment):
    """Before: the whole answer was read into memory (3 GB took a node from
    77 MB to 4.9 GB). Now at most MAX_ANSWER_BYTES are read, the connection is
    dropped, and the failure is reported at once."""
    total = 256 << 20
    rx = HugeAnswer(total)
    runner, url = await start_app(rx.app)
    try:
        store = PlatformStore(deployment.root / "platform.db")
        store.add_webhook("big", url + "/hook", "cd" * 32)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
        deployment.publish([md5_add("x", "case-x")])
        start = time.monotonic()
        await deployment.sync()
        await wait_for(lambda: store.webhook("big").last_status is not None, 10, "the first failed attempt")
        elapsed = time.monotonic() - start
        await asyncio.sleep(0.3)
        # The receiver could push only what fits in socket buffers before the
        # node hung up: nowhere near the 256 MiB it had to offer.
        assert rx.sent and rx.sent[0] < 32 << 20, f"the node read {rx.sent[0] >> 20} MiB of the answer"
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        assert grown < 128 << 10, f"peak RSS grew by {grown} KiB"
        assert elapsed < 3, f"failure reported after {elapsed:.1f}s"
        hook = store.webhook("big")
        assert hook.cursor == 0 and hook.last_status == 500
        assert hook.last_error == "HTTP 500: " + "x" * 200, hook.last_error[:300]  # a prefix, for the report
        await wait_for(lambda: len(rx.sent) >= 2, 10, "a retry")
        store.close()
    finally:
        await runner.cleanup()


async def test_a_hanging_receiver_does_not_delay_the_others(deployment):
    """Before, delivery was serial: every webhook waited for the hanging one's
    timeout (10 s here) on every round. Now each webhook has its own worker; a
    webhook added while the node runs gets one, a removed one's worker ends."""
    release = asyncio.Event()
    hung: list[float] = []

    async def hang(request: web.Request) -> web.Response:
        hung.append(time.monotonic())
        await release.wait()
        return web.Response(status=204)

    slow_app = web.Application()
    slow_app.router.add_post("/hook", hang)
    fast, fresh = Target(), Target()
    runners = []
    for app in (slow_app, fast.app, fresh.app):
        runners.append(await start_app(app))
    (_, slow_url), (_, fast_url), (_, fresh_url) = runners
    deliverer = deployment.node.deliverer
    try:
        store = PlatformStore(deployment.root / "platform.db")
        store.add_webhook("a-slow", slow_url + "/hook", "ab" * 32)  # first in name order
        store.add_webhook("b-fast", fast_url + "/hook", "ab" * 32)
        deployment.publish([md5_add("a", "case-a")])
        await deployment.sync()
        await asyncio.wait_for(fast.got.wait(), 3)
        assert hung, "the slow receiver was asked too"
        assert store.webhook("b-fast").cursor == 1 and store.webhook("a-slow").cursor == 0
        # a second version: the fast receiver gets it while the slow one still hangs
        fast.got.clear()
        deployment.publish([md5_add("b", "case-b")])
        await deployment.sync()
        await asyncio.wait_for(fast.got.wait(), 3)
        assert store.webhook("b-fast").cursor == 2 and len(hung) == 1
        # added while running: delivered without a restart
        store.add_webhook("c-new", fresh_url + "/hook", "ab" * 32)
        deliverer.notify()
        await asyncio.wait_for(fresh.got.wait(), 3)
        assert json.loads(fresh.requests[0][1])["cursor"] == 2
        assert deliverer.workers() == {"a-slow", "b-fast", "c-new"}
        # removed: its worker ends (the hanging request is abandoned)
        store.remove_webhook("a-slow")
        deliverer.notify()
        await wait_for(lambda: deliverer.workers() == {"b-fast", "c-new"}, 3, "the removed webhook's worker to end")
        store.close()
    finally:
        release.set()
        for r, _ in reversed(runners):
            await r.cleanup()


@pytest.mark.timeout(90)
async def test_a_webhook_added_again_under_its_name_is_not_held_up_by_the_removed_ones_request(deployment):
    """The supervisor tells webhooks apart by name only. Remove ``h`` (its
    receiver hangs) and add ``h`` again with a new URL: the worker is not
    replaced, so the new receiver waits for the removed one's request to time
    out (10 s), and that failure is booked on the new webhook (attempts,
    last_error, backoff)."""
    release = asyncio.Event()

    entered = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.Response(status=204)

    got = asyncio.Event()

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        got.set()
        return web.Response(status=204)

    apps = [web.Application(), web.Application()]
    apps[0].router.add_post("/hook", hang)
    apps[1].router.add_post("/hook", ok)
    runners = [await start_app(a) for a in apps]
    (_, old_url), (_, new_url) = runners
    store = PlatformStore(deployment.root / "platform.db")
    try:
        store.add_webhook("h", old_url + "/hook", "ab" * 32)
        deployment.publish([md5_add("a", "case-a")])
        await deployment.sync()
        await asyncio.wait_for(entered.wait(), 3)  # the request to the old receiver is in flight
        store.remove_webhook("h")
        store.add_webhook("h", new_url + "/hook", "cd" * 32)
        deployment.node.deliverer.notify()
        t = time.monotonic()
        try:
            await asyncio.wait_for(got.wait(), 3)
        except TimeoutError:
            pytest.fail(f"the new receiver got nothing in 3 s; the new webhook shows {store.webhook('h').public()}")
        assert time.monotonic() - t < 3
    finally:
        release.set()
        store.close()
        for r, _ in reversed(runners):
            await r.cleanup()
