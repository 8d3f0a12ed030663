"""The status page shows a feed's publisher the feedback members sent about it (open reports per
kind, the latest few with who sent them); nobody else sees it: members never learn who the other
members are."""
from __future__ import annotations

import aiohttp
import pytest

from support.served_clearinghouse import FEED, H1, clearinghouse, ok, serve_home

pytestmark = pytest.mark.timeout(120)


async def test_status_page_shows_the_publisher_the_feedback_on_its_feed(tmp_path):
    ch = tmp_path / "ch"
    _vkey, tokens = await clearinghouse(ch, access="public")
    operator = (await ok(ch, "token", "issue", "operator", "--feed", FEED, "--role", "publisher")).split()[-1]
    runner, url = await serve_home(ch)
    try:
        async with aiohttp.ClientSession() as s:
            report = {"reports": [{"id": "r1", "kind": "false_positive", "type": "md5", "hash": H1}]}
            async with s.post(f"{url}/feeds/{FEED}/feedback", json=report,
                              headers={"Authorization": f"Bearer {tokens['platform-a']}"}) as r:
                assert r.status == 201, await r.text()
            async with s.get(f"{url}/", headers={"Authorization": f"Bearer {operator}"}) as r:
                page = await r.text()
            async with s.get(f"{url}/", headers={"Authorization": f"Bearer {tokens['platform-b']}"}) as r:
                member_page = await r.text()
            async with s.get(f"{url}/") as r:
                anonymous_page = await r.text()
        assert "false_positive" in page and "platform-a" in page, "no feedback on the publisher's status page"
        assert "Open reports: false_positive 1" in page, page
        for other in (member_page, anonymous_page):
            assert FEED in other  # the public feed itself is shown...
            assert "platform-a" not in other and "Feedback" not in other  # ...but not who reported on it
    finally:
        await runner.cleanup()
