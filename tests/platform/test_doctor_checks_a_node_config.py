"""``federation doctor --config node.toml``: each problem of a node config reported precisely.

Real files in tmp_path (keys written by ``federation.keys``, signed trust files),
a real upstream publisher on loopback, a closed port, and a loopback upstream
that never answers (bounded by the doctor's timeout).
"""
from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.note import Cosigner, Signer
from federation.core.trustfile import render_trust, sign_trust
from federation.net.server import PublisherSource, create_app
from federation.node.doctor import FAIL, OK, WARN, load_node_config, run_doctor
from federation.node.home import Home
from federation.node.keys import write_new_key
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher

from support.images import md5_add

pytestmark = pytest.mark.timeout(60)

UP_ORIGIN = "upstream.test/feeds/tid"
TIMEOUT = 0.5  # seconds the doctor waits for each upstream


def trust_file(path: Path, origin: str, log_key: Signer, signer: Signer | None = None) -> Path:
    """A signed trust file (one witness, one trust key); ``signer`` other than its trust key = badly signed."""
    root = Signer.generate("root.test")
    text = render_trust(origin, 1, 3600, [log_key.vkey], [Cosigner.generate("witness.test").vkey], 1,
                        [root.vkey], 1)
    path.write_bytes(sign_trust(text, [signer or root]))
    return path


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def by_what(checks) -> dict[str, list]:
    out: dict[str, list] = {}
    for c in checks:
        out.setdefault(c.what, []).append(c)
    return out


@pytest.fixture
async def world(tmp_path):
    """An upstream publisher on loopback, an upstream that never answers, and a node home."""
    log_key = Signer.generate(UP_ORIGIN)
    up = Publisher(tmp_path / "upstream.db")
    up.create_feed("tid", UP_ORIGIN, log_key)
    up.publish("tid", [md5_add("a", "c1")], log_key)
    release = asyncio.Event()

    async def never(request):
        await release.wait()  # set at teardown: holds the request past the doctor's timeout
        return web.Response(text="late\n")

    hang = web.Application()
    hang.router.add_get("/{tail:.*}", never)
    runners = []
    for app in (create_app([PublisherSource(tmp_path / "upstream.db")]), hang):
        r, url = await serve(app)
        runners.append((r, url))
    home = Home.resolve(str(tmp_path / "node"))
    pub = Publisher(home.publisher_db)
    key = write_new_key(home.key_path("pub"), "node.test/feeds/pub")  # 0600, in HOME/private
    pub.create_feed("pub", key.name, key)
    yield dict(tmp=tmp_path, home=home, pub=pub, log_key=log_key, upstream=runners[0][1], hang=runners[1][1])
    release.set()
    for r, _ in reversed(runners):
        await r.cleanup()
    pub.close()
    up.close()


def good_config(w) -> str:
    trust = trust_file(w["tmp"] / "tid.trust", UP_ORIGIN, w["log_key"])
    return (f'[node]\nhome = "{w["home"].root}"\n\n[[publish]]\nname = "pub"\n\n'
            f'[[follow]]\nname = "tid"\norigin = "{UP_ORIGIN}"\ntrust = "{trust}"\n'
            f'urls = ["{w["upstream"]}/feeds/tid/"]\n')


async def test_clean_config_passes(world):
    path = world["tmp"] / "node.toml"
    path.write_text(good_config(world))
    cfg, parsed = load_node_config(path)
    assert parsed.status == OK
    checks = await run_doctor(world["home"], timeout=TIMEOUT, config=cfg)
    assert not [c for c in checks if c.status == FAIL], checks
    got = by_what(checks)
    assert got["followed tid trust"][0].status == OK and "trust version 1" in got["followed tid trust"][0].detail
    assert got["followed tid upstream"][0].detail.endswith("verified checkpoint, size 2")
    assert got["published pub key"][0].status == OK
    r = await asyncio.to_thread(CliRunner().invoke, cli, ["doctor", "--config", str(path), "--timeout", "5"])
    assert r.exit_code == 0, r.output


