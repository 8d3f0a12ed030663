"""The one way a mirror fetches tiles: bounded, ordered, size-limited.

Sync, snapshot bootstrap and gossip all fetch hash tiles and entry bundles
through ``TileFetcher``. It keeps up to ``window`` requests in flight (the
``Fetcher``'s concurrency by default) and yields the responses in the order
they were asked for, so a verifier can consume bundles in log order while
the next ones download. The plan it is given may be lazy (a generator over
an absurd signed size costs nothing until fetched) and it never reads more
than ``window`` items ahead of the consumer, so memory is bounded by the
window, not by the plan. Each response is capped at the largest valid
tile or bundle (an oversize one is a ``TransportError`` from ``Fetcher``).
Nothing here interprets bytes: ``acceptance.Acceptance`` does.
"""
from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterable

from federation.core.layout import ENTRIES, TILE_WIDTH, tile_path
from federation.core.tiles import MAX_ENTRY_BYTES
from federation.net.fetcher import Fetcher

MAX_TILE_BYTES = TILE_WIDTH * 32  # a full hash tile
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_BYTES)  # a full bundle of the largest entries


class TileFetcher:
    """Fetches tiles under a ``Fetcher``'s prefixes, ``window`` at a time, in order."""

    def __init__(self, fetcher: Fetcher, window: int | None = None):
        self.fetcher = fetcher
        self.window = max(1, window or fetcher.concurrency)

    def hash_tiles(self, wanted: Iterable[tuple[int, int, int]]) -> AsyncIterator[tuple[tuple[int, int, int], bytes]]:
        """((level, index, width), bytes) for each hash tile of ``wanted``, in its order."""
        return self._ordered((t, tile_path(*t), MAX_TILE_BYTES) for t in wanted)

    def bundles(self, wanted: Iterable[tuple[int, int]]) -> AsyncIterator[tuple[tuple[int, int], bytes]]:
        """((index, width), bytes) for each entry bundle of ``wanted``, in its order."""
        return self._ordered(((i, w), tile_path(ENTRIES, i, w), MAX_BUNDLE_BYTES) for i, w in wanted)

    async def _ordered(self, items):
        """Fetch ``(key, path, max_bytes)`` items with up to ``window`` requests
        in flight; yield ``(key, bytes)`` in order. Leaving early (an error, or
        the consumer stopping) cancels the requests still in flight."""
        pending: collections.deque = collections.deque()
        it = iter(items)
        get = self.fetcher.get
        try:
            for key, path, limit in it:
                pending.append((key, asyncio.ensure_future(get(path, limit))))
                if len(pending) >= self.window:
                    break
            while pending:
                key, task = pending.popleft()
                data = await task
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt[0], asyncio.ensure_future(get(nxt[1], nxt[2]))))
                yield key, data
        finally:
            for _, task in pending:
                task.cancel()
