"""Random requests to every HTTP route of the real apps (issue 10, section 5).

Four kinds of server run on loopback through ``httpserver.start`` (the runner
of every ``serve`` command): a publisher's read side (snapshots, pruning,
trust routes, long-poll), a node from ``node.build_app`` (access control,
the publishing API, a relayed feed), platform nodes with and without
``--auth`` (lookup, change stream, consumers, webhooks, metrics) and a
witness. Hypothesis picks a route of one of them from its router, fills its
path parameters, query string, headers and body with random text, nasty
numbers and mutated valid seeds, and sends the request as raw bytes. The
only answers allowed are below 500: a verified result or a 4xx naming the
problem.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, strategies as st

from federation.core.entries import Add
from federation.core.note import Cosigner, Signer
from federation.core.witnessformat import add_checkpoint_body
from federation.net.auth import TokenStore
from federation.net.httpserver import Limits, start
from federation.net.server import PublisherSource, create_app
from federation.node.assembly import build_app, read_side
from federation.node.config import parse_config
from federation.node.home import Home
from federation.platform.node import PlatformNode
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher
from federation.store.snapshots import prune, write_snapshot
from federation.sync.orchestrator import sync_once
from federation.trust.witness import Witness, install_witness

from support.fuzz import NUMBERS, as_text, fuzz_settings, mutated
from support.fuzz_seeds import CHECKPOINT, CSV, GRAMMAR_TILE_PATHS, JSONL, WITNESS_REQUEST

pytestmark = pytest.mark.timeout(300)
# Short deadlines, so an incomplete garbage head costs a second, not ten.
LIMITS = Limits(head_timeout=1.0, idle_timeout=2.0)


def md5s(prefix: str, n: int, case: str) -> list[Add]:
    return [Add("md5", hashlib.md5(f"{prefix}{i}".encode()).digest(), case, ("csam",), 0) for i in range(n)]


class Live:
    """The servers, run by an event loop in a thread of their own (so that
    Hypothesis's synchronous tests can talk to them over sockets)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runners: list = []
        self.urls: dict[str, str] = {}
        self.apps: dict[str, object] = {}
        self.tokens: dict[str, str] = {}
        self.closers: list = []

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _serve(self, key: str, app) -> None:
        runner, url = await start(app, limits=LIMITS)
        self.runners.append(runner)
        self.urls[key], self.apps[key] = url, app

    async def setup(self) -> None:
        tmp = self.tmp
        # The clearinghouse: a feed with a snapshot and pruned bundles.
        up_signer = Signer.generate("upstream.test/feeds/tid")
        up = Publisher(tmp / "upstream.db")
        self.closers.append(up.close)
        up.create_feed("tid", up_signer.name, up_signer)
        for v in range(3):
            up.publish("tid", md5s(f"u{v}-", 5, f"case-{v}"), up_signer)
        write_snapshot(tmp / "upstream.db", "tid", progress=False)
        prune(tmp / "upstream.db", "tid")
        up.publish("tid", md5s("u3-", 5, "case-3"), up_signer)
        ext, mw = read_side(tmp / "upstream.db")
        await self._serve("publisher", create_app([PublisherSource(tmp / "upstream.db")], extensions=ext,
                                                  middlewares=mw))
        self.cp = up.feed("tid").checkpoint
        self.up_signer = up_signer

        # A node: two published feeds (public, members-only), one relayed.
        home = Home.resolve(str(tmp / "node"))
        signers = {n: Signer.generate(f"node.test/feeds/{n}") for n in ("pub", "internal")}
        pub = Publisher(home.publisher_db)
        self.closers.append(pub.close)
        for n, s in signers.items():
            pub.create_feed(n, s.name, s)
            pub.publish(n, md5s(n, 3, "c1"), s)
        store = TokenStore(home.root / "auth.db")
        _, self.tokens["member"] = store.issue("reader", "member", ["internal"], rate=1e6, burst=1_000_000)
        _, self.tokens["publisher"] = store.issue("ingest", "publisher", ["pub"], rate=1e6, burst=1_000_000)
        store.close()
        cfg = parse_config(
            '[node]\nanonymous_rate = 1000000\nanonymous_burst = 1000000\n\n'
            '[[publish]]\nname = "pub"\n\n[[publish]]\nname = "internal"\naccess = "members"\n\n'
            f'[[follow]]\nname = "tid"\norigin = "{up_signer.name}"\nvkeys = ["{up_signer.vkey}"]\n'
            f'urls = ["{self.urls["publisher"]}/feeds/tid/"]\nrelay = true\ninterval = 60\n')
        await self._serve("node", build_app(cfg, home, signers=signers))

        # Platform nodes over a mirror of the clearinghouse, with and without --auth.
        mirror = Mirror(tmp / "pmirror.db")
        mirror.follow("tid", up_signer.name, [up_signer.vkey], [f"{self.urls['publisher']}/feeds/tid/"])
        await sync_once(mirror, "tid")
        mirror.close()
        p_store = TokenStore(tmp / "platform-auth.db")
        _, self.tokens["platform"] = p_store.issue("moderation", "platform", ["*"], rate=1e6, burst=1_000_000)
        p_store.close()
        for key, auth in (("platform", None), ("platform-auth", tmp / "platform-auth.db")):
            node = PlatformNode(tmp / "pmirror.db", tmp / f"{key}.db", auth_db=auth, poll=60.0)
            await self._serve(key, node.app)

        # A witness that knows the clearinghouse's log.
        w = Witness(tmp / "witness.db", Cosigner.generate("witness.test"))
        w.add_log(up_signer.name, [up_signer.vkey])
        self.closers.append(w.close)
        await self._serve("witness", create_app([], extensions=[install_witness(w)]))

    async def teardown(self) -> None:
        for r in reversed(self.runners):
            await r.cleanup()
        for close in self.closers:
            close()

    def routes(self) -> list[tuple[str, str, str]]:
        """(server, method, path template) of every route, HEAD aside."""
        return sorted({(key, r.method, r.resource.canonical) for key, app in self.apps.items()
                       for r in app.router.routes() if r.method != "HEAD"})


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    live = Live(tmp_path_factory.mktemp("routes"))
    live.thread.start()
    try:
        live.run(live.setup())
        yield live
    finally:
        live.run(live.teardown())
        live.loop.call_soon_threadsafe(live.loop.stop)
        live.thread.join(10)
        live.loop.close()


# ---- what a request is made of -------------------------------------------------------

NASTY_TEXT = st.sampled_from([n.decode("latin-1") for n in NUMBERS] + ["", ".", "..", "a/b", "\u2014", "%00",
                                                                         "x" * 300, "nope", "-"])
TEXT = st.one_of(st.text(max_size=40), NASTY_TEXT)


def segment(name: str):
    real = {
        "name": st.sampled_from(["tid", "pub", "internal", "nope", "moderation"]),
        "path": st.one_of(GRAMMAR_TILE_PATHS.map(lambda p: p.removeprefix("tile/")),
                          st.sampled_from(["0/000.p/5", "0/000.p/20", "entries/000.p/5", "entries/000.p/20",
                                           "1/000.p/1", "0/x999/999"])),
        "which": st.sampled_from(["latest", "1", "2", "01", "99999999999"]),
        "sha": st.sampled_from(["0" * 64, "ab" * 32, "x"]),
        "batch_id": st.sampled_from(["b1", "b-2", "b:3", "b!"]),
        "type": st.sampled_from(["md5", "sha1", "sha256", "pdq", "photodna", "MD5", "crc"]),
        "hash": st.sampled_from(["00" * 16, "ab" * 20, "f" * 64, "zz", "0" * 288]),
    }.get(name, st.nothing())
    safe = "/" if name == "path" else ""  # a tile path spans segments
    return st.one_of(real, TEXT).map(lambda s: quote(s, safe=safe) if s not in (".", "..") else s)


# The query parameters each route reads; any route also gets unknown ones.
PARAMS = {"/changes": ["after", "limit", "feed"], "/consumers/{name}/changes": ["limit", "feed"],
          "/lookup/{type}/{hash}": ["threshold"], "/feeds/{name}/checkpoint": ["wait", "after"]}
SAFE_WAITS = ["0", "nan", "inf", "-1", "soon", "1e400", "9" * 30, "", "0.0"]  # none of them holds a request
VALUES = st.one_of(st.sampled_from([n.decode("latin-1") for n in NUMBERS] + ["0", "1", "5", "1000", "tid", "pub"]),
                   st.integers(-5, 1100).map(str), st.integers(2**63 - 2, 10**25).map(str), TEXT)


@st.composite
def query(draw, template: str) -> str:
    pairs = []
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(PARAMS.get(template, []) + ["x"]))
        pairs.append((key, draw(st.sampled_from(SAFE_WAITS)) if key == "wait" else draw(VALUES)))
    return urlencode(pairs)


