"""A corrupted mirror heals itself (issue 15, item 6).

The mirror database is damaged behind the node's back (SQL on the file, as
a bad disk or a bad restore would). ``verify`` finds it and marks the feed
damaged; lookups fail closed (exit 5, HTTP 503, even with --allow-stale);
the next ``sync`` rebuilds the feed from its upstream -- full log replay or
snapshot bootstrap -- into a fresh database, audits it and swaps it in;
``verify`` is clean and lookups answer again, and the change stream tells
consumers what the rebuild changed.
"""
from __future__ import annotations

import json
import sqlite3

import aiohttp
import pytest

from federation.net.server import PublisherSource, create_app
from federation.platform.node import PlatformNode

from support.disk import acli, batch
from support.loopback import start_app

pytestmark = pytest.mark.timeout(180)

MD5 = "9e107d9d372bb6826bd81d3542a419d6"


async def _published_with(node, tmp_path, snapshot: bool) -> None:
    (tmp_path / "v1.csv").write_text(f"op,type,hash,case,labels,reason\nadd,md5,{MD5},c-17,csam,\n")
    await acli(node.pub, "publish", "tid", str(tmp_path / "v1.csv"))
    await acli(node.pub, "publish", "tid", str(batch(tmp_path / "v2.csv", 600, "c2")))
    if snapshot:
        await acli(node.pub, "snapshot", "write", "tid")
    await acli(node.mirror, "sync")
    assert (await acli(node.mirror, "lookup", "md5", MD5)).returncode == 0


