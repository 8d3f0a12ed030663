"""docs/openapi.yaml against the real apps.

Three real apps are built -- a node from ``node.build_app`` (two published
feeds, one public and one members-only, with the publishing API, and a
relayed followed feed), a platform node with ``--auth``, and a witness --
and the test checks:

* the document is valid OpenAPI 3.1 (openapi-spec-validator);
* its (method, path) pairs are exactly the union of the apps' routes;
* sample requests over loopback get a status the document lists for that
  operation, with a documented content type, and JSON bodies that validate
  against the documented schema.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import aiohttp
import pytest
import yaml
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from federation.core.entries import Add
from federation.core.note import Cosigner, Signer
from federation.net.auth import TokenStore
from federation.net.server import PublisherSource, create_app
from federation.node.assembly import build_app
from federation.node.config import parse_config
from federation.node.home import Home
from federation.platform.node import PlatformNode
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher
from federation.store.snapshots import prune, write_snapshot
from federation.sync.orchestrator import sync_once
from federation.trust.witness import Witness, install_witness

from support.loopback import start
from support.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(60)

OPENAPI = REPO_ROOT / "docs" / "openapi.yaml"
TIMEOUT = aiohttp.ClientTimeout(total=15)


def load_spec() -> dict:
    return yaml.safe_load(OPENAPI.read_text())


def md5s(prefix: str, n: int, case: str) -> list[Add]:
    return [Add("md5", hashlib.md5(f"{prefix}{i}".encode()).digest(), case, ("csam",), 0) for i in range(n)]


def routes(app) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}


class Apps:
    """The three apps over files in ``tmp``; ``close()`` releases what was not started."""

    def __init__(self, tmp: Path, upstream_url: str = "http://127.0.0.1:9/feeds/tid/",
                 upstream_vkey: str | None = None):
        self.tmp = tmp
        self.home = Home.resolve(str(tmp / "node"))
        self.signers = {n: Signer.generate(f"node.test/feeds/{n}") for n in ("pub", "internal")}
        self.pub = Publisher(self.home.publisher_db)
        for name, s in self.signers.items():
            self.pub.create_feed(name, s.name, s, access="public" if name == "pub" else "members")
        vkey = upstream_vkey or Signer.generate("upstream.test/feeds/tid").vkey
        self.config = parse_config(
            '[[publish]]\nname = "pub"\n\n[[publish]]\nname = "internal"\naccess = "members"\n\n'
            f'[[follow]]\nname = "tid"\norigin = "upstream.test/feeds/tid"\nvkeys = ["{vkey}"]\n'
            f'urls = ["{upstream_url}"]\nrelay = true\ninterval = 60\n')
        self.node = build_app(self.config, self.home, signers=dict(self.signers))
        self.platform = PlatformNode(tmp / "pmirror.db", tmp / "platform.db", auth_db=tmp / "platform-auth.db",
                                     poll=5.0)
        self.witness_store = Witness(tmp / "witness.db", Cosigner.generate("witness.test"))
        self.witness = create_app([], extensions=[install_witness(self.witness_store)])

    def close(self) -> None:
        self.pub.close()
        self.witness_store.close()


def test_openapi_is_valid_and_matches_every_route(tmp_path):
    spec = load_spec()
    validate_spec(spec)

    def nulls(obj, where="$"):
        # A YAML flow mapping with an unquoted comma silently yields null keys.
        if isinstance(obj, dict):
            for k, v in obj.items():
                assert v is not None, f"{where}.{k} is null (unquoted comma in a flow mapping?)"
                nulls(v, f"{where}.{k}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                nulls(v, f"{where}[{i}]")
    nulls(spec)

    apps = Apps(tmp_path)
    try:
        served = routes(apps.node) | routes(apps.platform.app) | routes(apps.witness)
    finally:
        apps.close()
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert documented - served == set(), "documented but not served"
    assert served - documented == set(), "served but not documented"
    # every path parameter is declared, and every operation documents a 2xx answer
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            names = {resolve(spec, p)["name"] for p in op.get("parameters", []) if resolve(spec, p)["in"] == "path"}
            assert names == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, path
            assert any(code.startswith("2") for code in op["responses"]), (method, path)
            assert "security" in op, (method, path)


def resolve(spec: dict, obj: dict) -> dict:
    while "$ref" in obj:
        node = spec
        for part in obj["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        obj = node
    return obj


class Checker:
    """Sends requests and checks each answer against the document."""

    def __init__(self, spec: dict, session: aiohttp.ClientSession):
        self.spec, self.session = spec, session
        self.checked: set[tuple[str, str, int]] = set()

    async def __call__(self, method: str, base: str, template: str, path: str, status: int, *,
                       token: str | None = None, **kw) -> bytes:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, base + path, headers=headers, **kw) as r:
            body = await r.read()
            ctype = r.content_type
        assert r.status == status, f"{method} {path}: {r.status} {body[:200]!r}"
        op = self.spec["paths"][template][method.lower()]
        assert str(status) in op["responses"], f"{method} {template} answers {status}, which is not documented"
        resp = resolve(self.spec, op["responses"][str(status)])
        content = resp.get("content", {})
        assert ctype in content, f"{method} {path} {status}: content type {ctype} not in {sorted(content)}"
        if ctype == "application/json":
            schema = dict(content[ctype]["schema"], components=self.spec["components"])
            OAS31Validator(schema).validate(json.loads(body))
        self.checked.add((method, template, status))
        return body


async def test_sample_requests_get_documented_answers(tmp_path):
    spec = load_spec()
    # the upstream of the relayed feed: a real publisher on loopback
    up_signer = Signer.generate("upstream.test/feeds/tid")
    up = Publisher(tmp_path / "upstream.db")
    up.create_feed("tid", up_signer.name, up_signer)
    up.publish("tid", md5s("u", 3, "u1"), up_signer)
    runners = []
    r, up_base = await start(create_app([PublisherSource(tmp_path / "upstream.db")]))
    runners.append(r)
    apps = Apps(tmp_path, f"{up_base}feeds/tid/", up_signer.vkey)
    try:
        # a small public feed with a snapshot, pruned: its bundles are gone
        apps.pub.publish("pub", md5s("p", 3, "c1"), apps.signers["pub"])
        size = apps.pub.feed("pub").size
        snap = write_snapshot(apps.home.publisher_db, "pub")
        assert prune(apps.home.publisher_db, "pub") == size
        apps.pub.publish("internal", md5s("i", 2, "c2"), apps.signers["internal"])
        tokens = TokenStore(apps.home.root / "auth.db")
        _, member = tokens.issue("reader", "member", ["internal"])
        _, other = tokens.issue("other", "member", ["pub"])
        _, publisher = tokens.issue("ingest", "publisher", ["pub"])
        _, slow = tokens.issue("slow", "member", ["internal"], rate=0.001, burst=1)
        _, querier = tokens.issue("moderation", "platform", ["*"])  # platform API only, never feeds
        tokens.close()
        ptokens = TokenStore(tmp_path / "platform-auth.db")
        _, p_all = ptokens.issue("moderation", "platform", ["*"])
        _, p_tid = ptokens.issue("team", "platform", ["tid"])
        _, p_member = ptokens.issue("someone", "member", ["*"])
        ptokens.close()

        r, node = await start(apps.node)
        runners.append(r)
        r, platform = await start(apps.platform.app)
        runners.append(r)
        r, witness = await start(apps.witness)
        runners.append(r)
        node, platform, witness = node.rstrip("/"), platform.rstrip("/"), witness.rstrip("/")

        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            check = Checker(spec, s)
            # ---- read side
            await check("GET", node, "/healthz", "/healthz", 200)
            listing = json.loads(await check("GET", node, "/feeds", "/feeds", 200))
            assert "internal" not in {f["name"] for f in listing["feeds"]}  # members-only, no token
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/pub/checkpoint", 200)
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/pub/checkpoint?wait=0&after=0", 200)
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/pub/checkpoint?wait=soon", 400)
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/pub/checkpoint?wait=1&after=-1", 400)
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/internal/checkpoint", 401)
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/nope/checkpoint", 401)
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/internal/checkpoint", 403, token=other)
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/internal/checkpoint", 200, token=member)
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/internal/checkpoint", 401,
                        token="fedtok_aaaaaaaaaaaa_" + "A" * 43)
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/internal/checkpoint", 200, token=slow)
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/internal/checkpoint", 429, token=slow)
            await check("GET", node, "/feeds/{name}/checkpoint", "/feeds/internal/checkpoint", 403, token=querier)
            await check("GET", node, "/feeds/{name}/tile/{path}", f"/feeds/pub/tile/0/000.p/{size}", 200)
            await check("GET", node, "/feeds/{name}/tile/{path}", "/feeds/pub/tile/0/x999/999", 404)
            await check("GET", node, "/feeds/{name}/tile/{path}", "/feeds/pub/tile/nonsense", 404)
            await check("GET", node, "/feeds/{name}/tile/{path}", f"/feeds/pub/tile/entries/000.p/{size}", 410)
            await check("GET", node, "/feeds/{name}/trust/{which}", "/feeds/pub/trust/latest", 404)
            await check("GET", node, "/feeds/{name}/trust/{which}", "/feeds/pub/trust/01", 404)
            index = json.loads(await check("GET", node, "/feeds/{name}/snapshot/index",
                                           "/feeds/pub/snapshot/index", 200))
            assert index["minimum_index"] == size and index["snapshots"][0]["sha256"] == snap.sha256
            await check("GET", node, "/feeds/{name}/snapshot/index", "/feeds/nope/snapshot/index", 401)
            await check("GET", node, "/feeds/{name}/snapshot/{sha}", f"/feeds/pub/snapshot/{snap.sha256}", 200)
            await check("GET", node, "/feeds/{name}/snapshot/{sha}", "/feeds/pub/snapshot/" + "0" * 64, 404)
            # ---- publishing API
            batch = '{"op":"add","type":"sha1","hash":"' + "ab" * 20 + '","case":"n-1"}\n'
            nd = {"Content-Type": "application/x-ndjson"}
            t = "/feeds/{name}/batches/{batch_id}"
            await check("POST", node, t, "/feeds/pub/batches/b1", 401, data=batch, headers=nd)
            await check("POST", node, t, "/feeds/pub/batches/b1", 403, data=batch, headers=nd, token=other)
            await check("POST", node, t, "/feeds/pub/batches/b1", 201, data=batch, headers=nd, token=publisher)
            await check("POST", node, t, "/feeds/pub/batches/b1", 200, data=batch, headers=nd, token=publisher)
            await check("POST", node, t, "/feeds/pub/batches/b1", 409, data=batch + batch, headers=nd,
                        token=publisher)
            await check("POST", node, t, "/feeds/pub/batches/b!", 400, data=batch, headers=nd, token=publisher)
            await check("POST", node, t, "/feeds/pub/batches/b2", 415, data=batch,
                        headers={"Content-Type": "image/png"}, token=publisher)
            await check("POST", node, t, "/feeds/pub/batches/b3", 422, data="", headers=nd, token=publisher)

            # ---- witness
            w = "/witness/add-checkpoint"
            cp = apps.pub.feed("pub").checkpoint
            await check("POST", witness, w, w, 400, data=b"garbage")
            await check("POST", witness, w, w, 404, data=b"old 0\n\n" + cp)
            apps.witness_store.add_log(apps.signers["pub"].name, [apps.signers["pub"].vkey])
            lines = await check("POST", witness, w, w, 200, data=b"old 0\n\n" + cp)
            assert lines.startswith(b"\xe2\x80\x94 witness.test ")  # a signed-note signature line
            assert int(await check("POST", witness, w, w, 409, data=b"old 0\n\n" + cp)) == apps.pub.feed("pub").size

            # ---- platform API (with --auth)
            md5 = "/lookup/{type}/{hash}"
            q = "/lookup/md5/" + "00" * 16
            await check("GET", platform, "/healthz", "/healthz", 200)
            await check("GET", platform, md5, q, 401)
            await check("GET", platform, md5, q, 403, token=p_member)
            # fail closed: the platform's mirror follows no feed yet, then one that never synced
            await check("GET", platform, md5, q, 503, token=p_all)
            pmirror = Mirror(tmp_path / "pmirror.db")
            pmirror.follow("tid", up_signer.name, [up_signer.vkey], [f"{up_base}feeds/tid/"])
            await check("POST", platform, "/lookup", "/lookup", 503, token=p_all,
                        json={"queries": [{"type": "md5", "hash": "00" * 16}]})
            await sync_once(pmirror, "tid")
            pmirror.close()
            await check("GET", platform, md5, q, 200, token=p_all)
            await check("GET", platform, md5, q + "?feed=tid&allow_stale=true", 200, token=p_all)
            await check("GET", platform, md5, "/lookup/md5/zz", 400, token=p_all)
            await check("POST", platform, "/lookup", "/lookup", 200, token=p_all,
                        json={"queries": [{"type": "pdq", "hash": "f" * 64, "threshold": 20}]})
            await check("POST", platform, "/lookup", "/lookup", 400, token=p_all, json={"queries": 3})
            await check("POST", platform, "/lookup", "/lookup", 413, token=p_all, data=b"x" * 400_001)
            await check("GET", platform, "/changes", "/changes?after=0", 200, token=p_tid)
            await check("GET", platform, "/changes", "/changes?feed=ncii", 403, token=p_tid)
            await check("GET", platform, "/changes", "/changes?limit=0", 400, token=p_tid)
            c = "/consumers/{name}/changes"
            await check("GET", platform, c, "/consumers/mod/changes", 200, token=p_all)
            await check("GET", platform, c, "/consumers/bad%20name/changes", 400, token=p_all)
            await check("POST", platform, "/consumers/{name}/ack", "/consumers/mod/ack", 200, token=p_all,
                        json={"cursor": 0})
            await check("POST", platform, "/consumers/{name}/ack", "/consumers/mod/ack", 400, token=p_all,
                        json={"cursor": 5})  # past the head
            await check("GET", platform, "/webhooks", "/webhooks", 403, token=p_tid)
            await check("GET", platform, "/webhooks", "/webhooks", 200, token=p_all)
            await check("GET", platform, "/metrics", "/metrics", 401)
            await check("GET", platform, "/metrics", "/metrics", 200, token=p_all)
            await check("GET", platform, "/feeds", "/feeds", 403, token=p_tid)
            await check("GET", platform, "/feeds", "/feeds", 200, token=p_all)

        # every operation of the document was exercised at least once
        ops = {(m.upper(), p) for p, o in spec["paths"].items() for m in o}
        assert ops - {(m, p) for m, p, _ in check.checked} == set()
    finally:
        for r in reversed(runners):
            await r.cleanup()
        apps.close()
        up.close()
