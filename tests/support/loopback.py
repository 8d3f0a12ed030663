"""Apps on loopback: every server a test starts listens on 127.0.0.1 with an
ephemeral port, and every awaited network step is bounded in time.

Three runners, kept as their tests use them: ``start_app`` returns the base
URL without a trailing slash, ``start`` (the platform tests') with one, and
``Servers`` starts several apps and cleans them all up.
"""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from aiohttp import web

from federation.net.server import PublisherSource, create_app


async def start_app(app: web.Application, port: int = 0) -> tuple[web.AppRunner, str]:
    """Run ``app`` on 127.0.0.1 (ephemeral port by default); return (runner, base URL)."""
    runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    sock_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{sock_port}"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- several servers, one cleanup (the distribution tests') ----------------------

BOUND = 15.0  # seconds: every awaited network step in these tests is bounded by this


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


async def bounded(aw, seconds: float = BOUND):
    return await asyncio.wait_for(aw, seconds)


# ---- the platform tests' runner ---------------------------------------------------

async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/"
