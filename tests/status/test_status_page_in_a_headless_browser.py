"""The status page in a real browser: Debian's chromium, headless, against a
real node on loopback with real data (published, followed, a withdrawal, an
upstream error). ``--dump-dom`` gives the DOM chromium built from our HTML;
``--screenshot`` the picture in docs/node.md (``FEDERATION_STATUS_SCREENSHOT=
docs/img/status.png`` writes it there).

Needs chromium (``apt-get install chromium``): skipped without it, a failure
under FEDERATION_REQUIRE_SYSTEM_TOOLS (CI, ``.ci/run``).
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
from pathlib import Path

from federation.store.mirror import Mirror

from support.system_tools import require_system_tool

CHROMIUM = shutil.which("chromium")
# Headless, and nothing but the page: no sandbox (CI runs as root), no GPU,
# no QUIC, and none of the background traffic a fresh profile starts.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
BROWSER_TIMEOUT = 90.0  # seconds; a cold chromium start takes a few on 2 cores


async def chromium(profile: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), BROWSER_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


async def test_the_status_page_renders_in_headless_chromium(status_node, tmp_path):
    require_system_tool(CHROMIUM is not None, "chromium", "apt-get install chromium (Debian)")
    m = Mirror(status_node.home.mirror_db)
    try:  # an upstream hiccup: shown as the last error, the feed still fresh (transport alone is not a problem)
        m.record_sync("partner", "transport: GET http://partner.example/feeds/partner/checkpoint: 503 <busy>",
                      failed="transport")
    finally:
        m.close()
    # platform-a follows ncii (audited), so the operator's view has a follower.
    assert (await status_node.get("/feeds/ncii/checkpoint", token=status_node.member))[0] == 200

    dom = await chromium(tmp_path / "profile-dom", "--dump-dom", status_node.url + "/")
    assert "<title>federation node</title>" in dom
    rows = dict(re.findall(r'<tr id="row-(published-tid|followed-partner)">(.*?)</tr>', dom, re.S))
    assert set(rows) == {"published-tid", "followed-partner"}
    assert "ncii" not in dom  # the browser has no token: members-only feeds stay out
    cells = re.findall(r"<td[^>]*>(.*?)</td>", rows["published-tid"], re.S)
    assert cells[3:6] == ["2", "6", "2"] and cells[7] == "fresh"
    # The error's markup arrived as text: chromium made no element of it.
    assert "503 &lt;busy&gt;" in dom and "<busy>" not in dom
    assert "<script" not in dom

    shot = tmp_path / "status.png"
    await chromium(tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,900",
                   status_node.url + "/")
    data = shot.read_bytes()
    assert png_size(data) == (1200, 900)
    assert len(data) > 20_000  # a rendered page, not a blank one (which compresses to a few KB)
    target = os.environ.get("FEDERATION_STATUS_SCREENSHOT")
    if target:
        shutil.copy(shot, target)
