"""Push: long-poll on the checkpoint (server side) and the follower's watch loop."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from federation.core.checkpoint import checkpoint_size
from federation.net import longpoll
from federation.net.relay import RelaySource
from federation.net.server import PublisherSource, create_app
from federation.sync.follower import watch_feed

from support.feeds import follow
from support.loopback import BOUND, bounded


def push_app(sources):
    return create_app(sources, extensions=[longpoll.install], middlewares=[longpoll.longpoll_middleware])


async def _get(url: str) -> tuple[int, bytes, dict]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.get(url) as r:
            return r.status, await r.read(), dict(r.headers)


async def test_longpoll_answers_at_once_when_newer_exists(feed, servers):
    feed.publish_version()
    url = await servers.start(push_app([PublisherSource(feed.path)]))
    size = feed.pub.feed("tid").size
    started = time.monotonic()
    status, body, headers = await _get(f"{url}/feeds/tid/checkpoint?wait=20&after={size - 1}")
    assert status == 200 and body == feed.checkpoint() and time.monotonic() - started < 5
    assert headers["Cache-Control"] == "no-store"


async def test_longpoll_times_out_with_current_checkpoint(feed, servers):
    url = await servers.start(push_app([PublisherSource(feed.path)]))
    started = time.monotonic()
    status, body, _ = await _get(f"{url}/feeds/tid/checkpoint?wait=0.5&after=0")
    assert status == 200 and body == feed.checkpoint()
    assert time.monotonic() - started >= 0.45  # it was held, not answered at once


async def test_longpoll_wakes_on_publish_by_another_writer(feed, servers):
    """The publish happens on another connection (as 'federation publish' would);
    the watch's poller notices it and the held request answers."""
    url = await servers.start(push_app([PublisherSource(feed.path)]))
    app = servers.runners[-1].app
    task = asyncio.create_task(_get(f"{url}/feeds/tid/checkpoint?wait=20&after=0"))
    # Publish only once the request is held (an event, not a sleep).
    watch = app[longpoll.WATCH]
    while "tid" not in watch._waiters:
        await asyncio.sleep(0)
        assert not task.done()
    started = time.monotonic()
    feed.publish_version()
    status, body, _ = await bounded(task)
    assert status == 200 and checkpoint_size(body) > 0 and body == feed.checkpoint()
    assert time.monotonic() - started < 5  # well before the 20 s wait


@pytest.mark.parametrize("query", ["wait=abc&after=0", "wait=-1&after=0", "wait=5&after=-3", "wait=nan&after=0",
                                   "wait=5&after=99999999999999999999999", "wait=1e400&after=1",
                                   # docs/PROTOCOL.md section 12: ASCII decimals, a tree size at most 2^63 - 1
                                   "wait=5&after=9223372036854775808", "wait=5&after=1_0", "wait=5&after=+1",
                                   "wait=5&after=%201", "wait=5&after=%D9%A3", "wait=1e1&after=1",
                                   "wait=inf&after=1", "wait=5.&after=1", "wait=.5&after=1"])
async def test_malformed_longpoll_is_400(feed, servers, query):
    url = await servers.start(push_app([PublisherSource(feed.path)]))
    status, _, _ = await _get(f"{url}/feeds/tid/checkpoint?{query}")
    assert status == 400


@pytest.mark.parametrize("query", ["wait=0&after=9223372036854775807", "wait=0.25&after=0", "wait=0"])
async def test_longpoll_bounds_that_are_allowed(feed, servers, query):
    url = await servers.start(push_app([PublisherSource(feed.path)]))
    status, body, _ = await _get(f"{url}/feeds/tid/checkpoint?{query}")
    assert status == 200 and body == feed.checkpoint()


async def test_unknown_feed_longpoll_is_404_at_once(feed, servers):
    url = await servers.start(push_app([PublisherSource(feed.path)]))
    started = time.monotonic()
    status, _, _ = await _get(f"{url}/feeds/nope/checkpoint?wait=20&after=0")
    assert status == 404 and time.monotonic() - started < 5


