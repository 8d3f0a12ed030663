"""Bounded memory and time against hostile peers (issue 10, section 4).

* a zstd decompression bomb inside a snapshot fails as ``malformed`` at the
  bound its header allows, in bounded memory;
* the rate limiter's per-address state has a cap;
* slow clients (slowloris headers, trickled bodies) are cut off within a
  bound, on the server runner every ``serve`` command uses;
* an oversized request line or header is logged as one line: no traceback,
  and nothing of the request's headers (a bearer token can be among them).
"""
from __future__ import annotations

import asyncio
import io
import logging
import time
import tracemalloc

import msgpack
import pytest
import zstandard
from aiohttp import web

from federation.core.errors import MalformedError
from federation.core.snapshot_format import SnapshotReader
from federation.net.auth import RateLimiter

TOKEN = "fedtok_abcdefghijkl_" + "S" * 43


# ---- snapshots: a real zstd bomb -------------------------------------------------------

def zstd_bomb(records: int, labels: int = 64, label_len: int = 4096) -> bytes:
    """A snapshot whose header states ``records`` records, each of which is
    shaped right (4 fields, increasing keys) but ~270 KB: tiny compressed,
    ``records`` x 270 KB decompressed."""
    packer = msgpack.Packer(use_bin_type=True)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False) as w:
        w.write(packer.pack({"v": 1, "origin": "o", "size": 1, "version": 1, "count": records, "bundle": b""}))
        filler = ["x" * label_len] * labels
        for i in range(records):
            w.write(packer.pack(["md5", i.to_bytes(16, "big"), "c" * 64, filler]))
    return out.getvalue()


def test_zstd_snapshot_bomb_fails_as_malformed_at_the_header_bound_in_bounded_memory():
    bomb = zstd_bomb(200)  # ~54 MB decompressed
    assert len(bomb) < 1_000_000
    tracemalloc.start()
    try:
        reader = SnapshotReader(io.BytesIO(bomb), read_size=256 * 1024)
        with pytest.raises(MalformedError) as info:
            for _ in reader.records(batch=1024):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "decompress" in str(info.value) and "200 records" in str(info.value), str(info.value)
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"


# ---- the rate limiter ---------------------------------------------------------------------

