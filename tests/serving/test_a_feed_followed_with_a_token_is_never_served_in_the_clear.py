"""A feed this home followed with a member token (`follow --token-env`, issue 14) stays
members-only when the home is later served by `serve --config`, whatever the config omits.

The mirror records that the feed was fetched with a token (`follows.token_env`); a node config whose
`[[follow]]` of it leaves out `token_env` and `access` gets the default access "public" (node/config.py),
so the relay and the status page used to hand the members-only list to anyone. Now the node
takes the recorded token variable and defaults such a feed to members-only; an explicit
``access = "public"`` is refused at start.
"""
from __future__ import annotations

import os

import aiohttp
import pytest

from federation.core.errors import InputError
from federation.node.assembly import build_app
from federation.node.config import load_config
from federation.node.home import Home

from support.loopback import start_app
from support.served_clearinghouse import FEED, H1, ORIGIN, clearinghouse, cli, ok, serve_home

pytestmark = pytest.mark.timeout(120)


async def test_a_feed_followed_with_a_token_is_not_relayed_in_the_clear(tmp_path):
    ch, platform = tmp_path / "ch", tmp_path / "platform"
    vkey, tokens = await clearinghouse(ch, access="members")
    runner, url = await serve_home(ch)
    node = None
    try:
        env = {"TID_TOKEN": tokens["platform-a"]}
        await ok(platform, "follow", FEED, "--url", f"{url}/feeds/{FEED}/", "--origin", ORIGIN, "--vkey", vkey,
                 "--token-env", "TID_TOKEN")
        await ok(platform, "sync", FEED, env=env)
        config = tmp_path / "node.toml"
        config.write_text(f"""
[node]
listen = "127.0.0.1:0"
home = "platform"

[[follow]]
name = "{FEED}"
origin = "{ORIGIN}"
vkeys = ["{vkey}"]
urls = ["{url}/feeds/{FEED}/"]
relay = true
""")
        cfg = load_config(config)
        os.environ["TID_TOKEN"] = tokens["platform-a"]  # the node syncs with the recorded variable
        try:
            app = build_app(cfg, Home.resolve(str(cfg.home)))
        finally:
            del os.environ["TID_TOKEN"]
        node, node_url = await start_app(app)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{node_url}/feeds/{FEED}/checkpoint") as r:
                checkpoint_status = r.status
            async with s.get(f"{node_url}/") as r:
                page = await r.text()
        assert checkpoint_status == 401, "an anonymous reader got the members-only feed's checkpoint"
        assert H1 not in page, "the anonymous status page shows the members-only feed's hashes"

        # Saying access = "public" outright is refused at start, naming the variable.
        config.write_text(config.read_text().replace("relay = true", 'relay = true\naccess = "public"'))
        with pytest.raises(InputError, match=r"\$TID_TOKEN.*members only"):
            build_app(load_config(config), Home.resolve(str(cfg.home)))
        # And `export --mirror --config` (the config without access again) withholds it from a static directory.
        config.write_text(config.read_text().replace('\naccess = "public"', ""))
        rc, out, err = await cli(platform, "export", "--mirror", str(tmp_path / "www"), "--config", str(config))
        assert rc == 0 and "not exported" in out + err, (rc, out, err)
        assert not (tmp_path / "www" / FEED / "checkpoint").exists(), "exported a members-only feed in the clear"
    finally:
        if node is not None:
            await node.cleanup()
        await runner.cleanup()