async def test_follower_syncs_within_a_fraction_of_a_second(tmp_path, feed, servers):
    url = await servers.start(push_app([PublisherSource(feed.path)]))
    m = follow(tmp_path / "m.db", feed, [f"{url}/feeds/tid/"])
    changed: asyncio.Queue = asyncio.Queue()
    task = asyncio.create_task(watch_feed(m, "tid", [f"{url}/feeds/tid/"], wait=20, interval=60,
                                          on_change=changed.put_nowait))
    try:
        lags = []
        for _ in range(3):
            watch = servers.runners[-1].app[longpoll.WATCH]
            while "tid" not in watch._waiters:  # the follower is parked on the long-poll
                await asyncio.sleep(0.01)
            published = time.monotonic()
            r = feed.publish_version()
            res = await bounded(changed.get())
            lags.append(time.monotonic() - published)
            assert res.size == r.size and m.get("tid").version == r.version
        assert max(lags) < 1.0, lags  # with a 60 s polling interval, only push explains this
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_follower_falls_back_to_polling_and_backs_off(tmp_path, feed, servers):
    """Upstream without long-poll (answers at once): the follower polls at its
    interval; a dead upstream makes it back off instead of spinning."""
    plain = await servers.publisher(feed.path)  # no push extension: ignores ?wait
    m = follow(tmp_path / "m.db", feed, [f"{plain}/feeds/tid/"])
    changed: asyncio.Queue = asyncio.Queue()
    task = asyncio.create_task(watch_feed(m, "tid", [f"{plain}/feeds/tid/"], wait=20, interval=0.2,
                                          on_change=changed.put_nowait))
    try:
        r = feed.publish_version()
        res = await bounded(changed.get())
        assert res.size == r.size
        r = feed.publish_version()
        res = await bounded(changed.get())
        assert res.size == r.size
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_relay_wakes_its_long_pollers_after_sync(tmp_path, feed, servers):
    origin = await servers.start(push_app([PublisherSource(feed.path)]))
    relay_m = follow(tmp_path / "relay.db", feed, [f"{origin}/feeds/tid/"])
    relay_url = await servers.start(push_app([RelaySource(tmp_path / "relay.db")]))
    relay_app = servers.runners[-1].app
    relay_task = asyncio.create_task(watch_feed(
        relay_m, "tid", [f"{origin}/feeds/tid/"], wait=20, interval=60,
        on_change=lambda r: relay_app[longpoll.WATCH].notify("tid")))
    m = follow(tmp_path / "m.db", feed, [f"{relay_url}/feeds/tid/"])
    changed: asyncio.Queue = asyncio.Queue()
    task = asyncio.create_task(watch_feed(m, "tid", [f"{relay_url}/feeds/tid/"], wait=20, interval=60,
                                          on_change=changed.put_nowait))
    try:
        feed.publish_version()
        r = feed.publish_version(3)
        while (await bounded(changed.get())).size < r.size:
            pass
        assert m.get("tid").version == r.version and m.audit("tid") == []
    finally:
        for t in (task, relay_task):
            t.cancel()
        await asyncio.gather(task, relay_task, return_exceptions=True)


async def test_waiter_is_woken_by_a_write_that_lands_while_it_starts_waiting():
    """Another process commits size 6 between the waiter's checks: the
    checkpoint it sees as 'current' must be the one it compared, or the poll
    never notices the change and the waiter sleeps to its timeout."""
    from federation.core.checkpoint import Checkpoint
    from federation.core.note import Signer
    key = Signer.generate("example.org/feeds/f")
    notes = [Checkpoint(key.name, n, bytes(32)).sign([key]) for n in (5, 6)]
    reads = []

    def read(name):  # the first read sees size 5; every later one, size 6
        reads.append(name)
        return notes[0] if len(reads) == 1 else notes[1]

    watch = longpoll.CheckpointWatch(read)
    waiter = asyncio.create_task(watch.wait_newer("f", after=5, timeout=30))
    await asyncio.sleep(0)  # the waiter read size 5 and is blocked
    assert not waiter.done()
    watch.check_once()  # what the background poll does every POLL_SECONDS
    await asyncio.wait_for(waiter, 2)  # woken, not left to its 30 s timeout


async def test_beyond_max_waiters_a_longpoll_answers_at_once(monkeypatch):
    from federation.core.checkpoint import Checkpoint
    from federation.core.note import Signer
    key = Signer.generate("example.org/feeds/f")
    note = Checkpoint(key.name, 5, bytes(32)).sign([key])
    monkeypatch.setattr(longpoll, "MAX_WAITERS", 3)
    watch = longpoll.CheckpointWatch(lambda name: note)
    held = [asyncio.create_task(watch.wait_newer("f", after=5, timeout=30)) for _ in range(3)]
    await asyncio.sleep(0)
    assert watch.held == 3 and not any(t.done() for t in held)
    await asyncio.wait_for(watch.wait_newer("f", after=5, timeout=30), 2)  # the fourth is not held
    for t in held:
        t.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    assert watch.held == 0
