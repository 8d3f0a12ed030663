"""Review (issue 17, promise 5): a lookup runs off the event loop, so one slow
lookup (a long vPDQ query, a large batch) never stalls ``/healthz`` or the
node's other requests. The lookup is held in its thread by the test (an
event), so "slow" is as long as the test wants, not a guess at a duration."""
from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
import pytest

from federation.platform.lookup import LOOKUP

from support.images import md5_add

pytestmark = pytest.mark.timeout(60)


async def test_healthz_and_other_lookups_wait_for_no_slow_lookup(deployment, monkeypatch):
    deployment.publish([md5_add("a", "case-a")])
    await deployment.sync()
    lk = deployment.node.app[LOOKUP]
    entered, release = threading.Event(), threading.Event()
    released = []
    answer = lk.answer

    def slow_answer(queries, feeds=None):
        if not entered.is_set():  # the first lookup only
            entered.set()
            released.append(release.wait(10))  # False: it was never let go (it held whatever ran it)
        return answer(queries, feeds)

    monkeypatch.setattr(lk, "answer", slow_answer)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        async def lookup():
            async with s.get(deployment.url + "lookup/md5/" + "0" * 32) as r:
                return r.status, await r.json()

        slow = asyncio.create_task(lookup())
        assert await asyncio.to_thread(entered.wait, 10)
        start = time.monotonic()
        async with s.get(deployment.url + "healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
            assert r.status == 200 and await r.text() == "ok\n"
        async with s.get(deployment.url + "feeds", timeout=aiohttp.ClientTimeout(total=5)) as r:
            assert r.status == 200
        took = time.monotonic() - start
        assert not slow.done()  # the lookup is still held in its thread
        release.set()
        status, body = await slow
    assert released == [True]  # let go by the test, after /healthz answered: never a stalled loop
    assert took < 2.0, f"/healthz and /feeds took {took:.1f} s while a lookup ran"
    assert status == 200 and body["matched"] is False and body["based_on"][0]["feed"] == "tid"
