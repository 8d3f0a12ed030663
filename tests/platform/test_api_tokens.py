"""Bearer-token auth of the platform API (``platform serve --auth``): 401 / 403 / 429 / 200,
a feed-scoped token that sees only its feeds' records and cannot narrow the
stream of a consumer of all feeds; without ``--auth`` the API serves only on loopback.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.entries import Withdraw
from federation.core.note import Signer
from federation.net.auth import TokenStore
from federation.net.server import PublisherSource, create_app
from federation.platform.node import PlatformNode
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher
from federation.sync.orchestrator import sync_once

from support.images import make_image, md5_add, pdq_add, pdq_hex
from support.loopback import start

pytestmark = pytest.mark.timeout(60)

FEEDS = ("tid", "ncii")
SHARED_PDQ = pdq_hex(make_image(7))  # published in both feeds


@dataclass
class Secured:
    root: Path
    pub: Publisher
    signers: dict
    mirror: Mirror
    url: str
    tokens: TokenStore  # the node's auth.db, through another connection (like the CLI)
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, token: str | None = None, **kw):
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.url + path, headers=headers, **kw) as r:
            body = await r.read()
            return r.status, r.headers, (json.loads(body) if r.content_type == "application/json" else body)

    async def sync(self, *names):
        for name in names or FEEDS:
            await sync_once(self.mirror, name)


@pytest.fixture
async def secured(tmp_path):
    """Two feeds published on loopback, mirrored, and a platform node with --auth over the mirror."""
    pub = Publisher(tmp_path / "pub.db")
    signers = {}
    for name in FEEDS:
        signers[name] = Signer.generate(f"clearinghouse.test/feeds/{name}")
        pub.create_feed(name, signers[name].name, signers[name])
    runners = []
    r, base = await start(create_app([PublisherSource(tmp_path / "pub.db")]))
    runners.append(r)
    mirror = Mirror(tmp_path / "mirror.db")
    for name in FEEDS:
        mirror.follow(name, signers[name].name, [signers[name].vkey], [f"{base}feeds/{name}/"])
        await sync_once(mirror, name)  # synced (empty): lookups may answer (they fail closed before)
    node = PlatformNode(tmp_path / "mirror.db", tmp_path / "platform.db", auth_db=tmp_path / "auth.db", poll=5.0)
    r, url = await start(node.app)
    runners.append(r)
    tokens = TokenStore(tmp_path / "auth.db")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield Secured(tmp_path, pub, signers, mirror, url, tokens, session)
    for r in reversed(runners):
        await r.cleanup()
    tokens.close()
    mirror.close()
    pub.close()


async def test_missing_bad_revoked_and_wrong_role_tokens_are_refused(secured):
    _, everything = secured.tokens.issue("moderation", "platform", ["*"])
    t_member, member = secured.tokens.issue("reader", "member", ["*"])
    t_pub, publisher = secured.tokens.issue("ingest", "publisher", ["*"])
    q = "lookup/md5/" + "00" * 16
    status, headers, body = await secured.call("GET", q)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert body["kind"] == "auth"
    assert (await secured.call("GET", q, headers={"Authorization": "Basic " + everything}))[0] == 401
    assert (await secured.call("GET", q, "fedtok_aaaaaaaaaaaa_" + "A" * 43))[0] == 401
    assert (await secured.call("GET", q, everything[:-1] + ("A" if everything[-1] != "A" else "B")))[0] == 401
    for token in (member, publisher):
        status, _, body = await secured.call("GET", q, token)
        assert status == 403 and "platform token issue" in body["error"]
    assert (await secured.call("GET", q, everything))[0] == 200
    # a path that does not exist is not revealed without a token
    assert (await secured.call("GET", "no/such/route"))[0] == 401
    assert (await secured.call("GET", "no/such/route", everything))[0] == 404
    # /healthz stays open for probes
    assert (await secured.call("GET", "healthz"))[0] == 200
    # revocation (by another connection, like 'federation token revoke') takes effect at once
    tid = everything.split("_")[1]
    secured.tokens.revoke(tid)
    assert (await secured.call("GET", q, everything))[0] == 401
    # refusals are counted in /metrics
    _, root = secured.tokens.issue("prometheus", "platform", ["*"])
    status, _, text = await secured.call("GET", "metrics", root)
    assert status == 200
    assert b'federation_http_requests_total{method="GET",route="/lookup/{type}/{hash}",status="401"} 5.0' in text
    assert b'route="/lookup/{type}/{hash}",status="403"} 2.0' in text


async def test_rate_limit_per_token(secured):
    _, token = secured.tokens.issue("tight", "platform", ["*"], rate=0.001, burst=2)
    _, other = secured.tokens.issue("other", "platform", ["*"])
    assert [(await secured.call("GET", "changes", token))[0] for _ in range(2)] == [200, 200]
    status, headers, body = await secured.call("GET", "changes", token)
    assert status == 429 and int(headers["Retry-After"]) >= 1 and body["kind"] == "auth"
    assert (await secured.call("GET", "changes", other))[0] == 200  # buckets are per token


async def test_scoped_token_sees_only_its_feeds(secured):
    tid_md5, ncii_md5 = md5_add("t1", "tid-1"), md5_add("n1", "ncii-1")
    secured.pub.publish("tid", [tid_md5, pdq_add(SHARED_PDQ, "tid-2")], secured.signers["tid"])
    secured.pub.publish("ncii", [ncii_md5, pdq_add(SHARED_PDQ, "ncii-2")], secured.signers["ncii"])
    await secured.sync()
    secured.pub.publish("tid", [Withdraw("submitter_request", 0, case="tid-1")], secured.signers["tid"])
    await secured.sync("tid")
    _, everything = secured.tokens.issue("moderation", "platform", ["*"])
    _, scoped = secured.tokens.issue("team", "platform", ["tid"])

    # lookup: the ncii record is invisible to the tid token, exactly like no match
    status, _, body = await secured.call("GET", f"lookup/md5/{ncii_md5.value.hex()}", scoped)
    assert status == 200 and body["matched"] is False and body["matches"] == []
    assert (await secured.call("GET", f"lookup/md5/{ncii_md5.value.hex()}", everything))[2]["matched"] is True
    _, _, body = await secured.call("GET", f"lookup/pdq/{SHARED_PDQ}", scoped)
    assert [m["feed"] for m in body["matches"]] == ["tid"]
    _, _, body = await secured.call("GET", f"lookup/pdq/{SHARED_PDQ}", everything)
    assert sorted(m["feed"] for m in body["matches"]) == ["ncii", "tid"]
    _, _, body = await secured.call("POST", "lookup", scoped, json={"queries": [
        {"type": "pdq", "hash": SHARED_PDQ}, {"type": "md5", "hash": ncii_md5.value.hex()}]})
    assert [[m["feed"] for m in r["matches"]] for r in body["results"]] == [["tid"], []]

    # change stream: only tid's changes, the withdrawal included; next moves past ncii's
    _, _, all_page = await secured.call("GET", "changes?after=0", everything)
    assert {c["feed"] for c in all_page["changes"]} == {"tid", "ncii"}
    status, _, page = await secured.call("GET", "changes?after=0", scoped)
    assert status == 200 and {c["feed"] for c in page["changes"]} == {"tid"}
    assert [c["action"] for c in page["changes"]] == ["add", "add", "withdraw"]
    assert page["next"] == page["changes"][-1]["seq"] == all_page["head"] == page["head"]
    assert (await secured.call("GET", "changes?feed=tid", scoped))[0] == 200
    status, _, body = await secured.call("GET", "changes?feed=ncii", scoped)
    assert status == 403 and "ncii" in body["error"]
    _, _, page = await secured.call("GET", "consumers/team/changes", scoped)
    assert {c["feed"] for c in page["changes"]} == {"tid"} and page["cursor"] == 0
    assert (await secured.call("POST", "consumers/team/ack", scoped, json={"cursor": page["next"]}))[0] == 200
    _, _, page = await secured.call("GET", "consumers/team/changes", scoped)
    assert page["changes"] == [] and page["cursor"] == page["next"]

    # node-wide views need '*'
    for path in ("webhooks", "metrics", "feeds"):
        assert (await secured.call("GET", path, scoped))[0] == 403, path
        assert (await secured.call("GET", path, everything))[0] == 200, path


async def test_a_token_of_another_feed_can_neither_read_nor_ack_a_consumer(secured):
    """Before: any platform token could acknowledge any consumer's cursor, so a
    token scoped to ncii could skip (or hold back) the tid consumer's stream."""
    secured.pub.publish("tid", [md5_add(f"t{i}", "tid-1") for i in range(3)], secured.signers["tid"])
    secured.pub.publish("ncii", [md5_add("n1", "ncii-1")], secured.signers["ncii"])
    await secured.sync()
    _, tid = secured.tokens.issue("tid-team", "platform", ["tid"])
    _, ncii = secured.tokens.issue("ncii-team", "platform", ["ncii"])
    _, both = secured.tokens.issue("both", "platform", ["tid", "ncii"])
    _, everything = secured.tokens.issue("admin", "platform", ["*"])
    # first use by the tid token: the consumer is tid's
    status, _, page = await secured.call("GET", "consumers/moderation/changes?limit=2", tid)
    assert status == 200 and [c["feed"] for c in page["changes"]] == ["tid", "tid"]
    head = page["head"]
    for method, path, body in (("GET", "consumers/moderation/changes", None),
                               ("POST", "consumers/moderation/ack", {"cursor": head})):
        status, _, err = await secured.call(method, path, ncii, json=body)
        assert status == 403 and err["kind"] == "auth" and "consumer 'moderation' belongs to a token scoped to tid" \
            in err["error"], (status, err)
    from federation.platform.changes import PlatformStore
    store = PlatformStore(secured.root / "platform.db")
    assert store.cursor("moderation") == 0  # the ncii token did not move it
    assert (await secured.call("POST", "consumers/moderation/ack", tid, json={"cursor": page["next"]}))[0] == 200
    # a wider token may not use it either: it would read (and ack past) tid's changes only,
    # silently (review finding); its pages are the tid token's alone
    for wider in (both, everything):
        assert (await secured.call("GET", "consumers/moderation/changes", wider))[0] == 403
    status, _, page = await secured.call("GET", "consumers/moderation/changes", tid)
    assert status == 200 and [c["feed"] for c in page["changes"]] == ["tid"]
    # a consumer created by a '*' token is out of reach of scoped tokens
    assert (await secured.call("GET", "consumers/all/changes", everything))[0] == 200
    assert (await secured.call("POST", "consumers/all/ack", tid, json={"cursor": 1}))[0] == 403
    assert store.cursor("all") == 0 and store.cursor("moderation") == page["cursor"]
    store.close()
    # the local CLI reads a consumer's own stream too
    r = await asyncio.to_thread(CliRunner().invoke, cli, ["--home", str(secured.root), "platform", "changes",
                                                          "--consumer", "moderation", "--no-ack"])
    assert r.exit_code == 0 and [json.loads(x)["feed"] for x in r.output.splitlines()] == ["tid"], r.output


