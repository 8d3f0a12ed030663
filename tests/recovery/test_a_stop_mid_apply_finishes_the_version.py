"""A node stopping while a version is being applied: the version commits
(or rolls back) before the follower's cancellation completes, so the node
never closes the mirror's connection under a transaction (issue 14).

A version is applied in a worker thread, which a cancellation cannot
interrupt; ``store.db.finish_in_thread`` makes the cancelled sync wait for it.
"""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from federation.store.mirror import Mirror
from federation.sync.orchestrator import sync_once

from support.feeds import NAME


async def test_cancelling_a_sync_mid_apply_waits_for_the_version_to_commit(publisher, mirror, monkeypatch):
    publisher.publish_adds(3)
    applying = threading.Event()
    real = Mirror.apply_version

    def slow_apply(self, *args, **kw):
        applying.set()
        time.sleep(0.5)  # the apply is under way when the cancellation arrives
        return real(self, *args, **kw)

    monkeypatch.setattr(Mirror, "apply_version", slow_apply)
    task = asyncio.create_task(sync_once(mirror, NAME))
    assert await asyncio.wait_for(asyncio.to_thread(applying.wait, 15), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 15)
    # The cancellation completed after the version did: applied whole, no
    # transaction open, so the node may close the connection now.
    assert mirror.get(NAME).version == 1
    assert not mirror.conn.in_transaction
