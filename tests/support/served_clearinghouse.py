"""A clearinghouse home made by the real CLI (subprocesses), served in-process on 127.0.0.1."""
from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from aiohttp import web

from federation.node.assembly import build_publisher_app
from federation.node.home import Home

from support.loopback import start_app

FEED = "tid"
ORIGIN = "clearinghouse.test/feeds/tid"
H1 = "9e107d9d372bb6826bd81d3542a419d6"


async def cli(home: Path, *args: str, env: dict | None = None) -> tuple[int, str, str]:
    """``python -m federation ARGS`` with FEDERATION_HOME=home; the loop keeps serving meanwhile."""
    e = dict(os.environ, FEDERATION_HOME=str(home), **(env or {}))
    e.pop("FEDERATION_TOKEN", None) if not env or "FEDERATION_TOKEN" not in env else None
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "federation", *args, env=e,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def ok(home: Path, *args: str, env: dict | None = None) -> str:
    rc, out, err = await cli(home, *args, env=env)
    assert rc == 0, f"federation {' '.join(args)}: exit {rc}\n{out}\n{err}"
    return out


async def clearinghouse(home: Path, access: str = "public") -> tuple[str, dict[str, str]]:
    """A feed ``tid`` with one version (H1 in case c-1) and member tokens; returns (vkey, tokens)."""
    out = await ok(home, "feed", "create", FEED, "--origin", ORIGIN, "--access", access)
    vkey = re.search(r"vkey:\s+(\S+)", out)[1]
    batch = home.parent / "v1.csv"
    batch.write_text(f"op,type,hash,case,labels,reason\nadd,md5,{H1},c-1,csam,\n")
    await ok(home, "publish", FEED, str(batch))
    tokens = {}
    for m in ("platform-a", "platform-b"):
        tokens[m] = (await ok(home, "token", "issue", m, "--feed", FEED)).split()[-1]
    return vkey, tokens


async def serve_home(home: Path, **kw) -> tuple[web.AppRunner, str]:
    """Plain ``federation serve`` of ``home`` in this process (``kw``: ``build_publisher_app``'s,
    e.g. ``report_rate``); (runner, base URL)."""
    return await start_app(build_publisher_app(Home(home), **kw))