async def test_cli_issues_a_platform_token_that_works(secured):
    r = await asyncio.to_thread(CliRunner().invoke, cli, ["--home", str(secured.root), "platform", "token", "issue",
                                                          "trust-safety", "--feed", "tid"])
    assert r.exit_code == 0, r.output
    assert "(platform; feeds tid)" in r.output
    token = r.output.split()[-1]
    assert (await secured.call("GET", "changes", token))[0] == 200
    assert (await secured.call("GET", "metrics", token))[0] == 403
    r = CliRunner().invoke(cli, ["platform", "serve", "--help"])
    assert "--auth" in r.output


async def test_threatexchange_adapter_uses_a_platform_token_from_the_environment(secured, monkeypatch):
    from threatexchange.signal_type.pdq.signal import PdqSignal

    from federation.core.errors import FederationError
    from federation.platform.threatexchange import FederationCollabConfig, FederationSignalExchangeAPI
    secured.pub.publish("tid", [pdq_add(SHARED_PDQ, "tid-9")], secured.signers["tid"])
    await secured.sync("tid")
    _, token = secured.tokens.issue("hma", "platform", ["tid"])

    def fetch(collab):
        api = FederationSignalExchangeAPI.for_collab(collab)
        return [d.updates for d in api.fetch_iter([PdqSignal], None)]

    collab = FederationCollabConfig(name="tid", api="federation", enabled=True, url=secured.url, feed="tid",
                                    token_env="TX_FED_TOKEN")
    monkeypatch.delenv("TX_FED_TOKEN", raising=False)
    with pytest.raises(FederationError, match="TX_FED_TOKEN"):
        await asyncio.to_thread(fetch, collab)
    monkeypatch.setenv("TX_FED_TOKEN", "fedtok_aaaaaaaaaaaa_" + "A" * 43)
    with pytest.raises(FederationError, match="401"):
        await asyncio.to_thread(fetch, collab)
    monkeypatch.setenv("TX_FED_TOKEN", token)
    deltas = await asyncio.to_thread(fetch, collab)
    assert ("pdq", SHARED_PDQ) in {k for d in deltas for k in d}


