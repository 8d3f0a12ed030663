"""Push, not only poll: long-poll on the checkpoint, server and follower side.

Server side (``install`` + ``longpoll_middleware``)::

    GET <prefix>checkpoint?wait=SECONDS&after=SIZE

is answered as soon as the feed's checkpoint has a tree size greater than
``SIZE``, or after ``SECONDS`` (at most ``MAX_WAIT``) with the current
checkpoint. The answer is always the plain checkpoint, byte for byte, so a
client verifies it exactly as without ``wait``; a static host that ignores
the query string answers at once, and the client falls back to polling.

Wake-ups come from ``CheckpointWatch``: ``notify(name)`` from in-process
writers (publishing API, a relay's follower) wakes waiters at once, and one
background task polls the sources of feeds that have waiters, so writes by
another process (``federation publish``) are seen within ``POLL_SECONDS``.
One task and one ``asyncio.Event`` per feed serve any number of waiters.

Follower side (``watch_feed``): sync, then long-poll the upstream for a newer
size, then sync again. Errors back off exponentially with jitter; an
upstream that answers a long-poll at once without anything new (a static
host) is polled every ``interval`` seconds with jitter instead.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from federation.core.checkpoint import parse_checkpoint_body
from federation.core.errors import FederationError, InputError, MalformedError, TransportError
from federation.net.fetcher import Fetcher
from federation.store.mirror import Mirror
from federation.core.note import MAX_NOTE_BYTES, parse_note
from federation.sync.orchestrator import SyncResult, sync_feed, upstream_failure

log = logging.getLogger("federation.push")

MAX_WAIT = 25.0  # below the fetcher's 30 s read timeout
POLL_SECONDS = 0.1
MAX_WAITERS = 10_000  # long-poll requests held at once (each holds a socket and a task)
CHECKPOINT_ROUTE = "/feeds/{name}/checkpoint"


def checkpoint_size(note: bytes) -> int:
    """Tree size of a checkpoint note, unverified (only a hint for waiting)."""
    return parse_checkpoint_body(parse_note(note).text).size


def _size_of(data: bytes | None) -> int | None:
    if data is None:
        return None
    try:
        return checkpoint_size(data)
    except MalformedError:
        return None


class CheckpointWatch:
    """Per-feed wake-ups for long-poll waiters."""

    def __init__(self, read: Callable[[str], bytes | None]):
        self.read = read  # name -> current checkpoint bytes (the app's sources)
        self._events: dict[str, asyncio.Event] = {}
        self._seen: dict[str, bytes | None] = {}
        self._waiters: dict[str, int] = {}

    @property
    def held(self) -> int:
        """Requests held right now, over all feeds."""
        return sum(self._waiters.values())

    def notify(self, name: str) -> None:
        """Wake every waiter of ``name`` (they re-read the checkpoint)."""
        ev = self._events.pop(name, None)
        if ev is not None:
            ev.set()

    async def wait_newer(self, name: str, after: int, timeout: float) -> None:
        """Return when ``name``'s checkpoint size exceeds ``after`` or on timeout.

        With ``MAX_WAITERS`` requests already held, return at once: the
        client gets the current checkpoint and, seeing no long-poll, polls
        at its interval instead (``watch_feed``). Memory stays bounded.
        """
        if self.held >= MAX_WAITERS:
            return
        deadline = time.monotonic() + timeout
        self._waiters[name] = self._waiters.get(name, 0) + 1
        try:
            while True:
                # Register first, then read: a checkpoint written by another
                # process after this read differs from whatever ``_seen``
                # holds, so ``poll`` wakes us. (Reading first left a window in
                # which the new checkpoint became the baseline: a waiter then
                # slept until its timeout.)
                ev = self._events.setdefault(name, asyncio.Event())
                data = self.read(name)
                self._seen.setdefault(name, data)
                size = _size_of(data)
                if size is None or size > after:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    await asyncio.wait_for(ev.wait(), remaining)
                except asyncio.TimeoutError:
                    return
        finally:
            self._waiters[name] -= 1
            if not self._waiters[name]:
                # The last waiter of this name frees its state, its Event
                # included: names come from request paths, so anything kept
                # per name would grow with every name a client makes up.
                del self._waiters[name]
                self._seen.pop(name, None)
                self._events.pop(name, None)

    async def poll(self) -> None:
        """Background task: notice checkpoints written by other processes."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            self.check_once()

    def check_once(self) -> None:
        """Wake the waiters of every feed whose checkpoint changed since seen."""
        for name in list(self._waiters):
            try:
                data = self.read(name)
            except Exception:  # a source read failing must not kill the poll task
                log.exception("reading checkpoint of %s", name)
                continue
            if data != self._seen.get(name):
                self._seen[name] = data
                self.notify(name)


