"""Fixtures of the mirroring tests.

* ``proxy``       -- a running ``TamperProxy`` (``support.tamper``) in front of ``server``,
                     transparent until a test adds rules
* ``serve_feed``  -- async factory: ``await serve_feed(db)`` -> the URL of feed ``tid`` of
                     publisher DB ``db`` (a ``support.clearinghouse`` home's) on 127.0.0.1
"""
from __future__ import annotations

from pathlib import Path

import pytest

from federation.net.server import PublisherSource, create_app

from support.clearinghouse import NAME
from support.loopback import start_app
from support.tamper import TamperProxy


@pytest.fixture
async def proxy(server):
    p = TamperProxy(server)
    await p.start()
    yield p
    await p.close()


@pytest.fixture
async def serve_feed():
    runners = []

    async def serve(db: Path) -> str:
        runner, url = await start_app(create_app([PublisherSource(db)]))
        runners.append(runner)
        return f"{url}/feeds/{NAME}/"

    yield serve
    for r in reversed(runners):
        await r.cleanup()