async def test_every_named_feed_is_checked_against_the_tokens_scope(secured):
    """Review of issue 10: only the first ``?feed=`` was checked, so a tid token
    asking ``?feed=tid&feed=ncii`` was answered. Every one is checked: 403."""
    _, scoped = secured.tokens.issue("team", "platform", ["tid"])
    assert (await secured.call("GET", "changes?feed=tid&feed=tid", scoped))[0] == 200
    for query in ("feed=tid&feed=ncii", "feed=ncii&feed=tid"):
        status, _, body = await secured.call("GET", f"lookup/md5/{'00' * 16}?{query}", scoped)
        assert status == 403 and "ncii" in body["error"], (query, status, body)
        assert (await secured.call("GET", f"changes?{query}", scoped))[0] == 403, query


async def test_a_token_scoped_to_a_feed_the_node_does_not_follow_fails_closed_naming_it(secured):
    """Review of issue 10: such a token got 400 ("not following") on every
    lookup, as if the caller had erred. The node cannot stand behind an answer
    for that feed: 503, naming it, as for a feed that is not ready."""
    _, scoped = secured.tokens.issue("team", "platform", ["tid", "csam-intl"])
    status, _, body = await secured.call("GET", f"lookup/md5/{'00' * 16}", scoped)
    assert status == 503 and body["kind"] == "unavailable" and "csam-intl" in body["error"], body
    assert [(f["feed"], f["problem"]) for f in body["feeds"]] == [("csam-intl", "not_followed")]
    query = {"type": "md5", "hash": "00" * 16}
    status, _, body = await secured.call("POST", "lookup", scoped, json={"queries": [query]})
    assert status == 503 and body["feeds"][0]["feed"] == "csam-intl"
    # naming a followed feed of the scope answers from it alone; naming an unfollowed one is the caller's error
    assert (await secured.call("GET", f"lookup/md5/{'00' * 16}?feed=tid", scoped))[0] == 200
    _, everything = secured.tokens.issue("moderation", "platform", ["*"])
    assert (await secured.call("GET", f"lookup/md5/{'00' * 16}?feed=csam-intl", everything))[0] == 400