WATCH = web.AppKey("checkpoint_watch", CheckpointWatch)


def install(app: web.Application) -> None:
    """Extension: a ``CheckpointWatch`` over the app's sources and its poller."""
    from federation.net.server import SOURCES

    def read(name: str) -> bytes | None:
        for source in app[SOURCES]:
            data = source.checkpoint(name)
            if data is not None:
                return data
        return None

    app[WATCH] = CheckpointWatch(read)

    async def poller(app: web.Application):
        task = asyncio.create_task(app[WATCH].poll())
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    app.cleanup_ctx.append(poller)


def _number(request: web.Request, key: str, kind, low, high):
    text = request.query.get(key)
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{key} must be a number\n") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{key} must be between {low} and {high}\n")
    return value


@web.middleware
async def longpoll_middleware(request: web.Request, handler):
    """Hold ``GET checkpoint?wait=S&after=N`` until a bigger tree exists."""
    route = request.match_info.route.resource
    if request.method != "GET" or route is None or route.canonical != CHECKPOINT_ROUTE or "wait" not in request.query:
        return await handler(request)
    wait = _number(request, "wait", float, 0.0, 3600.0)
    after = _number(request, "after", int, 0, 1 << 63)
    if wait != wait:  # NaN
        raise web.HTTPBadRequest(text="wait must be a number\n")
    watch = request.app.get(WATCH)
    if watch is not None and after is not None:
        await watch.wait_newer(request.match_info["name"], after, min(wait, MAX_WAIT))
    resp = await handler(request)
    resp.headers["Cache-Control"] = "no-store"  # a held answer must not be cached
    return resp


# ---- follower side -------------------------------------------------------------------


@dataclass
class FollowState:
    """What a follower knows about its feed, for ``status``."""

    name: str
    upstream: str | None = None
    upstream_size: int | None = None
    last_error: str | None = None
    last_sync: float | None = None
    errors: list[str] = field(default_factory=list)


def _sync_steps(mirror: Mirror, name: str):
    """The same sync as ``sync.sync_once``, but per upstream: the feed's trust
    policy (issue 4, witness quorum and key rotation) and snapshot bootstrap
    when those modules are present, plain ``sync_feed`` otherwise."""
    policy = None
    try:
        from federation.trust.rotation import policy_for
        policy = policy_for(mirror, name)
    except ImportError:
        pass
    try:
        from federation.sync.orchestrator import sync_with_snapshots
        return sync_with_snapshots, policy
    except ImportError:
        async def plain(mirror, name, fetcher, progress=None, policy=None):
            return await sync_feed(mirror, name, fetcher, progress, policy=policy)
        return plain, policy


