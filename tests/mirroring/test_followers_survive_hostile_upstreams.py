"""A follower never dies on hostile bytes (issue 10, section 4).

A hostile upstream is listed first and an honest publisher second. Before the
fix, a ``trust/latest`` holding a huge integer or deep nesting, or a
``snapshot/index`` holding deep JSON or ``1e400``, raised ``ValueError``,
``RecursionError`` or ``OverflowError`` out of ``sync``: the CLI crashed with
a traceback and never tried the honest URL, and a node's follower task died
without a log line. Now the failure is logged with its kind, recorded in the
feed's ``last_error``, and the next upstream serves the sync.
"""
from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from federation.core.note import Signer, sign_note
from federation.core.trustfile import parse_trust
from federation.node.assembly import NODE_STATES, build_app
from federation.node.config import parse_config
from federation.node.home import Home
from federation.store.mirror import Mirror
from federation.sync.orchestrator import sync_once
from federation.trust.rotation import follow_with_trust

from support.cli import run_cli
from support.feeds import NAME, make_feed
from support.loopback import BOUND, Servers, start_app
from support.tamper import TamperProxy, respond
from support.trust_world import World

HOSTILE_TRUST = {
    "huge-integer": 'format = "federation-trust/v1"\nversion = ' + "9" * 5000 + "\n",
    "deep-nesting": "log_keys = " + "[" * 3000 + "]" * 3000 + "\n",
}
HOSTILE_INDEX = {
    "deep-json": b'{"snapshots": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "1e400": (b'{"snapshots": [{"sha256": "' + b"ab" * 32 + b'", "version": 1, "size": 1e400, "count": 1, '
              b'"bytes": 1, "compressed": false}], "minimum_index": 0}'),
}


def hostile_trust_note(kind: str) -> bytes:
    return sign_note(HOSTILE_TRUST[kind].encode(), [Signer.generate("hostile.example/trust")])


def hostile_app(index: bytes) -> web.Application:
    """An upstream serving a poisoned snapshot index and garbage for everything else."""
    app = web.Application()

    async def handle(request: web.Request) -> web.Response:
        if request.path.endswith("/snapshot/index"):
            return web.Response(body=index, content_type="application/json")
        return web.Response(body=b"\x00garbage\n", content_type="text/plain")

    app.router.add_get("/{tail:.*}", handle)
    return app


@pytest.mark.parametrize("kind", list(HOSTILE_TRUST))
async def test_sync_cli_moves_past_an_upstream_serving_a_hostile_trust_file(world: World, tmp_path, kind):
    r = await world.publish(4)
    hostile = TamperProxy(world.base)  # honest except for trust/latest
    await hostile.start()
    try:
        hostile.add(respond(r"/trust/latest$", hostile_trust_note(kind), content_type="text/plain"))
        home = tmp_path / "node"
        home.mkdir()
        m = Mirror(home / "mirror.db")
        follow_with_trust(m, NAME, parse_trust(world.trust_v1()), [hostile.feed_url(), world.url])
        m.close()
        code, out, err = await run_cli("--home", str(home), "sync")
    finally:
        await hostile.close()
    assert code == 0, err
    assert "Traceback" not in err, err
    assert hostile.requests(r"trust/latest$"), "the hostile upstream was never asked"
    m = Mirror(home / "mirror.db")
    try:
        f = m.get(NAME)
        assert f.applied_size == r.size
        assert hostile.url in f.last_error and "(malformed)" in f.last_error, f.last_error
    finally:
        m.close()
    assert "failed verification (malformed)" in err  # logged with its kind


@pytest.mark.parametrize("kind", list(HOSTILE_INDEX))
async def test_sync_moves_past_an_upstream_serving_a_hostile_snapshot_index(tmp_path, kind, caplog):
    feed = make_feed(tmp_path / "pub.db", NAME, "example.org/feeds/t")
    feed.publish_version(5)
    runners = []
    try:
        bad_runner, bad = await start_app(hostile_app(HOSTILE_INDEX[kind]))
        good_runner, good = await start_app(_publisher_app(tmp_path / "pub.db"))
        runners += [bad_runner, good_runner]
        m = Mirror(tmp_path / "m.db")
        m.follow(NAME, feed.origin, [feed.signer.vkey], [f"{bad}/feeds/{NAME}/", f"{good}/feeds/{NAME}/"])
        with caplog.at_level(logging.INFO, "federation"):
            result = await asyncio.wait_for(sync_once(m, NAME), BOUND)
        assert result.size == feed.pub.feed(NAME).size
        assert bad in m.get(NAME).last_error and "(malformed)" in m.get(NAME).last_error
        m.close()
    finally:
        for r in runners:
            await r.cleanup()
        feed.pub.close()


def _publisher_app(db) -> web.Application:
    from federation.net.server import PublisherSource, create_app
    return create_app([PublisherSource(db)])


async def test_node_follower_task_survives_a_hostile_upstream_and_syncs_from_the_next(tmp_path, caplog):
    feed = make_feed(tmp_path / "pub.db", "tid")
    feed.publish_version(5)
    servers = Servers()
    try:
        bad = await servers.start(hostile_app(HOSTILE_INDEX["deep-json"]))
        good = await servers.publisher(tmp_path / "pub.db")
        cfg = parse_config(f'[[follow]]\nname = "tid"\norigin = "{feed.origin}"\nvkeys = ["{feed.signer.vkey}"]\n'
                           f'urls = ["{bad}/feeds/tid/", "{good}/feeds/tid/"]\nwait = 0.5\ninterval = 0.5\n')
        home = Home.resolve(str(tmp_path / "node"))
        app = build_app(cfg, home, signers={})
        with caplog.at_level(logging.INFO, "federation"):
            await servers.start(app)
            want = feed.pub.feed("tid").size
            m = Mirror(home.mirror_db)
            try:
                async with asyncio.timeout(BOUND):
                    while m.get("tid").applied_size != want:
                        await asyncio.sleep(0.05)
                # A second round too: the task keeps going after the first.
                feed.publish_version(3)
                want = feed.pub.feed("tid").size
                async with asyncio.timeout(BOUND):
                    while m.get("tid").applied_size != want:
                        await asyncio.sleep(0.05)
                last_error = m.get("tid").last_error
            finally:
                m.close()
            task = next(t for t in asyncio.all_tasks() if t.get_name() == "follow tid")
            assert not task.done()
        state = app[NODE_STATES]["tid"]
        assert any(e.startswith(f"malformed: {bad}/feeds/tid/") for e in state.errors), state.errors
        assert last_error and bad in last_error and "(malformed)" in last_error, last_error
        assert any("malformed" in r.getMessage() and bad in r.getMessage() for r in caplog.records)
    finally:
        await servers.close()
        feed.pub.close()


async def test_an_unexpected_exception_counts_against_that_upstream_and_the_next_is_tried(tmp_path, monkeypatch,
                                                                                          caplog):
    """Fault injection: a bug of ours (here a RuntimeError on the first
    checkpoint checked) while handling one upstream's data must not stop the
    sync -- it is that upstream's ``malformed`` failure, and the next serves."""
    import federation.core.acceptance as acceptance_module  # where a sync opens the checkpoint
    feed = make_feed(tmp_path / "pub.db", NAME, "example.org/feeds/t")
    feed.publish_version(5)
    real = acceptance_module.open_checkpoint
    calls = []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return real(*args, **kw)

    monkeypatch.setattr(acceptance_module, "open_checkpoint", flaky)
    runner, first = await start_app(_publisher_app(tmp_path / "pub.db"))
    runner2, second = await start_app(_publisher_app(tmp_path / "pub.db"))
    try:
        m = Mirror(tmp_path / "m.db")
        urls = [f"{first}/feeds/{NAME}/", f"{second}/feeds/{NAME}/"]
        m.follow(NAME, feed.origin, [feed.signer.vkey], urls)
        with caplog.at_level(logging.INFO, "federation"):
            result = await asyncio.wait_for(sync_once(m, NAME, snapshots=False), BOUND)
        assert result.size == feed.pub.feed(NAME).size
        last_error = m.get(NAME).last_error
        assert f"upstream {first}/feeds/{NAME}/ failed (malformed): unexpected RuntimeError" in last_error, last_error
        assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.WARNING)  # one line, no traceback
        m.close()
    finally:
        await runner.cleanup()
        await runner2.cleanup()
        feed.pub.close()
