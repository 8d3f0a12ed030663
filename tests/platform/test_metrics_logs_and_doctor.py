"""Operations: /metrics, JSON logs, ``federation doctor`` (OpenAPI: test_openapi_matches_the_routes.py;
CLI help: tests/cli/).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket

import aiohttp
import pytest
from click.testing import CliRunner

from federation.cli.jsonlog import JsonFormatter
from federation.cli.main import cli
from federation.core.note import Signer
from federation.node.doctor import FAIL, OK, run_doctor
from federation.node.home import Home
from federation.node.keys import write_new_key

from support.deployment import FEED, ORIGIN
from support.images import md5_add

pytestmark = pytest.mark.timeout(60)


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            return await r.text()


def value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in metrics:\n{text}")


async def test_metrics_versions_lag_requests_and_failures_by_kind(deployment):
    deployment.publish([md5_add(f"m{i}", "c1") for i in range(3)])
    # a second followed feed whose trusted key is wrong: its syncs fail signature verification
    deployment.mirror.follow("bad", ORIGIN + "-bad", [Signer.generate(ORIGIN + "-bad").vkey], [deployment.feed_url])
    results = await deployment.node.sync_all(deployment.mirror)
    assert [type(r).__name__ for r in results] == ["SignatureError", "SyncResult"]
    async with aiohttp.ClientSession() as s:
        async with s.get(deployment.url + "lookup/md5/" + "00" * 16) as r:
            assert r.status == 503  # fail closed: the "bad" feed never synced, its sync failed verification
            body = await r.json()
            assert [(f["feed"], f["problem"]) for f in body["feeds"]] == [("bad", "never_synced")]
            assert "signature" in body["feeds"][0]["detail"]
        async with s.get(deployment.url + f"lookup/md5/{'00' * 16}?feed={FEED}") as r:
            assert r.status == 200
        async with s.get(deployment.url + "changes?after=x") as r:
            assert r.status == 400
    text = await metrics_text(deployment.url)
    assert value(text, f'federation_feed_version{{feed="{FEED}"}}') == 1
    assert value(text, f'federation_feed_size{{feed="{FEED}"}}') == 4
    assert value(text, f'federation_feed_active_hashes{{feed="{FEED}"}}') == 3
    assert value(text, f'federation_feed_lag_entries{{feed="{FEED}"}}') == 0
    assert value(text, f'federation_feed_last_sync_failed{{feed="{FEED}"}}') == 0
    assert value(text, 'federation_feed_last_sync_failed{feed="bad"}') == 1
    assert value(text, "federation_changes_head") == 3
    assert value(text, 'federation_verification_failures_total{feed="bad",kind="signature"}') == 1
    assert value(text, 'federation_sync_failures_total{feed="bad",kind="signature"}') == 1
    assert value(text, f'federation_sync_duration_seconds_count{{feed="{FEED}"}}') == 1
    assert value(text, 'federation_http_requests_total{method="GET",route="/lookup/{type}/{hash}",status="200"}') == 1
    assert value(text, 'federation_http_requests_total{method="GET",route="/changes",status="400"}') == 1


def test_json_log_lines():
    rec = logging.LogRecord("federation.platform", logging.WARNING, __file__, 1, "sync %s failed", ("tid",), None)
    rec.feed, rec.kind = "tid", "signature"
    out = json.loads(JsonFormatter().format(rec))
    assert out["level"] == "warning" and out["logger"] == "federation.platform"
    assert out["msg"] == "sync tid failed" and out["feed"] == "tid" and out["kind"] == "signature"
    assert out["ts"].endswith("Z")


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_doctor_checks_permissions_trust_and_upstreams(deployment):
    home = Home.resolve(str(deployment.root))
    write_new_key(home.key_path("tid"), ORIGIN)  # 0600
    await deployment.sync()  # a never-synced feed fails the doctor (lookups would fail closed)
    checks = await run_doctor(home, timeout=5)
    assert not [c for c in checks if c.status == FAIL], checks
    assert any(c.status == OK and "verified checkpoint" in c.detail for c in checks)
    # loosen the key file, break an upstream, add a feed whose key does not match its origin
    os.chmod(home.key_path("tid"), 0o644)
    deployment.mirror.conn.execute("UPDATE follows SET urls=? WHERE name=?",
                                   (f"http://127.0.0.1:{closed_port()}/feeds/tid/", FEED))
    deployment.mirror.follow("odd", "other.example/feeds/x", [Signer.generate("someone.else").vkey],
                             ["http://127.0.0.1:9/"])
    checks = await run_doctor(home, network=True, timeout=5)
    fails = {(c.what, c.detail.split(":")[0]) for c in checks if c.status == FAIL}
    assert ("key file", f"{home.key_path('tid')} mode 644") in fails
    assert any(w == f"feed {FEED} upstream" for w, _ in fails)
    assert any(w == "feed odd trust" for w, _ in fails)
    # the CLI runs its own event loop: give it a thread
    r = await asyncio.to_thread(CliRunner().invoke, cli, ["--home", str(home.root), "doctor", "--no-network"])
    assert r.exit_code == 1 and "FAIL key file" in r.output and "chmod 600" in r.output
    os.chmod(home.key_path("tid"), 0o600)
    deployment.mirror.conn.execute("DELETE FROM follows WHERE name='odd'")
    deployment.mirror.conn.execute("UPDATE follows SET urls=? WHERE name=?", (deployment.feed_url, FEED))
    r = await asyncio.to_thread(CliRunner().invoke, cli, ["--home", str(home.root), "doctor"])
    assert r.exit_code == 0, r.output