def body_seeds(live: Live, template: str) -> list[bytes]:
    """Valid bodies for the route (mutated, they reach its parser), or all of them."""
    lookup = json.dumps({"queries": [{"type": "md5", "hash": "00" * 16},
                                     {"type": "pdq", "hash": "f" * 64, "threshold": 20}]}).encode()
    by_route = {"/lookup": [lookup], "/consumers/{name}/ack": [b'{"cursor": 0}', b'{"cursor": 3}'],
                "/feeds/{name}/batches/{batch_id}": [CSV, JSONL],
                "/witness/add-checkpoint": [WITNESS_REQUEST, add_checkpoint_body(0, [], live.cp),
                                            b"old 0\n\n" + CHECKPOINT]}
    return by_route.get(template) or [seed for seeds in by_route.values() for seed in seeds]


CONTENT_TYPES = ["application/json", "application/x-ndjson", "text/csv", "text/plain", "", "image/png",
                 "application/json; charset=latin-1"]


@st.composite
def request(draw, live: Live) -> tuple[str, bytes]:
    # Uniform over (method, template): /healthz and /feeds are on every server.
    method, template = draw(st.sampled_from(sorted({(m, t) for _, m, t in live.routes()})))
    server = draw(st.sampled_from([s for s, m, t in live.routes() if (m, t) == (method, template)]))
    if draw(st.integers(0, 9)) == 0:  # sometimes another method on the same path
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]))
    parts = []
    for part in template.split("/"):
        if part.startswith("{") and part.endswith("}"):
            parts.append(draw(segment(part[1:-1].split(":")[0])))
        else:
            parts.append(part)
    target = "/".join(parts) or "/"
    q = draw(query(template))
    if q:
        target += "?" + q
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    auth = draw(st.sampled_from(["none", "member", "publisher", "platform", "junk"]))
    if auth == "junk":
        head.append("Authorization: " + draw(st.sampled_from(["Bearer ", "Bearer x", "Basic abc",
                                                               "Bearer fedtok_aaaaaaaaaaaa_" + "A" * 43])))
    elif auth != "none":
        head.append(f"Authorization: Bearer {live.tokens[auth]}")
    body = b""
    if method in ("POST", "PUT") or draw(st.integers(0, 9)) == 0:
        # Mostly mutated valid bodies (they get past the first checks), sometimes noise.
        body = draw(st.binary(max_size=512) if draw(st.integers(0, 2)) == 0 else mutated(body_seeds(live, template)))
        head.append("Content-Type: " + draw(st.sampled_from(CONTENT_TYPES)))
    head.append(f"Content-Length: {len(body)}")
    return server, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def send(url: str, raw: bytes) -> bytes:
    """Send raw request bytes; return every byte answered until the server closes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def status_of(answer: bytes) -> int:
    line = answer.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1."), answer[:200]
    return int(line.split()[1])


# ---- the properties ----------------------------------------------------------------------

def test_every_route_of_every_app_is_fuzzed(live):
    servers = {s for s, _, _ in live.routes()}
    assert servers == {"publisher", "node", "platform", "platform-auth", "witness"}
    templates = {t for _, _, t in live.routes()}
    for t in ("/feeds/{name}/tile/{path}", "/feeds/{name}/batches/{batch_id}", "/lookup", "/consumers/{name}/ack",
              "/changes", "/witness/add-checkpoint", "/feeds/{name}/snapshot/index", "/feeds/{name}/trust/{which}"):
        assert t in templates, t


@fuzz_settings(500)
@given(data=st.data())
def test_fuzz_every_route_answers_below_500(live, data):
    server, raw = data.draw(request(live))
    answer = send(live.urls[server], raw)
    assert status_of(answer) < 500, (server, raw[:300], answer[:500])


@fuzz_settings(100)
@given(st.binary(min_size=1, max_size=300).filter(lambda b: b"\r\n\r\n" not in b),
       st.sampled_from(["node", "platform", "witness"]))
def test_fuzz_garbage_request_heads_answer_400_or_close(live, junk, server):
    answer = send(live.urls[server], junk + b"\r\n\r\n")
    assert answer == b"" or status_of(answer) < 500, answer[:300]


@fuzz_settings(150)
@given(st.sampled_from(["/lookup", "/consumers/moderation/ack"]),
       st.one_of(mutated([b'{"cursor": 1}', json.dumps({"queries": [{"type": "pdq", "hash": "f" * 64}]}).encode()]),
                 st.binary(max_size=64).map(lambda b: as_text(b).encode())))
def test_fuzz_platform_json_bodies_answer_json_4xx(live, path, body):
    raw = (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    answer = send(live.urls["platform"], raw)
    status = status_of(answer)
    assert status < 500, answer[:300]
    if status >= 400:
        payload = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert payload["kind"] == "input" and payload["error"], payload
