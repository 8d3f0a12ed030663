"""A whole loopback deployment: publisher server -> mirror -> platform node
(the ``deployment`` fixture builds one per test).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from federation.core.entries import Add, Withdraw
from federation.core.note import Signer
from federation.platform.node import PlatformNode
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher
from federation.sync.orchestrator import sync_once

FEED = "tid"
ORIGIN = "clearinghouse.test/feeds/tid"


@dataclass
class Deployment:
    root: Path
    pub: Publisher
    signer: Signer
    feed_url: str
    mirror: Mirror
    node: PlatformNode
    url: str  # the platform node's base URL

    def publish(self, ops: list[Add | Withdraw]):
        return self.pub.publish(FEED, ops, self.signer)

    async def sync(self):
        r = await sync_once(self.mirror, FEED)
        self.node.deliverer.notify()
        return r
