"""Nodes from TOML: the three-node federation of the README, and config checks."""
from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.errors import InputError
from federation.node.assembly import NODE_STATES, build_app
from federation.node.config import load_config, parse_config
from federation.node.home import Home

from support.loopback import BOUND, Servers, bounded
from support.paths import REPO_ROOT

DOC = REPO_ROOT / "README.md"


def doc_configs() -> dict[str, str]:
    blocks = re.findall(r"```toml\n# (\w+)\.toml[^\n]*\n(.*?)```", DOC.read_text(), re.S)
    return {name: body for name, body in blocks}


def run(*args) -> str:
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


async def _get(url, token=None, method="GET", data=None, headers=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        async with s.request(method, url, headers=h, data=data) as r:
            return r.status, await r.read()


async def test_three_node_federation_from_the_docs(tmp_path, monkeypatch):
    configs = doc_configs()
    assert set(configs) == {"clearinghouse", "relay", "platform"}
    homes = {n: tmp_path / n for n in configs}
    vkeys = {}
    for feed in ("tid", "ncii"):
        out = run("--home", str(homes["clearinghouse"]), "feed", "create", feed,
                  "--origin", f"clearinghouse.example/feeds/{feed}", *(["--access", "public"] if feed == "tid" else []))
        vkeys[feed] = re.search(r"vkey:\s+(\S+)", out)[1]
    run("--home", str(homes["platform"]), "feed", "create", "internal", "--origin", "platform.example/feeds/internal")
    ncii_token = run("--home", str(homes["clearinghouse"]), "token", "issue", "platform-a", "--feed", "ncii").split()[-1]
    ingest = run("--home", str(homes["platform"]), "token", "issue", "ingest", "--feed", "internal",
                 "--role", "publisher").split()[-1]
    monkeypatch.setenv("NCII_TOKEN", ncii_token)

    servers = Servers()
    synced: asyncio.Queue = asyncio.Queue()
    ports: dict[str, str] = {}
    apps = {}
    try:
        for name in ("clearinghouse", "relay", "platform"):
            text = configs[name].replace("<tid vkey>", vkeys["tid"]).replace("<ncii vkey>", vkeys["ncii"])
            for doc_port, real in ports.items():
                text = text.replace(f"127.0.0.1:{doc_port}", real)
            path = tmp_path / f"{name}.toml"
            path.write_text(text)
            cfg = load_config(path)
            apps[name] = build_app(cfg, Home.resolve(str(cfg.home)),
                                   on_sync=lambda feed, r, node=name: synced.put_nowait((node, feed, r)))
            url = await servers.start(apps[name])
            ports[str(cfg.port)] = url.removeprefix("http://")
        ch, relay, platform = (f"http://{ports[p]}" for p in ("8080", "8081", "8082"))

        # The clearinghouse publishes (CLI, another connection) and via its API.
        batch = tmp_path / "b.csv"
        batch.write_text("op,type,hash,case,labels,reason\n"
                         "add,md5,9e107d9d372bb6826bd81d3542a419d6,c-17,csam;tid,\n")
        run("--home", str(homes["clearinghouse"]), "publish", "tid", str(batch))
        ch_pub = run("--home", str(homes["clearinghouse"]), "token", "issue", "ch", "--feed", "ncii",
                     "--role", "publisher").split()[-1]
        s, _ = await _get(f"{ch}/feeds/ncii/batches/n1", ch_pub, "POST",
                          '{"op":"add","type":"sha1","hash":"' + "ab" * 20 + '","case":"n-1"}\n',
                          {"Content-Type": "application/x-ndjson"})
        assert s == 201
        # The platform publishes its internal list through its API.
        s, _ = await _get(f"{platform}/feeds/internal/batches/i1", ingest, "POST",
                          "op,type,hash,case,labels,reason\nadd,sha256," + "cd" * 32 + ",i-1,,\n",
                          {"Content-Type": "text/csv"})
        assert s == 201

        seen = set()
        while not {("platform", "tid"), ("platform", "ncii"), ("relay", "tid")} <= seen:
            node, feed, r = await bounded(synced.get())
            seen.add((node, feed))
        # The platform may have taken tid v1 from the origin (the relay had no
        # verified version yet, so it answered 404). From now on its first
        # upstream, the relay, serves it.
        batch.write_text("op,type,hash,case,labels,reason\nwithdraw,,,c-17,,submitter_request\n")
        run("--home", str(homes["clearinghouse"]), "publish", "tid", str(batch))
        while True:
            node, feed, r = await bounded(synced.get())
            if (node, feed, r.version) == ("platform", "tid", 2):
                break
        states = apps["platform"][NODE_STATES]
        assert states["tid"].upstream == f"{relay}/feeds/tid/"
        assert states["ncii"].upstream == f"{ch}/feeds/ncii/"
        r = CliRunner().invoke(cli, ["--home", str(homes["platform"]), "lookup", "md5",
                                     "9e107d9d372bb6826bd81d3542a419d6"])
        assert r.exit_code == 1 and "no match" in r.output  # the withdrawal travelled through the relay
        run("--home", str(homes["platform"]), "lookup", "sha1", "ab" * 20)
        run("--home", str(homes["platform"]), "verify")
        # The relay serves the origin's checkpoint, byte for byte.
        assert (await _get(f"{relay}/feeds/tid/checkpoint"))[1] == (await _get(f"{ch}/feeds/tid/checkpoint"))[1]
        # Access control as configured.
        assert (await _get(f"{ch}/feeds/ncii/checkpoint"))[0] == 401
        assert (await _get(f"{ch}/feeds/ncii/checkpoint", ncii_token))[0] == 200
        assert (await _get(f"{platform}/feeds/internal/checkpoint"))[0] == 401
        assert (await _get(f"{relay}/feeds/ncii/checkpoint"))[0] == 401  # not relayed: unknown = protected
        # Status: version, age, last error and lag for every feed.
        # (in a thread: the command runs its own event loop for the upstream queries)
        status = json.loads(await asyncio.to_thread(run, "--home", str(homes["platform"]), "node", "status",
                                                    str(tmp_path / "platform.toml"), "--json"))
        by = {r["feed"]: r for r in status}
        assert by["tid"]["version"] == 2 and by["tid"]["lag"] == 0 and by["tid"]["last_error"] is None
        assert by["ncii"]["version"] == 1 and by["ncii"]["lag"] == 0
        assert by["internal"]["role"] == "publish" and by["internal"]["version"] == 1
    finally:
        await servers.close()


@pytest.mark.parametrize("text,msg", [
    ("[node]\nlisten = 'nope'\n", "listen"),
    ("[node]\nbogus = 1\n", "unknown key"),
    ("[[publish]]\nname = 'a b'\n", "name must match"),
    ("[[publish]]\nname = 'x'\naccess = 'open'\n", "access"),
    ("[[follow]]\nname = 'x'\norigin = 'o'\nurls = ['http://h/']\n", "vkeys or a trust file"),
    ("[[follow]]\nname = 'x'\norigin = 'o'\nvkeys = []\nurls = []\n", "urls"),
    ("[[follow]]\nname = 'x'\norigin = 'o'\nvkeys = ['k']\nurls = ['ftp://h/']\n", "urls"),
    ("[[publish]]\nname = 'x'\n[[follow]]\nname = 'x'\norigin = 'o'\nvkeys=['k']\nurls=['http://h/']\n", "twice"),
    ("[[follow]]\nname = 'x'\norigin = 'o'\nvkeys=['k']\nurls=['http://h/']\nwait = -1\n", "wait"),
    ("not toml [", "not valid TOML"),
])
def test_bad_configs_are_refused_precisely(text, msg):
    with pytest.raises(InputError, match=msg):
        parse_config(text)


def test_doc_configs_parse_and_default(tmp_path):
    for name, text in doc_configs().items():
        cfg = parse_config(text, tmp_path)
        assert cfg.home == tmp_path / name
    cfg = parse_config(doc_configs()["platform"], tmp_path)
    assert [f.urls[0] for f in cfg.follow] == ["http://127.0.0.1:8081/feeds/tid/", "http://127.0.0.1:8080/feeds/ncii/"]
    assert cfg.access() == {"internal": "members"}  # followed feeds not relayed are not served


def test_node_refuses_missing_feeds_and_origin_changes(tmp_path):
    home = Home.resolve(str(tmp_path / "h"))
    with pytest.raises(InputError, match="feed create"):
        build_app(parse_config("[[publish]]\nname = 'nope'\n"), home)
    from federation.core.note import Signer
    s = Signer.generate("o.example/feeds/x")
    build_app(parse_config(f"[[follow]]\nname='x'\norigin='o.example/feeds/x'\nvkeys=['{s.vkey}']\n"
                           "urls=['http://127.0.0.1:9/feeds/x/']\n"), home)
    with pytest.raises(InputError, match="new name"):
        build_app(parse_config(f"[[follow]]\nname='x'\norigin='other.example/feeds/x'\nvkeys=['{s.vkey}']\n"
                               "urls=['http://127.0.0.1:9/feeds/x/']\n"), home)
