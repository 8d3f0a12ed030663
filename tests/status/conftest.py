"""A node with real data for the status page: a clearinghouse home (made by
the CLI) that publishes ``tid`` (public) and ``ncii`` (members-only) and
follows ``partner`` from another publisher, served by ``build_app`` on
loopback with its follower running; tokens issued by the CLI."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from federation.core.entries import Add, Withdraw
from federation.node.assembly import NODE_STATES, build_app, build_publisher_app
from federation.node.config import load_config
from federation.node.home import Home
from federation.node.keys import load_signer
from federation.store.publisher import Publisher

from click.testing import CliRunner

from federation.cli.main import cli
from support.loopback import BOUND, Servers


@dataclass
class StatusNode:
    url: str
    home: Home
    member: str  # member token of platform-a, scoped to ncii
    operator: str  # publisher token scoped to every feed
    servers: Servers
    partner_url: str  # plain 'federation serve' of the partner's home

    @staticmethod
    def cli(home: Path, *args: str) -> str:
        return run(home, *args)

    async def get(self, path: str = "/", token: str | None = None, base: str | None = None) -> tuple[int, dict, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
            async with s.get((base or self.url) + path, headers=headers) as r:
                return r.status, dict(r.headers), await r.text()


def run(home: Path, *args: str) -> str:
    """The real CLI, in process (click's runner), as an operator runs it."""
    r = CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def _create(home: Path, name: str, origin: str, *extra: str) -> str:
    out = run(home, "feed", "create", name, "--origin", origin, *extra)
    return next(line.split()[1] for line in out.splitlines() if line.startswith("vkey:"))


def _publish(home: Path, name: str, ops) -> None:
    pub = Publisher(Home(home).publisher_db)
    try:
        pub.publish(name, ops, load_signer(Home(home).key_path(name)))
    finally:
        pub.close()


def _token(home: Path, member: str, *args: str) -> str:
    return run(home, "token", "issue", member, *args).split()[-1]


def md5(i: int) -> bytes:
    return bytes.fromhex(f"{i:032x}")


@pytest.fixture
async def status_node(tmp_path):
    ch, partner = tmp_path / "clearinghouse", tmp_path / "partner"
    now = int(time.time())
    _create(ch, "tid", "clearinghouse.example/feeds/tid", "--access", "public")
    _create(ch, "ncii", "clearinghouse.example/feeds/ncii")
    pvkey = _create(partner, "partner", "partner.example/feeds/partner", "--access", "public")
    _publish(ch, "tid", [Add("md5", md5(i), "case-17", ("csam",), now) for i in range(1, 4)])
    _publish(ch, "tid", [Withdraw("hash_error", now, "md5", md5(2))])
    _publish(ch, "ncii", [Add("md5", md5(100 + i), "ncii-9", ("ncii",), now) for i in range(2)])
    _publish(partner, "partner", [Add("md5", md5(200 + i), "p-1", ("csam",), now) for i in range(2)])
    member = _token(ch, "platform-a", "--feed", "ncii")
    operator = _token(ch, "operator", "--feed", "*", "--role", "publisher")

    servers = Servers()
    synced = asyncio.Event()
    try:
        partner_url = await servers.start(build_publisher_app(Home(partner)))
        config = tmp_path / "node.toml"
        config.write_text(f"""
[node]
listen = "127.0.0.1:0"
home = "clearinghouse"

[[publish]]
name = "tid"

[[publish]]
name = "ncii"

[[follow]]
name = "partner"
origin = "partner.example/feeds/partner"
vkeys = ["{pvkey}"]
urls = ["{partner_url}/feeds/partner/"]
""")
        cfg = load_config(config)
        app = build_app(cfg, Home.resolve(str(cfg.home)), on_sync=lambda feed, r: synced.set())
        url = await servers.start(app)
        await asyncio.wait_for(synced.wait(), BOUND)  # the follower applied partner's first version
        # ... and finished its round: on teardown the node closes the follower's
        # mirror connection, which must not happen under a sync step still
        # running in a worker thread (see the report on node/assembly.py).
        async def round_done():
            while app[NODE_STATES]["partner"].last_sync is None:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(round_done(), BOUND)
        yield StatusNode(url, Home(ch), member, operator, servers, partner_url)
    finally:
        await servers.close()
