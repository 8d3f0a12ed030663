"""Push, not only poll: the server side of long-poll on the checkpoint.

``install`` + ``longpoll_middleware``::

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

The follower side, which long-polls an upstream between syncs, is
``sync.follower``.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

from aiohttp import web

from federation.core.checkpoint import checkpoint_size
from federation.core.errors import InputError, MalformedError
from federation.net.server import SOURCES

log = logging.getLogger("federation.push")

MAX_WAIT = 25.0  # below the fetcher's 30 s read timeout
POLL_SECONDS = 0.1
MAX_WAITERS = 10_000  # long-poll requests held at once (each holds a socket and a task)
CHECKPOINT_ROUTE = "/feeds/{name}/checkpoint"


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
        self.closing = False  # set by ``release_all``: the server is stopping

    def release_all(self) -> int:
        """The server is stopping: answer every held request now (with the
        current checkpoint, as on a timeout) and hold no new one, so a
        SIGTERM is not kept waiting ``wait`` seconds by long-pollers.
        Returns how many requests were held."""
        self.closing = True
        held = self.held
        for name in list(self._events):
            self.notify(name)
        return held

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
        at its interval instead (``follower.watch_feed``). Memory stays bounded.
        """
        if self.held >= MAX_WAITERS or self.closing:
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
                if self.closing:
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

    async def release(app: web.Application) -> None:
        # on_shutdown runs after the listener closed and before aiohttp waits
        # for the handlers in flight: held long-polls answer at once.
        held = app[WATCH].release_all()
        if held:
            log.info("stopping: answered %d held long-poll(s) with the current checkpoint", held)

    app.on_shutdown.append(release)


# docs/PROTOCOL.md section 12: ASCII decimals only (int() and float() would also
# take "1_0", " 5", "+5", "1e3", "inf" or other scripts' digits).
_QUERY_NUMBER = {int: re.compile(r"[0-9]{1,19}"), float: re.compile(r"[0-9]{1,19}(?:\.[0-9]{1,9})?")}


def _number(request: web.Request, key: str, kind, low, high):
    text = request.query.get(key)
    if text is None:
        return None
    if not _QUERY_NUMBER[kind].fullmatch(text):
        raise InputError(f"{key} must be an ASCII decimal number")
    value = kind(text)
    if not low <= value <= high:
        raise InputError(f"{key} must be between {low} and {high}")
    return value


@web.middleware
async def longpoll_middleware(request: web.Request, handler):
    """Hold ``GET checkpoint?wait=S&after=N`` until a bigger tree exists."""
    route = request.match_info.route.resource
    if request.method != "GET" or route is None or route.canonical != CHECKPOINT_ROUTE or "wait" not in request.query:
        return await handler(request)
    wait = _number(request, "wait", float, 0.0, 3600.0)
    after = _number(request, "after", int, 0, (1 << 63) - 1)  # a tree size (section 3)
    watch = request.app.get(WATCH)
    if watch is not None and after is not None:
        await watch.wait_newer(request.match_info["name"], after, min(wait, MAX_WAIT))
    resp = await handler(request)
    resp.headers["Cache-Control"] = "no-store"  # a held answer must not be cached
    return resp
