"""Helpers for the distribution tests (relays, push, auth, export, nodes).

Self-contained on purpose (conftest.py belongs to another area): real
publishers with keys generated here, real aiohttp servers on 127.0.0.1 with
ephemeral ports, real SQLite files under ``tmp_path``.
"""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from federation.core.entries import Add, Withdraw
from federation.store.mirror import Mirror
from federation.core.note import Signer
from federation.store.publisher import Publisher, PublishResult
from federation.net.server import PublisherSource, create_app

BOUND = 15.0  # seconds: every awaited network step in these tests is bounded by this


def ops_for(version: int, n: int = 5, case: str | None = None) -> list[Add]:
    case = case or f"case-{version}"
    return [Add("md5", hashlib.md5(f"{version}/{i}".encode()).digest(), case, ("csam",), 0) for i in range(n)]


@dataclass
class Feed:
    pub: Publisher
    signer: Signer
    name: str
    origin: str
    path: Path

    def publish(self, ops) -> PublishResult:
        return self.pub.publish(self.name, ops, self.signer)

    def publish_version(self, n: int = 5) -> PublishResult:
        head = self.pub.feed(self.name)
        return self.publish(ops_for(head.version + 1, n))

    def withdraw_case(self, case: str) -> PublishResult:
        return self.publish([Withdraw("submitter_request", 0, case=case)])

    def checkpoint(self) -> bytes:
        return self.pub.feed(self.name).checkpoint


def make_feed(path: Path, name: str = "tid", origin: str | None = None, signer: Signer | None = None,
              access: str = "members") -> Feed:
    origin = origin or f"clearinghouse.example/feeds/{name}"
    signer = signer or Signer.generate(origin)
    pub = Publisher(path)
    pub.create_feed(name, origin, signer, access)
    return Feed(pub, signer, name, origin, path)


class Servers:
    """Starts apps on 127.0.0.1:0 and cleans them up."""

    def __init__(self):
        self.runners: list[web.AppRunner] = []

    async def start(self, app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def publisher(self, db: Path, **kw) -> str:
        return await self.start(create_app([PublisherSource(db)], **kw))

    async def close(self) -> None:
        for r in reversed(self.runners):
            await r.cleanup()


@pytest.fixture
async def servers():
    s = Servers()
    yield s
    await s.close()


@pytest.fixture
def feed(tmp_path) -> Feed:
    f = make_feed(tmp_path / "pub.db", access="public")  # read anonymously, and exported, by these tests
    yield f
    f.pub.close()


def follow(path: Path, feed: Feed, urls: list[str], name: str | None = None) -> Mirror:
    m = Mirror(path)
    m.follow(name or feed.name, feed.origin, [feed.signer.vkey], urls)
    return m


def snapshot(m: Mirror, name: str) -> tuple:
    f = m.get(name)
    fid = f.id
    rows = m.conn.execute("SELECT hash_type, value, case_id, labels FROM hashes WHERE feed=? ORDER BY 1,2,3",
                          (fid,)).fetchall()
    return (f.applied_size, f.version, f.digest, f.checkpoint, tuple(rows))


async def bounded(aw, seconds: float = BOUND):
    return await asyncio.wait_for(aw, seconds)
