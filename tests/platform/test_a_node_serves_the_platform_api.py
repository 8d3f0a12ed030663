"""``serve --config`` with ``[platform]``: one process follows its feeds and
serves the platform API over the same mirror (issue 14).

One sync loop (the followers), whose every round ``/metrics`` counts, so a
failed sync shows there as failed; one auth middleware with the node's own
tokens: platform tokens for the platform API, member tokens for feeds.
"""
from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.errors import InputError
from federation.net import httpserver
from federation.net.server import PublisherSource, create_app
from federation.node.assembly import build_app
from federation.node.config import parse_config
from federation.node.home import Home
from federation.store.tokens import TokenStore

from support.loopback import closed_port, start_app

TIMEOUT = aiohttp.ClientTimeout(total=15)


async def _get(url: str, token: str | None = None) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.get(url, headers=headers) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.text()


def _metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m[1]) if m else None


async def _until(what: str, check, bound: float = 15.0):
    async def loop():
        while not (got := await check()):
            await asyncio.sleep(0.05)  # the follower's next round: no event to await from here
        return got
    try:
        return await asyncio.wait_for(loop(), bound)
    except TimeoutError:
        raise AssertionError(f"not within {bound} s: {what}") from None


@pytest.fixture
async def node(tmp_path, publisher):
    """(node URL, upstream runner, platform token, member token) of a node following
    ``publisher``'s feed with ``[platform]`` on; its first upstream is down, so
    every successful sync also leaves evidence about that one in ``last_error``."""
    publisher.publish_adds(3)
    upstream, up_url = await start_app(create_app([PublisherSource(publisher.path)]))
    home = Home(tmp_path / "node")
    home.root.mkdir()
    cfg = parse_config(f'[[follow]]\nname = "{publisher.name}"\norigin = "{publisher.origin}"\n'
                       f'vkeys = ["{publisher.vkey}"]\n'
                       f'urls = ["http://127.0.0.1:{closed_port()}/feeds/{publisher.name}/", "{up_url}/feeds/{publisher.name}/"]\n'
                       'wait = 0.5\ninterval = 0.1\n\n[platform]\nthreshold = 20\n')
    store = TokenStore(home.auth_db)
    _, platform_token = store.issue("moderation", "platform", ["*"])
    _, member_token = store.issue("peer", "member", ["*"])
    store.close()
    runner, url = await httpserver.start(build_app(cfg, home))
    yield url, upstream, platform_token, member_token
    await runner.cleanup()
    await upstream.cleanup()


async def test_the_platform_api_is_behind_the_nodes_platform_tokens(node, publisher):
    url, _, platform_token, member_token = node
    status, ctype, body = await _get(f"{url}/lookup/md5/{'00' * 16}")
    assert status == 401 and ctype.startswith("application/json") and json.loads(body)["kind"] == "auth"
    status, ctype, body = await _get(f"{url}/lookup/md5/{'00' * 16}", member_token)
    assert status == 403 and ctype.startswith("application/json")
    assert (await _get(f"{url}/metrics"))[0] == 401
    assert (await _get(f"{url}/nowhere"))[0] == 401  # the API's shape is not probed anonymously
    assert (await _get(f"{url}/healthz"))[0] == 200
    # The feeds' side keeps its own rules: a platform token reads no feed.
    assert (await _get(f"{url}/feeds/{publisher.name}/checkpoint", platform_token))[0] in (401, 403)

    async def answered():
        r = await _get(f"{url}/lookup/md5/{'00' * 16}", platform_token)
        return r if r[0] == 200 else None
    status, _, body = await _until("the follower's first sync", answered)
    assert json.loads(body)["matched"] is False and json.loads(body)["based_on"][0]["feed"] == publisher.name


async def test_metrics_count_the_followers_rounds_and_show_a_failed_sync(node, publisher):
    url, upstream, platform_token, _ = node
    feed = publisher.name

    async def metrics():
        status, _, text = await _get(f"{url}/metrics", platform_token)
        assert status == 200
        return text

    async def synced():
        text = await metrics()
        return text if _metric(text, f'federation_feed_version{{feed="{feed}"}}') == 1.0 else None
    text = await _until("version 1 in /metrics", synced)
    # A sync that a later upstream served did not fail, whatever the first one did.
    assert _metric(text, f'federation_feed_last_sync_failed{{feed="{feed}"}}') == 0.0
    assert _metric(text, f'federation_sync_duration_seconds_count{{feed="{feed}"}}') >= 1
    # The upstream goes away: the next rounds fail, and /metrics says so.
    await upstream.cleanup()

    async def failed():
        text = await metrics()
        return text if _metric(text, f'federation_feed_last_sync_failed{{feed="{feed}"}}') == 1.0 else None
    text = await _until("the failed sync in /metrics", failed)
    assert _metric(text, f'federation_sync_failures_total{{feed="{feed}",kind="transport"}}') >= 1


def test_the_platform_table_is_checked(tmp_path):
    assert parse_config("[platform]\n").platform.threshold == 31
    assert parse_config("").platform is None
    with pytest.raises(InputError, match=r"\[platform\].*threshold"):
        parse_config("[platform]\nthreshold = 99\n")
    with pytest.raises(InputError, match=r"\[platform\].*unknown"):
        parse_config("[platform]\nauth = false\n")
    (tmp_path / "node.toml").write_text("[platform]\nthreshold = 20\n")
    out = CliRunner().invoke(cli, ["node", "check", str(tmp_path / "node.toml")]).output
    assert "platform API: /lookup (PDQ threshold 20)" in out


async def test_the_status_page_of_a_node_with_platform_is_behind_the_feeds_access_control(node, publisher):
    """``GET /`` is decided like ``/feeds`` (member and publisher tokens,
    anonymous readers), not refused for want of a platform token."""
    url, _, _, member_token = node
    status, ctype, _ = await _get(f"{url}/")
    assert status == 200 and ctype.startswith("text/html")
    status, _, html = await _get(f"{url}/", member_token)
    assert status == 200 and publisher.name in html
