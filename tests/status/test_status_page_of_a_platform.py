"""``GET /`` on a platform node (``platform serve``): its followed feeds, and
for a token scoped to every feed its change-stream consumers and webhooks."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp

from federation.node.home import Home
from federation.node.status import install_platform_status
from federation.platform.node import PlatformNode
from federation.store.mirror import Mirror
from federation.store.platform import PlatformStore
from federation.store.publisher import Publisher
from federation.sync.orchestrator import sync_once

from support.loopback import BOUND, closed_port


async def get(url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.get(url, headers=headers) as r:
            return r.status, await r.text()


async def platform_home(status_node, root) -> Home:
    """A platform home whose mirror follows the status node's ``tid`` (synced),
    with a webhook and a change-stream consumer."""
    home = Home(root)
    home.root.mkdir()
    pub = Publisher(status_node.home.publisher_db)
    tid = pub.feed("tid")
    pub.close()
    mirror = Mirror(home.mirror_db)
    try:
        mirror.follow("tid", tid.origin, [tid.vkey], [f"{status_node.url}/feeds/tid/"])
        await sync_once(mirror, "tid")
    finally:
        mirror.close()
    store = PlatformStore(home.platform_db)
    store.add_webhook("alerts", "http://127.0.0.1:9/hook?a=<b>")
    store.claim("moderation-queue", None)
    store.close()
    return home


async def test_a_platform_shows_its_mirror_consumers_and_webhooks_to_its_operators(status_node, tmp_path):
    home = await platform_home(status_node, tmp_path / "platform")
    everything = status_node.cli(home.root, "platform", "token", "issue", "trust-safety").split()[-1]
    scoped = status_node.cli(home.root, "platform", "token", "issue", "partner-team", "--feed", "other").split()[-1]

    node = PlatformNode(home.mirror_db, home.platform_db, auth_db=home.auth_db,
                        extensions=[install_platform_status("federation platform node", home.mirror_db,
                                                            home.platform_db, authenticated=True)])
    url = await status_node.servers.start(node.app) + "/"

    assert (await get(url, None))[0] == 401
    status, html = await get(url, everything)
    assert status == 200
    row = re.search(r'<tr id="row-followed-tid">(.*?)</tr>', html, re.S)[1]
    assert re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[1:8] == [
        "followed", "platform API", "2", "6", "2", re.findall(r"<td>(\d+ s ago)</td>", row)[0],
        "fresh"]
    assert "<tr><td>moderation-queue</td>" in html and '<table id="webhooks">' in html
    assert "http://127.0.0.1:9/hook?a=&lt;b&gt;" in html and "secret" not in html.lower()

    status, html = await get(url, scoped)
    assert status == 200
    assert "row-followed-tid" not in html  # out of its scope
    assert "webhooks" not in html and "consumers" not in html.lower()


async def test_platform_serve_answers_the_status_page(status_node, tmp_path):
    """The real command: ``federation platform serve`` (no --auth, loopback)."""
    home = await platform_home(status_node, tmp_path / "platform")
    port = closed_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "federation", "--home", str(home.root), "platform", "serve", "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=dict(os.environ))
    try:
        url = f"http://127.0.0.1:{port}/"

        async def page() -> str:
            while True:
                try:
                    status, html = await get(url, None)
                    assert status == 200, html
                    return html
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)  # not listening yet
        html = await asyncio.wait_for(page(), BOUND)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), BOUND)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert "<title>federation platform node</title>" in html
    assert "row-followed-tid" in html and "platform API, no authentication" in html
    assert "<tr><td>moderation-queue</td>" in html and "<tr><td>alerts</td>" in html