@pytest.mark.timeout(90)
async def test_a_narrow_token_cannot_silently_narrow_the_stream_of_an_all_feeds_consumer(secured):
    """The consumer's scope is that of the token that used it first, and every
    covering token then reads that scope's changes without being told. A
    token scoped to ``tid`` that names ``moderation`` before the node's own
    pipeline (a ``*`` token) does makes that pipeline read only tid's
    changes and ack past ncii's -- withdrawals included -- silently."""
    secured.pub.publish("tid", [md5_add("t1", "tid-1")], secured.signers["tid"])
    secured.pub.publish("ncii", [md5_add("n1", "ncii-1")], secured.signers["ncii"])
    await secured.sync()
    _, tid = secured.tokens.issue("tid-team", "platform", ["tid"])
    _, everything = secured.tokens.issue("pipeline", "platform", ["*"])
    assert (await secured.call("GET", "consumers/moderation/changes", tid))[0] == 200  # squatted
    status, _, page = await secured.call("GET", "consumers/moderation/changes", everything)
    assert status != 200 or {c["feed"] for c in page["changes"]} == {"tid", "ncii"}, \
        f"the '*' pipeline silently gets {sorted({c['feed'] for c in page['changes']})} only"


@pytest.mark.timeout(120)
def test_platform_serve_without_auth_is_refused_on_a_non_loopback_address(tmp_path, monkeypatch):
    """Review of issue 10: 'platform serve --host 0.0.0.0' without --auth served
    every hash of the mirror in the clear to anyone who reached the port."""
    from click.testing import CliRunner
    from federation.cli.main import cli as main
    from federation.net import httpserver
    served = []
    monkeypatch.setattr(httpserver, "run_app", lambda app, host, port, **kw: served.append(host))
    home = str(tmp_path / "home")
    for host in ("0.0.0.0", "::", "192.0.2.7", "node.example"):
        r = CliRunner().invoke(main, ["--home", home, "platform", "serve", "--host", host, "--port", "9"])
        assert r.exit_code == 2 and "--auth" in r.output and "loopback" in r.output, (host, r.output)
    assert served == []
    for args in (["--host", "127.0.0.1"], ["--host", "::1"], ["--host", "localhost"], ["--host", "0.0.0.0", "--auth"],
                 ["--host", "0.0.0.0", "--insecure-no-auth"]):
        r = CliRunner().invoke(main, ["--home", home, "platform", "serve", *args, "--port", "9"])
        assert r.exit_code == 0, (args, r.output)
    assert served == ["127.0.0.1", "::1", "localhost", "0.0.0.0", "0.0.0.0"]
