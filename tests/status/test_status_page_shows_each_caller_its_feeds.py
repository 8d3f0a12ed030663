"""``GET /`` on a node: each published and followed feed's status, behind the
API's access control (docs/node.md, "The status page")."""
from __future__ import annotations

import re

from federation.store.mirror import Mirror
from federation.store.publisher import Publisher


def feed_names(html: str) -> set[str]:
    return set(re.findall(r'<tr id="row-(?:published|followed)-([^"]+)">', html))


async def test_anonymous_callers_see_public_feeds_only(status_node):
    status, headers, html = await status_node.get()
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert "script-src" not in headers["Content-Security-Policy"] and "default-src 'none'" in headers[
        "Content-Security-Policy"]
    assert feed_names(html) == {"tid", "partner"}
    assert "ncii" not in html  # neither its name nor its data
    assert "Followers seen" not in html
    assert "anonymous: public feeds only" in html


async def test_the_page_says_version_size_hashes_freshness_and_changes(status_node):
    _, _, html = await status_node.get()
    row = re.search(r'<tr id="row-published-tid">(.*?)</tr>', html, re.S)[1]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    # name, side, access, version, tree size, active hashes, newest checkpoint, freshness, witnesses
    assert cells[1:6] == ["published", "public", "2", "6", "2"]  # 3 adds + seal, 1 withdrawal + seal
    assert "s ago" in cells[6] and cells[7] == "fresh"
    tid = re.search(r'<section[^>]*id="published-tid">(.*?)</section>', html, re.S)[1]
    assert "withdraw" in tid and "hash_error" in tid and "md5:00000000000000000000000000000002" in tid
    assert tid.count("<td>add</td>") == 3
    partner = re.search(r'<tr id="row-followed-partner">(.*?)</tr>', html, re.S)[1]
    assert re.findall(r"<td[^>]*>(.*?)</td>", partner, re.S)[3:6] == ["1", "3", "2"]
    assert "verified current" in html and "not under a trust file" in html


async def test_a_member_token_sees_its_members_only_feed_but_not_who_follows(status_node):
    status, _, html = await status_node.get(token=status_node.member)
    assert status == 200
    assert feed_names(html) == {"tid", "ncii", "partner"}
    assert "Followers seen" not in html


async def test_a_publisher_token_sees_the_followers_it_has_seen(status_node):
    # platform-a follows ncii: its checkpoint fetch is audited.
    status, _, _ = await status_node.get("/feeds/ncii/checkpoint", token=status_node.member)
    assert status == 200
    _, _, html = await status_node.get(token=status_node.operator)
    ncii = re.search(r'<section[^>]*id="published-ncii">(.*?)</section>', html, re.S)[1]
    assert "Followers seen" in ncii
    row = re.search(r"<tr><td>platform-a</td>(.*?)</tr>", ncii, re.S)[1]
    assert re.findall(r"<td[^>]*>(.*?)</td>", row)[:2] == ["3", "0"]  # fetched size 3, nothing behind


async def test_an_invalid_token_is_refused_as_on_every_route(status_node):
    status, _, html = await status_node.get(token="fed_bogus")
    assert status == 401
    assert "tid" not in html


async def test_errors_and_names_from_upstreams_are_escaped_and_a_failed_feed_is_not_fresh(status_node):
    m = Mirror(status_node.home.mirror_db)
    try:
        m.record_sync("partner", '<script>alert("x")</script><img src=x onerror=alert(1)>', failed="signature")
    finally:
        m.close()
    _, _, html = await status_node.get()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    partner = re.search(r'<tr id="row-followed-partner">(.*?)</tr>', html, re.S)[1]
    assert "NOT FRESH" in partner
    assert "failed: the last sync failed verification" in html


async def test_plain_serve_has_the_page_too(status_node):
    status, headers, html = await status_node.get(base=status_node.partner_url)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert feed_names(html) == {"partner"}
    row = re.search(r'<tr id="row-published-partner">(.*?)</tr>', html, re.S)[1]
    assert re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[1:6] == ["published", "public", "1", "3", "2"]


async def test_a_corrupt_store_is_a_storage_error_not_half_a_page(status_node):
    pub = Publisher(status_node.home.publisher_db)
    try:
        assert pub.replace_checkpoint("tid", pub.feed("tid").checkpoint, b"not a signed note")
    finally:
        pub.close()
    status, _, text = await status_node.get()
    assert status == 503
    assert text.startswith("status page: stored data is unreadable (malformed)")
    assert "partner" not in text