def _damage(db, sql: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        assert conn.execute(sql).rowcount >= 1
    conn.close()


async def _http_lookup(node, tmp_path) -> tuple[int, dict]:
    platform = PlatformNode(node.mirror / "mirror.db", tmp_path / "platform.db")
    runner, base = await start_app(platform.app)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/lookup/md5/{MD5}?allow_stale=true", timeout=aiohttp.ClientTimeout(15)) as r:
                return r.status, await r.json()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("snapshot", [False, True], ids=["log-replay", "snapshot"])
async def test_a_row_deleted_behind_the_mirrors_back_is_found_fails_closed_and_is_healed_by_sync(
        node, tmp_path, snapshot):
    await _published_with(node, tmp_path, snapshot)
    # The damage: the row of MD5 is gone, so a lookup would wrongly say "no match".
    _damage(node.mirror / "mirror.db", f"DELETE FROM hashes WHERE value=x'{MD5}'")
    v = await acli(node.mirror, "verify", check=False)
    assert v.returncode == 1 and "FAIL" in v.stdout and "marked damaged" in v.stdout
    # Fail closed: no "no match" from a mirror known to be wrong, not even with --allow-stale.
    for extra in ([], ["--allow-stale"]):
        p = await acli(node.mirror, "lookup", "md5", MD5, *extra, check=False)
        assert p.returncode == 5 and "damaged" in p.stderr, (p.stdout, p.stderr)
    status, body = await _http_lookup(node, tmp_path)
    assert status == 503 and [f["problem"] for f in body["feeds"]] == ["damaged"]
    status_json = json.loads((await acli(node.mirror, "status", "--json")).stdout)["followed"][0]
    assert (status_json["ready"], status_json["problem"]) == (False, "damaged")
    # The next sync rebuilds it from the upstream and swaps it in.
    s = await acli(node.mirror, "sync")
    assert "healed" in s.stdout and "version 2" in s.stdout
    assert ("bootstrapped from snapshot" in s.stderr) == snapshot
    assert not list(node.mirror.glob(".heal-*"))
    assert "ok (version 2" in (await acli(node.mirror, "verify")).stdout
    assert (await acli(node.mirror, "lookup", "md5", MD5)).returncode == 0
    status, body = await _http_lookup(node, tmp_path)
    assert status == 200 and body["matched"]
    # Consumers learn what the rebuild changed: the lost record is added back.
    changes = [json.loads(x) for x in (await acli(node.mirror, "changes", "tid", "--limit", "1000")).stdout.splitlines()]
    assert (changes[-1]["action"], changes[-1]["hash"]) == ("add", MD5)
    assert len([c for c in changes if c["hash"] == MD5]) == 2  # its first add, and the one after the heal
    # And it keeps following the log from there.
    (tmp_path / "w.jsonl").write_text('{"op":"withdraw","case":"c-17","reason":"submitter_request"}\n')
    await acli(node.pub, "publish", "tid", str(tmp_path / "w.jsonl"))
    assert "version 2 -> 3" in (await acli(node.mirror, "sync")).stdout
    assert (await acli(node.mirror, "lookup", "md5", MD5, check=False)).returncode == 1
    assert "ok (version 3" in (await acli(node.mirror, "verify")).stdout


async def test_a_sync_whose_digest_check_fails_on_damaged_rows_marks_the_feed_and_the_next_sync_heals_it(
        node, tmp_path):
    await _published_with(node, tmp_path, snapshot=False)
    _damage(node.mirror / "mirror.db", f"UPDATE hashes SET labels='tampered' WHERE value=x'{MD5}'")
    # Version 3 withdraws the damaged row: its digest cannot come out right from it.
    (tmp_path / "w.jsonl").write_text('{"op":"withdraw","case":"c-17","reason":"submitter_request"}\n')
    await acli(node.pub, "publish", "tid", str(tmp_path / "w.jsonl"))
    s = await acli(node.mirror, "sync", check=False)
    assert s.returncode == 1 and "error (digest)" in s.stderr
    p = await acli(node.mirror, "lookup", "md5", "ab" * 16, "--allow-stale", check=False)
    assert p.returncode == 5 and "damaged" in p.stderr
    s = await acli(node.mirror, "sync")
    assert "healed" in s.stdout and "version 3" in s.stdout
    assert "ok (version 3" in (await acli(node.mirror, "verify")).stdout
    assert (await acli(node.mirror, "lookup", "md5", MD5, check=False)).returncode == 1  # the withdrawal landed


async def test_a_damaged_mirror_whose_upstream_is_down_stays_closed(node, tmp_path):
    await _published_with(node, tmp_path, snapshot=False)
    _damage(node.mirror / "mirror.db", "UPDATE follows SET count=count+1")
    assert (await acli(node.mirror, "verify", check=False)).returncode == 1
    _damage(node.mirror / "mirror.db", "UPDATE follows SET urls='http://127.0.0.1:9/feeds/tid/'")
    s = await acli(node.mirror, "sync", check=False)
    assert s.returncode == 3 and "rebuilding it from its upstreams" in s.stderr
    followed = json.loads((await acli(node.mirror, "status", "--json")).stdout)["followed"][0]
    assert followed["problem"] == "damaged" and "could not be rebuilt" in followed["last_error"]
    assert not list(node.mirror.glob(".heal-*"))
    assert (await acli(node.mirror, "lookup", "md5", MD5, check=False)).returncode == 5


async def test_a_heal_never_rolls_the_feed_back_to_an_older_tree(node, tmp_path, serve):
    (tmp_path / "v1.csv").write_text(f"op,type,hash,case,labels,reason\nadd,md5,{MD5},c-17,csam,\n")
    await acli(node.pub, "publish", "tid", str(tmp_path / "v1.csv"))
    old = tmp_path / "old.db"  # a copy of the publisher frozen at version 1 (a stale relay)
    src, dst = sqlite3.connect(node.pub / "publisher.db"), sqlite3.connect(old)
    src.backup(dst)
    src.close(), dst.close()
    (tmp_path / "w.jsonl").write_text('{"op":"withdraw","case":"c-17","reason":"submitter_request"}\n')
    await acli(node.pub, "publish", "tid", str(tmp_path / "w.jsonl"))
    await acli(node.mirror, "sync")
    stale = await serve(create_app([PublisherSource(old)])) + "/feeds/tid/"
    _damage(node.mirror / "mirror.db", f"UPDATE follows SET urls='{stale}'")
    _damage(node.mirror / "mirror.db", "UPDATE follows SET count=count+1")
    assert (await acli(node.mirror, "verify", check=False)).returncode == 1
    # Rebuilt from the stale relay it would answer "match" for a withdrawn hash: refused.
    s = await acli(node.mirror, "sync", check=False)
    assert s.returncode == 1 and "error (rollback)" in s.stderr, s.stderr
    assert (await acli(node.mirror, "lookup", "md5", MD5, check=False)).returncode == 5
    _damage(node.mirror / "mirror.db", f"UPDATE follows SET urls='{node.url}'")
    assert "healed" in (await acli(node.mirror, "sync")).stdout
    assert (await acli(node.mirror, "lookup", "md5", MD5, check=False)).returncode == 1