async def sync_from_upstreams(mirror: Mirror, name: str, urls: list[str], headers: dict | None = None,
                              state: FollowState | None = None) -> SyncResult:
    """Sync from the first upstream that yields a verified result, in order.

    A verification failure at one upstream (a tampering or partial relay) is
    recorded and the next one is tried; the mirror is unchanged by a failure.
    Raises the last error when every upstream failed.
    """
    last: FederationError | None = None
    failures: list[str] = []
    run, policy = _sync_steps(mirror, name)
    for url in urls:
        async with Fetcher([url], headers=headers) as fetcher:
            try:
                result = await run(mirror, name, fetcher, None, policy=policy)
            except Exception as raised:  # noqa: BLE001 -- any failure is this upstream's; try the next
                e = upstream_failure(raised, name, url)
                log.warning("%s: upstream %s failed: %s: %s", name, url, e.kind, e)
                failures.append(f"upstream {url} failed ({e.kind}): {e}")
                if state is not None:
                    state.errors = (state.errors + [f"{e.kind}: {url}: {e}"])[-10:]
                last = e
                continue
        # As sync.sync_once: an earlier upstream's failure stays on record
        # after a later one served the sync (evidence about that upstream).
        mirror.record_sync(name, "; ".join(failures) or None)
        if state is not None:
            state.upstream, state.last_error, state.last_sync = url, None, time.time()
        return result
    if last is None:
        raise InputError(f"feed {name}: no upstream URL to sync from")
    mirror.record_sync(name, f"{last.kind}: {last}", failed=last.kind)
    if state is not None:
        state.last_error = f"{last.kind}: {last}"
    raise last


async def wait_upstream(url: str, after: int, wait: float, headers: dict | None = None) -> int:
    """Long-poll ``url``'s checkpoint; return the size it reports (unverified)."""
    async with Fetcher([url], headers=headers) as fetcher:
        raw = await fetcher.get(f"checkpoint?wait={wait:g}&after={after}", MAX_NOTE_BYTES)
    try:
        return checkpoint_size(raw)
    except MalformedError as e:
        raise TransportError(f"{url}checkpoint: unparsable checkpoint while waiting: {e}") from e


def jittered(seconds: float) -> float:
    return seconds * random.uniform(0.8, 1.2)


async def watch_feed(mirror: Mirror, name: str, urls: list[str], headers: dict | None = None,
                     wait: float = 20.0, interval: float = 30.0, max_backoff: float = 300.0,
                     on_change: Callable[[SyncResult], None] | None = None,
                     state: FollowState | None = None) -> None:
    """Follow ``name`` forever: sync, long-poll for more, sync again.

    Never returns or raises (until cancelled): failures are logged with
    their kind, recorded on the feed and retried with exponential back-off
    (plus jitter, so many followers of one upstream do not retry in
    lock-step). Even an unexpected exception (a bug, or the mirror's store
    failing) only costs a round: the task that runs this never dies.
    """
    backoff = 1.0
    while True:
        try:
            result = await sync_from_upstreams(mirror, name, urls, headers, state)
            if result.changed and on_change is not None:
                on_change(result)
            backoff = 1.0
        except Exception as raised:  # noqa: BLE001 -- a follower loop never dies
            if not isinstance(raised, FederationError):
                log.exception("%s: follower round failed unexpectedly; retrying in about %.0f s", name, backoff)
            await asyncio.sleep(jittered(backoff))
            backoff = min(backoff * 2, max_backoff)
            continue
        started = time.monotonic()
        try:
            size = mirror.get(name).applied_size
            # The upstream that just served us is first in line.
            upstream = state.upstream if state is not None and state.upstream else urls[0]
            seen = await wait_upstream(upstream, size, wait, headers)
            if state is not None:
                state.upstream_size = seen
        except Exception as e:  # noqa: BLE001 -- as above: poll instead, never die
            log.info("%s: long-poll failed (%s: %s); polling", name, getattr(e, "kind", type(e).__name__), e)
            await asyncio.sleep(jittered(min(interval, backoff)))
            backoff = min(backoff * 2, max_backoff)
            continue
        if seen <= size and time.monotonic() - started < wait / 2:
            # Answered at once with nothing new: the upstream does not hold
            # requests (a static host or CDN). Poll instead.
            await asyncio.sleep(jittered(interval))