async def test_each_problem_is_named(world, monkeypatch):
    tmp, home = world["tmp"], world["home"]
    # published: a key file readable by others, a feed with no key, a feed not in publisher.db,
    # and a key that is not the feed's
    loose = tmp / "keys" / "internal.key"
    internal = write_new_key(loose, "node.test/feeds/internal")
    world["pub"].create_feed("internal", internal.name, internal)
    os.chmod(loose, 0o644)
    nokey = Signer.generate("node.test/feeds/nokey")
    world["pub"].create_feed("nokey", nokey.name, nokey)
    write_new_key(tmp / "keys" / "wrong.key", "node.test/feeds/pub")
    # followed: trust file missing, malformed, badly signed, for another origin; a closed port;
    # an upstream that never answers; an unset token variable
    junk = tmp / "junk.trust"
    junk.write_text("this is not a signed note\n")
    unsigned = trust_file(tmp / "unsigned.trust", UP_ORIGIN, world["log_key"], signer=Signer.generate("mallory.test"))
    other = trust_file(tmp / "other.trust", "elsewhere.test/feeds/x", Signer.generate("elsewhere.test/feeds/x"))
    monkeypatch.delenv("FED_DOCTOR_UNSET_TOKEN", raising=False)
    vkey = world["log_key"].vkey
    text = good_config(world) + f"""
[[publish]]
name = "internal"
key = "{loose}"

[[publish]]
name = "nokey"

[[publish]]
name = "ghost"
api = false

[[publish]]
name = "wrongkey"
key = "{tmp / 'keys' / 'wrong.key'}"

[[follow]]
name = "gone"
origin = "{UP_ORIGIN}"
trust = "{tmp / 'missing.trust'}"
urls = ["{world['upstream']}/feeds/tid/"]

[[follow]]
name = "junk"
origin = "{UP_ORIGIN}"
trust = "{junk}"
urls = ["{world['upstream']}/feeds/tid/"]

[[follow]]
name = "unsigned"
origin = "{UP_ORIGIN}"
trust = "{unsigned}"
urls = ["{world['upstream']}/feeds/tid/"]

[[follow]]
name = "other"
origin = "{UP_ORIGIN}"
trust = "{other}"
urls = ["{world['upstream']}/feeds/tid/"]

[[follow]]
name = "down"
origin = "{UP_ORIGIN}"
vkeys = ["{vkey}"]
urls = ["http://127.0.0.1:{closed_port()}/feeds/tid/", "{world['upstream']}/feeds/tid/"]

[[follow]]
name = "hang"
origin = "{UP_ORIGIN}"
vkeys = ["{vkey}"]
urls = ["{world['hang']}/feeds/tid/"]

[[follow]]
name = "secret"
origin = "{UP_ORIGIN}"
vkeys = ["{vkey}"]
urls = ["{world['upstream']}/feeds/tid/"]
token_env = "FED_DOCTOR_UNSET_TOKEN"
"""
    path = tmp / "node.toml"
    path.write_text(text)
    # the mirror already follows a feed the config does not declare
    Mirror(home.mirror_db).follow("stale", UP_ORIGIN, [vkey], [world["upstream"] + "/feeds/tid/"])
    cfg, _ = load_node_config(path)
    started = asyncio.get_running_loop().time()
    checks = await run_doctor(home, timeout=TIMEOUT, config=cfg)
    assert asyncio.get_running_loop().time() - started < 10  # every upstream is bounded by the timeout
    got = by_what(checks)

    def only(what: str, status: str) -> str:
        found = [c for c in got[what] if c.status == status]
        assert len(found) == 1, (what, got[what])
        return found[0].detail

    assert only("published internal key", FAIL) == f"{loose} mode 644, want 600: chmod 600 {loose}"
    assert only("published nokey key", FAIL) == f"{home.key_path('nokey')} missing: the publishing API needs it"
    assert "not a feed of" in only("published ghost", FAIL)
    assert only("published ghost key", WARN) == f"{home.key_path('ghost')} missing"  # api = false: not needed
    assert "not a feed of" in only("published wrongkey", FAIL)
    assert only("followed gone trust", FAIL) == f"trust file {tmp / 'missing.trust'} missing"
    assert only("followed junk trust", FAIL).startswith(f"trust file {junk}: ")
    assert "signed by 0 of its own trust keys" in only("followed unsigned trust", FAIL)
    assert only("followed other trust", FAIL) == (f"trust file {other} is for origin 'elsewhere.test/feeds/x', "
                                                  f"not '{UP_ORIGIN}'")
    down = got["followed down upstream"]
    assert [c.status for c in down] == [FAIL, OK] and "ClientConnectorError" in down[0].detail
    assert only("followed hang upstream", FAIL) == f"{world['hang']}/feeds/tid/: no answer within {TIMEOUT}s"
    assert only("followed secret token", FAIL) == ("environment variable FED_DOCTOR_UNSET_TOKEN (its upstream "
                                                   "token) is not set")
    assert "will not sync it" in only("followed stale", WARN)
    assert only("followed tid upstream", OK)

    # the CLI prints them and exits 1; --no-network skips the upstreams
    r = await asyncio.to_thread(CliRunner().invoke, cli, ["doctor", "--config", str(path), "--no-network"])
    assert r.exit_code == 1
    assert f"FAIL published internal key: {loose} mode 644, want 600" in r.output
    assert " upstream: " not in r.output


async def test_wrong_key_and_origin_change_are_named(world):
    tmp, home = world["tmp"], world["home"]
    wrong = write_new_key(tmp / "wrong.key", "node.test/feeds/pub")
    Mirror(home.mirror_db).follow("tid", "renamed.test/feeds/tid", [Signer.generate("renamed.test/feeds/tid").vkey],
                                  [world["upstream"] + "/feeds/tid/"])
    path = tmp / "node.toml"
    path.write_text(good_config(world).replace('name = "pub"\n', f'name = "pub"\nkey = "{tmp / "wrong.key"}"\n'))
    cfg, _ = load_node_config(path)
    checks = by_what(await run_doctor(home, network=False, config=cfg))
    [c] = checks["published pub key"]
    assert c.status == FAIL and wrong.vkey in c.detail and "but the feed is signed by" in c.detail
    [c] = checks["followed tid"]
    assert c.status == FAIL and "the mirror follows origin 'renamed.test/feeds/tid'" in c.detail


async def test_config_that_does_not_parse(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text("[[follow]]\nname = 'x'\norigin = 'o'\nurls = ['http://h/']\n")
    r = await asyncio.to_thread(CliRunner().invoke, cli, ["--home", str(tmp_path / "h"), "doctor", "--config",
                                                          str(path), "--no-network"])
    assert r.exit_code == 1
    assert "FAIL config: [[follow]] x: needs vkeys or a trust file" in r.output
    r = await asyncio.to_thread(CliRunner().invoke, cli, ["--home", str(tmp_path / "h"), "doctor", "--config",
                                                          str(tmp_path / "absent.toml"), "--no-network"])
    assert r.exit_code == 1 and "FAIL config: cannot read node config" in r.output
