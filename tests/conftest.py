"""Shared fixtures: a publisher with a generated key, its server on 127.0.0.1,
a transparent (until told otherwise) tampering proxy, and mirrors.

Fixtures (all function-scoped, all under ``tmp_path``):

* ``signer``            -- a fresh Ed25519 key named ``ORIGIN``
* ``make_publisher``    -- factory: ``make_publisher(filename, signer, name, origin)`` -> ``PubFeed``
* ``publisher``         -- ``PubFeed`` for feed ``NAME`` in ``pub.db``, no versions yet
* ``serve``             -- async factory: ``await serve(app_or_db_path)`` -> base URL on 127.0.0.1
* ``server``            -- base URL of a server for ``publisher``'s DB
* ``proxy``             -- a running ``TamperProxy`` in front of ``server``
* ``make_mirror``       -- factory: ``make_mirror(filename, urls, vkeys=None, name, origin)`` -> ``Mirror``
* ``mirror``            -- a mirror following ``NAME`` straight from ``server``
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))

from helpers_tamper import NAME, ORIGIN, TamperProxy, adds, feed_url, start_app  # noqa: E402

from federation.core.entries import Add, Withdraw  # noqa: E402
from federation.store.mirror import Mirror  # noqa: E402
from federation.core.note import Signer  # noqa: E402
from federation.store.publisher import Publisher, PublishResult  # noqa: E402
from federation.net.server import PublisherSource, create_app  # noqa: E402


@dataclass
class PubFeed:
    """A publisher DB with one feed and the key that signs it."""

    pub: Publisher
    signer: Signer
    name: str
    origin: str
    path: Path

    @property
    def vkey(self) -> str:
        return self.signer.vkey

    def publish(self, ops: list[Add | Withdraw], **kw) -> PublishResult:
        return self.pub.publish(self.name, ops, self.signer, **kw)

    def publish_adds(self, n: int, case: str = "case1", labels: tuple[str, ...] = ("csam",),
                     hash_type: str = "md5") -> tuple[PublishResult, list[Add]]:
        ops = adds(n, case, labels, hash_type)
        return self.publish(ops), ops

    def head(self):
        return self.pub.feed(self.name)


@pytest.fixture
def signer() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture
def make_publisher(tmp_path):
    made: list[Publisher] = []

    def make(filename: str = "pub.db", signer: Signer | None = None, name: str = NAME,
             origin: str = ORIGIN) -> PubFeed:
        signer = signer or Signer.generate(origin)
        path = tmp_path / filename
        pub = Publisher(path)
        made.append(pub)
        pub.create_feed(name, origin, signer)
        return PubFeed(pub, signer, name, origin, path)

    yield make
    for p in made:
        p.close()


@pytest.fixture
def publisher(make_publisher, signer) -> PubFeed:
    return make_publisher("pub.db", signer)


@pytest.fixture
async def serve():
    """``await serve(x)``: run an app (or a server over publisher DB path ``x``) on loopback."""
    runners: list[web.AppRunner] = []

    async def start(app_or_path, port: int = 0) -> str:
        app = app_or_path if isinstance(app_or_path, web.Application) else create_app([PublisherSource(app_or_path)])
        runner, url = await start_app(app, port)
        runners.append(runner)
        return url

    yield start
    for r in reversed(runners):
        await r.cleanup()


@pytest.fixture
async def server(serve, publisher) -> str:
    return await serve(publisher.path)


@pytest.fixture
async def proxy(server):
    p = TamperProxy(server)
    await p.start()
    yield p
    await p.close()


@pytest.fixture
def make_mirror(tmp_path, signer):
    made: list[Mirror] = []

    def make(filename: str, urls: list[str] | str, vkeys: list[str] | None = None, name: str = NAME,
             origin: str = ORIGIN) -> Mirror:
        m = Mirror(tmp_path / filename)
        made.append(m)
        m.follow(name, origin, vkeys or [signer.vkey], [urls] if isinstance(urls, str) else list(urls))
        return m

    yield make
    for m in made:
        m.close()


@pytest.fixture
def mirror(make_mirror, server) -> Mirror:
    return make_mirror("m.db", feed_url(server))