def test_rate_limiter_state_is_bounded_under_100k_distinct_addresses():
    limiter = RateLimiter()
    now = 1000.0
    for i in range(100_000):
        limiter.allow(f"addr:10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 20.0, 100, now=now + i * 1e-4)
    assert len(limiter) <= RateLimiter.MAX_KEYS < 100_000


def test_rate_limiter_still_limits_an_active_key_while_others_churn():
    limiter = RateLimiter(max_keys=1000)
    now = 0.0
    assert all(limiter.allow("attacker", 1.0, 5, now=now) == 0.0 for _ in range(5))
    for i in range(5000):  # other addresses come and go; the active one stays throttled
        limiter.allow(f"other-{i}", 1.0, 5, now=now)
        if i % 100 == 0:
            assert limiter.allow("attacker", 1.0, 5, now=now) > 0
    assert len(limiter) <= 1000


# ---- slow and malformed clients, on the runner every serve command uses ------------------

def witness_app(tmp_path) -> tuple[web.Application, object]:
    from federation.core.note import Cosigner
    from federation.net.server import create_app
    from federation.trust.witness import Witness, install_witness
    w = Witness(tmp_path / "w.db", Cosigner.generate("witness.example"))
    return create_app([], extensions=[install_witness(w)]), w


async def _connect(url: str):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send ``data`` one byte every ``every`` seconds until the peer closes."""
    try:
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
            await asyncio.sleep(every)
    except (ConnectionError, OSError):
        pass


async def _closed_after(reader: asyncio.StreamReader, bound: float) -> tuple[bytes, float]:
    """Everything the server sent until it closed, and how long that took."""
    start = time.monotonic()
    data = b""
    async with asyncio.timeout(bound):
        while chunk := await reader.read(65536):
            data += chunk
    return data, time.monotonic() - start


async def test_slowloris_sending_one_header_byte_per_second_is_cut_off_at_the_head_deadline(tmp_path):
    from federation.net.httpserver import Limits, start
    app, w = witness_app(tmp_path)
    runner, url = await start(app, limits=Limits(head_timeout=2.0))
    try:
        reader, writer = await _connect(url)
        sender = asyncio.create_task(_trickle(writer, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100,
                                              1.0))
        data, took = await _closed_after(reader, 6.0)
        sender.cancel()
        writer.close()
        assert data == b"" and 1.5 < took < 4.0, (data, took)
        # An honest client on the same server is unaffected.
        reader, writer = await _connect(url)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = await _closed_after(reader, 5.0)
        assert data.startswith(b"HTTP/1.1 200"), data
        writer.close()
    finally:
        await runner.cleanup()
        w.close()


async def test_slow_second_request_head_on_a_keep_alive_connection_is_cut_off(tmp_path):
    from federation.net.httpserver import Limits, start
    app, w = witness_app(tmp_path)
    runner, url = await start(app, limits=Limits(head_timeout=2.0, idle_timeout=2.0))
    try:
        reader, writer = await _connect(url)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"ok\n"), 5.0)
        assert first.startswith(b"HTTP/1.1 200")
        sender = asyncio.create_task(_trickle(writer, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100,
                                              0.5))
        data, took = await _closed_after(reader, 6.0)
        sender.cancel()
        writer.close()
        assert data == b"" and took < 4.0, (data, took)
    finally:
        await runner.cleanup()
        w.close()


async def test_trickled_request_body_is_answered_408_at_the_body_deadline(tmp_path):
    from federation.net.httpserver import Limits, start
    app, w = witness_app(tmp_path)
    runner, url = await start(app, limits=Limits(body_timeout=1.0))
    try:
        reader, writer = await _connect(url)
        writer.write(b"POST /witness/add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        sender = asyncio.create_task(_trickle(writer, b"o" * 1000, 0.2))
        data, took = await _closed_after(reader, 6.0)
        sender.cancel()
        writer.close()
        assert data.startswith(b"HTTP/1.1 408"), data
        assert took < 1.0 + 2.0 + 1.5, took  # body deadline, then at most Limits.linger of draining
    finally:
        await runner.cleanup()
        w.close()


@pytest.mark.parametrize("request_bytes", [
    b"GET /feeds/" + b"a" * 10_000 + b"/checkpoint HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
    + b"\r\n\r\n",
    b"GET /feeds HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"x" * 10_000 + b"\r\n\r\n",
    b"GET /feeds HTTP/1.1\r\nHost: x\r\nAuthorization Bearer " + TOKEN.encode() + b"\r\n\r\n",
], ids=["10KB-path", "huge-header", "bad-header"])
async def test_oversized_or_malformed_request_is_logged_in_one_line_without_its_headers(tmp_path, caplog,
                                                                                         request_bytes):
    from federation.net.httpserver import start
    app, w = witness_app(tmp_path)
    runner, url = await start(app)
    try:
        with caplog.at_level(logging.DEBUG):
            reader, writer = await _connect(url)
            writer.write(request_bytes)
            await writer.drain()
            data, _ = await _closed_after(reader, 5.0)
            writer.close()
            await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
        w.close()
    assert data.startswith(b"HTTP/1.1 400") or data.startswith(b"HTTP/1.0 400"), data[:200]
    assert TOKEN.encode() not in data and b"xxxxxxxx" not in data, data
    text = caplog.text
    assert TOKEN not in text and "aaaaaaaa" not in text and "xxxxxxxx" not in text, text
    assert "Traceback" not in text and all(r.exc_info is None for r in caplog.records), text
    refusals = [r for r in caplog.records if r.name == "federation.http" and "refused a request" in r.getMessage()]
    assert len(refusals) == 1, text


def test_every_serve_command_runs_on_the_bounded_server(tmp_path, monkeypatch):
    """``serve``, ``serve --config``, ``platform serve`` and ``witness serve``
    all hand their app to ``httpserver.run_app`` (and so get its limits)."""
    from click.testing import CliRunner
    from federation.net import httpserver
    from federation.cli.main import cli
    from federation.node.keys import write_new_cosigner_key

    served = []

    def fake_run_app(app, host, port, on_start=None, **kw):
        assert isinstance(app, web.Application)
        served.append((host, port))

    monkeypatch.setattr(httpserver, "run_app", fake_run_app)
    home = str(tmp_path / "home")
    write_new_cosigner_key(tmp_path / "w.key", "witness.example")
    config = tmp_path / "node.toml"
    config.write_text('[node]\nlisten = "127.0.0.1:9999"\n')
    for args in (["serve", "--port", "9001"], ["serve", "--config", str(config)],
                 ["platform", "serve", "--port", "9002"], ["witness", "serve", "--key", str(tmp_path / "w.key"),
                                                           "--port", "9003"]):
        r = CliRunner().invoke(cli, ["--home", home, *args], catch_exceptions=False)
        assert r.exit_code == 0, (args, r.output)
    assert [p for _, p in served] == [9001, 9999, 9002, 9003]


async def test_empty_lines_before_the_request_line_do_not_disarm_the_head_deadline(tmp_path):
    # Found by the route fuzzer: "\r\n\r\n" first looked like the end of a
    # head; aiohttp skips leading empty lines, so a slowloris could follow.
    from federation.net.httpserver import Limits, start
    app, w = witness_app(tmp_path)
    runner, url = await start(app, limits=Limits(head_timeout=1.0, idle_timeout=30.0))
    try:
        reader, writer = await _connect(url)
        writer.write(b"\r\n\r\n\r\n")
        sender = asyncio.create_task(_trickle(writer, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"y" * 100, 0.3))
        data, took = await _closed_after(reader, 5.0)
        sender.cancel()
        writer.close()
        assert data == b"" and took < 3.0, (data, took)
    finally:
        await runner.cleanup()
        w.close()


async def test_long_poll_state_is_freed_for_feed_names_nobody_waits_on(tmp_path):
    """Found while bounding per-client state: every distinct feed name in a
    ``checkpoint?wait=`` request left an asyncio.Event behind, even for feeds
    that do not exist (``federation serve`` has no access control in front)."""
    from support.loopback import start_app
    from federation.net import longpoll
    from federation.net.server import create_app
    app = create_app([], extensions=[longpoll.install], middlewares=[longpoll.longpoll_middleware])
    runner, url = await start_app(app)
    try:
        reader = writer = None
        for i in range(300):
            reader, writer = await _connect(url)
            writer.write(f"GET /feeds/f{i}/checkpoint?wait=1&after=0 HTTP/1.1\r\nHost: x\r\n"
                         "Connection: close\r\n\r\n".encode())
            data, _ = await _closed_after(reader, 5.0)
            writer.close()
            assert data.startswith(b"HTTP/1.1 404"), data[:100]
        watch = app[longpoll.WATCH]
        assert watch.held == 0 and len(watch._events) == 0, len(watch._events)
    finally:
        await runner.cleanup()


async def test_metrics_label_values_do_not_grow_with_the_http_methods_clients_send(tmp_path):
    """Found with the route fuzzer's random methods: each method a client sent
    became a label value, i.e. a time series kept in memory. aiohttp's C
    parser accepts some 40 method names (PROPFIND, PURGE, ...); its pure-Python
    parser (no C extensions) accepts any token, which made this unbounded."""
    from support.loopback import start_app
    from federation.platform.node import PlatformNode
    node = PlatformNode(tmp_path / "m.db", tmp_path / "p.db", poll=60.0)
    runner, url = await start_app(node.app)
    try:
        for method in ("PROPFIND", "MKCOL", "PURGE", "LINK", "REPORT", "SEARCH", "GET"):
            reader, writer = await _connect(url)
            writer.write(f"{method} /lookup HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            await _closed_after(reader, 5.0)
            writer.close()
        methods = {s.labels["method"] for m in node.metrics.requests.collect() for s in m.samples}
        assert methods == {"GET", "other"}, methods
    finally:
        await runner.cleanup()
