"""Retries back off exponentially with jitter (tenacity's wait strategies, ``core.retry``): never less than
half the exponential delay, and many webhooks (or followers) that failed together do not retry in lock-step."""
from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp import web

from federation.core import retry
from federation.core.errors import InputError
from federation.core.webhook_signature import new_secret
from federation.platform.changes import Deliverer
from federation.store.db import connect
from federation.store.platform import PlatformStore

from support.images import md5_add
from support.loopback import start


@pytest.mark.parametrize("failures, low, high", [(1, 0.5, 1), (2, 1, 2), (3, 2, 4), (9, 128, 256), (10, 150, 300),
                                                 (10_000, 150, 300)])
def test_delay_is_between_half_and_all_of_the_capped_exponential(failures, low, high):
    seen = {retry.delay(failures, 1.0, 300.0) for _ in range(200)}
    assert all(low <= d <= high for d in seen), (min(seen), max(seen))
    assert len(seen) > 100  # jittered


@pytest.mark.parametrize("args", [(0, 1.0, 2.0), (1, 0.0, 1.0), (1, 2.0, 1.0), (True, 1.0, 2.0)])
def test_bad_arguments_are_input_errors(args):
    with pytest.raises(InputError):
        retry.delay(*args)


async def test_webhooks_that_fail_together_retry_apart(deployment, tmp_path, caplog):
    deployment.publish([md5_add("a", "c1")])
    await deployment.sync()
    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503)

    down = web.Application()
    down.router.add_post("/hook", unavailable)
    runner, url = await start(down)
    store = PlatformStore(tmp_path / "other-platform.db")  # not the deployment's node: it would deliver too
    mirror = connect(deployment.root / "mirror.db", readonly=True)
    names = [f"h{i}" for i in range(12)]
    for name in names:
        store.add_webhook(name, url + "hook", new_secret())
    deliverer = Deliverer(store, mirror, retry_base=10.0, retry_cap=300.0)
    try:
        with caplog.at_level(logging.WARNING, logger="federation.changes"):
            async with aiohttp.ClientSession() as session:
                for name in names:
                    assert await deliverer.deliver_one(session, name) is False
    finally:
        await runner.cleanup()
        mirror.close()
    waits = [r.args[-1] for r in caplog.records if "retry in" in r.msg]
    assert len(waits) == len(names)
    assert all(5.0 <= w <= 10.0 for w in waits), waits  # first failure: 10 s, jittered over its upper half
    assert len(set(waits)) == len(waits)  # not in lock-step
