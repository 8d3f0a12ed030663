"""A node's follower: sync, long-poll the upstream for more, sync again.

``watch_feed`` runs one feed forever (a task per followed feed in a node,
``node.config.build_app``). Each round is one ``orchestrator.sync_once``
over the follower's upstreams, pinned one upstream per attempt so the
follower knows which one served it and long-polls that one
(``GET checkpoint?wait=&after=``, answered by ``net.longpoll``) until it
reports a bigger tree. Errors back off exponentially with jitter
(``core.retry``); an
upstream that answers a long-poll at once without anything new (a static
host) is polled every ``interval`` seconds with jitter instead.

Invariant: the loop never returns or raises until cancelled, whatever an
upstream sends or the mirror's store does; each failure is logged with its
kind, recorded on the feed (``Mirror.record_sync``) and in ``FollowState``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from federation.core import retry
from federation.core.errors import FederationError, MalformedError, TransportError
from federation.core.note import MAX_NOTE_BYTES
from federation.net.fetcher import Fetcher
from federation.core.checkpoint import checkpoint_size
from federation.store.mirror import Mirror
from federation.sync.orchestrator import SyncResult, sync_once

log = logging.getLogger("federation.push")


@dataclass
class FollowState:
    """What a follower knows about its feed, for ``status``."""

    name: str
    upstream: str | None = None
    upstream_size: int | None = None
    last_error: str | None = None
    last_sync: float | None = None
    errors: list[str] = field(default_factory=list)


async def sync_from_upstreams(mirror: Mirror, name: str, urls: list[str], headers: dict | None = None,
                              state: FollowState | None = None) -> SyncResult:
    """One follower round: ``sync_once`` over ``urls``, one upstream per
    attempt, keeping ``state`` (the upstream that served, the last ten
    upstream failures, the error that failed the round)."""
    def failed(url: str, e: FederationError) -> None:
        if state is not None:
            state.errors = (state.errors + [f"{e.kind}: {url}: {e}"])[-10:]

    try:
        result = await sync_once(mirror, name, headers=headers, urls=urls, pinned=True, on_failure=failed)
    except FederationError as e:
        if state is not None:
            state.last_error = f"{e.kind}: {e}"
        raise
    if state is not None:
        state.upstream, state.last_error, state.last_sync = result.upstream, None, time.time()
    return result


async def wait_upstream(url: str, after: int, wait: float, headers: dict | None = None) -> int:
    """Long-poll ``url``'s checkpoint; return the size it reports (unverified)."""
    async with Fetcher([url], headers=headers) as fetcher:
        raw = await fetcher.get(f"checkpoint?wait={wait:g}&after={after}", MAX_NOTE_BYTES)
    try:
        return checkpoint_size(raw)
    except MalformedError as e:
        raise TransportError(f"{url}checkpoint: unparsable checkpoint while waiting: {e}") from e


def jittered(seconds: float) -> float:
    """A polling interval, +-20 %, so followers of one static host do not poll in lock-step."""
    return seconds * random.uniform(0.8, 1.2)


async def watch_feed(mirror: Mirror, name: str, urls: list[str], headers: dict | None = None,
                     wait: float = 20.0, interval: float = 30.0, max_backoff: float = 300.0,
                     on_change: Callable[[SyncResult], None] | None = None,
                     state: FollowState | None = None,
                     on_round: Callable[[float, FederationError | None], None] | None = None) -> None:
    """Follow ``name`` forever: sync, long-poll for more, sync again.

    Never returns or raises (until cancelled): failures are logged with
    their kind, recorded on the feed and retried with exponential back-off
    (plus jitter, so many followers of one upstream do not retry in
    lock-step). Even an unexpected exception (a bug, or the mirror's store
    failing) only costs a round: the task that runs this never dies.
    ``on_round(seconds, error)`` is told how each sync round ended (error
    None: it succeeded), e.g. for ``/metrics``.
    """
    failures = 0  # consecutive failed rounds (sync or long-poll)
    while True:
        began = time.monotonic()
        try:
            result = await sync_from_upstreams(mirror, name, urls, headers, state)
            if on_round is not None:
                on_round(time.monotonic() - began, None)
            if result.changed and on_change is not None:
                on_change(result)
            failures = 0
        except Exception as raised:  # noqa: BLE001 -- a follower loop never dies
            if on_round is not None and isinstance(raised, FederationError):
                on_round(time.monotonic() - began, raised)
            failures += 1
            pause = retry.delay(failures, min(1.0, max_backoff), max_backoff)
            if not isinstance(raised, FederationError):
                log.exception("%s: follower round failed unexpectedly; retrying in about %.0f s", name, pause)
            await asyncio.sleep(pause)
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
            failures += 1
            await asyncio.sleep(min(jittered(interval), retry.delay(failures, min(1.0, max_backoff), max_backoff)))
            continue
        if seen <= size and time.monotonic() - started < wait / 2:
            # Answered at once with nothing new: the upstream does not hold
            # requests (a static host or CDN). Poll instead.
            await asyncio.sleep(jittered(interval))
