"""Fixtures shared by several features (pytest finds them here for every test).

All function-scoped, all under ``tmp_path``, every server on 127.0.0.1 with an
ephemeral port. Each feature directory's ``conftest.py`` holds the fixtures
only its tests use; plain helpers are in ``support/``.

Publishers and mirrors of feed ``NAME`` (``support.feeds``):

* ``signer``            -- a fresh Ed25519 key named ``ORIGIN``
* ``make_publisher``    -- factory: ``make_publisher(filename, signer, name, origin)`` -> ``PubFeed``
* ``publisher``         -- ``PubFeed`` for feed ``NAME`` in ``pub.db``, no versions yet
* ``serve``             -- async factory: ``await serve(app_or_db_path)`` -> base URL on 127.0.0.1
* ``server``            -- base URL of a server for ``publisher``'s DB
* ``make_mirror``       -- factory: ``make_mirror(filename, urls, vkeys=None, name, origin)`` -> ``Mirror``
* ``mirror``            -- a mirror following ``NAME`` straight from ``server``

Feed ``tid`` and the servers of the distribution tests (``support.feeds``, ``support.loopback``):

* ``servers``           -- a ``Servers``: ``await servers.start(app)`` / ``servers.publisher(db)``
* ``feed``              -- a public feed ``tid`` in ``pub.db`` (``Feed``)

Whole deployments:

* ``deployment``        -- publisher -> mirror -> platform node (``support.deployment``)
* ``world``             -- a publisher under trust file v1 with three witnesses (``support.trust_world``)
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiohttp import web

# ``support`` is imported as a top-level package by the tests of every directory.
sys.path.insert(0, str(Path(__file__).parent))

from federation.core.note import Signer  # noqa: E402
from federation.net.server import PublisherSource, create_app  # noqa: E402
from federation.platform.node import PlatformNode  # noqa: E402
from federation.store.mirror import Mirror  # noqa: E402
from federation.store.publisher import Publisher  # noqa: E402

from support.deployment import FEED, ORIGIN as DEPLOYMENT_ORIGIN, Deployment  # noqa: E402
from support.feeds import NAME, ORIGIN, Feed, PubFeed, feed_url, make_feed  # noqa: E402
from support.loopback import Servers, start, start_app  # noqa: E402
from support.trust_world import close_world, make_world  # noqa: E402


# ---- publishers and mirrors of feed NAME -------------------------------------------

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


# ---- feed tid and the distribution tests' servers ----------------------------------

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


# ---- whole deployments ------------------------------------------------------------

@pytest.fixture
async def deployment(tmp_path):
    """Publisher served on loopback, a mirror following it, and a platform node over the mirror."""
    signer = Signer.generate(DEPLOYMENT_ORIGIN)
    pub = Publisher(tmp_path / "pub.db")
    pub.create_feed(FEED, DEPLOYMENT_ORIGIN, signer)
    runners = []
    r, base = await start(create_app([PublisherSource(tmp_path / "pub.db")]))
    runners.append(r)
    feed_url = f"{base}feeds/{FEED}/"
    mirror = Mirror(tmp_path / "mirror.db")
    mirror.follow(FEED, DEPLOYMENT_ORIGIN, [signer.vkey], [feed_url])
    node = PlatformNode(tmp_path / "mirror.db", tmp_path / "platform.db", poll=5.0, retry_base=0.05, retry_cap=0.2)
    r, url = await start(node.app)
    runners.append(r)
    yield Deployment(tmp_path, pub, signer, feed_url, mirror, node, url)
    for r in reversed(runners):
        await r.cleanup()
    mirror.close()
    pub.close()


@pytest.fixture
async def world(tmp_path, make_publisher):
    """Publisher (feed NAME, trust v1 published: 3 witnesses, quorum 2, 2-of-2
    trust keys, 1 h staleness), its server with trust routes, three witnesses."""
    world = await make_world(tmp_path, make_publisher("pub.db"))
    yield world
    await close_world(world)
