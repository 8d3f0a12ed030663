"""The stock ``threatexchange`` CLI reports back (issue 13, "Done when" 2).

A stock ``threatexchange`` (PyPI), configured with our extension, fetches a
feed through a platform node and reports an opinion with its own ``label``
command; the report reaches the clearinghouse's feedback list. Also: sha256
records reach threatexchange as ``video_sha256``, and a missing or wrong
token is a clear error rather than "failed to fetch!".

Real parts: the clearinghouse is ``build_publisher_app`` (what ``federation
serve`` runs) over a home made here, the platform node a ``PlatformNode``
over a mirror that synced it, all on 127.0.0.1; threatexchange and the
clearinghouse's ``federation feedback list`` run as subprocesses.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from federation.core.entries import Add
from federation.core.note import Signer
from federation.node.assembly import build_publisher_app
from federation.node.home import Home
from federation.platform.node import PlatformNode
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher
from federation.store.tokens import TokenStore
from federation.sync.orchestrator import sync_once

from support.images import make_image, pdq_add, pdq_hex
from support.loopback import start_app

pytestmark = pytest.mark.timeout(150)

TX = str(Path(sys.executable).parent / "threatexchange")
FEED, ORIGIN = "tid", "clearinghouse.test/feeds/tid"
VIDEO = hashlib.sha256(b"a video's bytes").hexdigest()


async def tx(state: Path, *args: str, env: dict | None = None, ok: bool = True) -> tuple[int, str]:
    environ = dict(os.environ, TX_STATEDIR=str(state), **(env or {}))
    proc = await asyncio.create_subprocess_exec(TX, *args, env=environ, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    if ok:
        assert proc.returncode == 0, f"threatexchange {' '.join(args)} exited {proc.returncode}:\n{text}"
    return proc.returncode, text


def feedback_list(home: Path, *args: str) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "federation", "--home", str(home), "feedback", "list", FEED, "--json",
                        *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["targets"]


@pytest.fixture
async def nodes(tmp_path):
    """(clearinghouse home, its feed URL, member token, platform URL, platform-auth token store path)."""
    home = Home(tmp_path / "ch")
    signer = Signer.generate(ORIGIN)
    pub = Publisher(home.publisher_db)
    pub.create_feed(FEED, ORIGIN, signer, access="public")
    img = [make_image(s) for s in (41, 42, 43)]  # three PDQ hashes (see test_platform_threatexchange)
    pub.publish(FEED, [pdq_add(pdq_hex(i), f"case-{n}") for n, i in enumerate(img)]
                + [Add("sha256", bytes.fromhex(VIDEO), "case-v", ("csam",), 0)], signer)
    pub.close()
    tokens = TokenStore(home.auth_db)
    _, member = tokens.issue("platform-a", "member", [FEED])
    tokens.close()
    runners = []
    r, ch = await start_app(build_publisher_app(home, {}))
    runners.append(r)
    mirror = Mirror(tmp_path / "mirror.db")
    mirror.follow(FEED, ORIGIN, [signer.vkey], [f"{ch}/feeds/{FEED}/"])
    await sync_once(mirror, FEED)
    mirror.close()
    platform_auth = tmp_path / "platform-auth.db"
    open_node = PlatformNode(tmp_path / "mirror.db", tmp_path / "platform.db", poll=5.0)
    r, platform = await start_app(open_node.app)
    runners.append(r)
    locked = PlatformNode(tmp_path / "mirror.db", tmp_path / "platform2.db", poll=5.0, auth_db=platform_auth)
    r, locked_url = await start_app(locked.app)
    runners.append(r)
    yield home.root, f"{ch}/feeds/{FEED}/", member, platform, locked_url, platform_auth, pdq_hex(img[0])
    for r in reversed(runners):
        await r.cleanup()


async def test_stock_cli_reports_an_opinion_that_reaches_the_feedback_list(nodes, tmp_path):
    ch_home, feed_url, member, platform, _locked, _auth, pdq = nodes
    state = tmp_path / "tx"
    await tx(state, "config", "extensions", "add", "federation.platform.threatexchange")
    await tx(state, "config", "collab", "edit", "federation", "tid-platform", "--create", "--url", platform,
             "--feed", FEED, "--report-url", feed_url, "--report-token-env", "CLEARINGHOUSE_TOKEN")
    await tx(state, "fetch")
    # sha256 arrives as threatexchange's video_sha256 (it used to be dropped)
    _, listing = await tx(state, "dataset", "-P", "--csv")
    assert f"video_sha256,{VIDEO},tid-platform" in listing, listing
    assert f"pdq,{pdq},tid-platform" in listing

    hash_file = tmp_path / "pdq.txt"
    hash_file.write_text(pdq)
    env = {"CLEARINGHOUSE_TOKEN": member}
    # The stock CLI's own command: an opinion, tagged as a false positive.
    await tx(state, "label", "--as-hash", "pdq", "-l", "false_positive,stock", "tid-platform", "photo",
             str(hash_file), env=env)
    video_file = tmp_path / "video.txt"
    video_file.write_text(VIDEO)
    await tx(state, "label", "--as-hash", "video_sha256", "tid-platform", "video", str(video_file), env=env)

    targets = {t["target"]: t for t in feedback_list(ch_home)}
    assert targets[f"pdq:{pdq}"]["counts"] == {"false_positive": 1}
    assert targets[f"pdq:{pdq}"]["members"] == ["platform-a"]
    assert targets[f"sha256:{VIDEO}"]["counts"] == {"actioned": 1}  # a positive opinion without a kind tag
    # The same opinion again is the same report (its id comes from its content).
    await tx(state, "label", "--as-hash", "pdq", "-l", "false_positive,stock", "tid-platform", "photo",
             str(hash_file), env=env)
    assert {t["target"]: t["counts"] for t in feedback_list(ch_home, "--kind", "false_positive")} == \
        {f"pdq:{pdq}": {"false_positive": 1}}

    # A missing or wrong member token is a clear error, and nothing is recorded.
    code, out = await tx(state, "label", "--as-hash", "pdq", "-l", "seen", "tid-platform", "photo", str(hash_file),
                         ok=False)
    assert code == 2 and "CLEARINGHOUSE_TOKEN" in out and "Traceback" not in out, out
    code, out = await tx(state, "label", "--as-hash", "pdq", "-l", "seen", "tid-platform", "photo", str(hash_file),
                         env={"CLEARINGHOUSE_TOKEN": "fedtok_aaaaaaaaaaaa_" + "A" * 43}, ok=False)
    assert code == 2 and "refused the token (401" in out and "Traceback" not in out, out
    assert "seen" not in json.dumps(feedback_list(ch_home))


async def test_fetch_with_a_missing_or_wrong_platform_token_says_so(nodes, tmp_path):
    _ch, _feed_url, _member, _platform, locked, auth_db, _pdq = nodes
    tokens = TokenStore(auth_db)
    _, good = tokens.issue("moderation", "platform", [FEED])
    tokens.close()
    state = tmp_path / "tx"
    await tx(state, "config", "extensions", "add", "federation.platform.threatexchange")
    await tx(state, "config", "collab", "edit", "federation", "locked", "--create", "--url", locked,
             "--feed", FEED, "--token-env", "PLATFORM_TOKEN")
    code, out = await tx(state, "fetch", ok=False)
    assert code != 0 and "PLATFORM_TOKEN" in out and "failed to fetch" not in out, out
    code, out = await tx(state, "fetch", env={"PLATFORM_TOKEN": "fedtok_aaaaaaaaaaaa_" + "A" * 43}, ok=False)
    assert code != 0 and "refused the token (HTTP 401)" in out and "failed to fetch" not in out, out
    await tx(state, "fetch", env={"PLATFORM_TOKEN": good})
    _, listing = await tx(state, "dataset", "-P", "--csv")
    assert f"video_sha256,{VIDEO},locked" in listing
