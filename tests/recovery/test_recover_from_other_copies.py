"""``feed recover`` from a static export (files on any web server), with the
log key lost too (``--vkey``), and its errors at the CLI: one line, an exit
code by kind, nothing written."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from federation.store.publisher import Publisher

from support.cli import write_batch
from support.clearinghouse import NAME, Clearinghouse, acli
from support.loopback import closed_port, start_app


def _lose(home, *, key: bool) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{home.publisher_db}{suffix}").unlink(missing_ok=True)
    if key:
        home.key_path(NAME).unlink()


async def test_recover_from_a_static_export_with_the_key_lost_too(tmp_path):
    ch = Clearinghouse(tmp_path / "publisher")
    for i, n in enumerate((300, 12)):
        r = await acli(ch.home.root, "publish", NAME, str(write_batch(tmp_path / f"b{i}.csv", n, f"c{i}")))
        assert r.returncode == 0, r.stderr
    r = await acli(ch.home.root, "export", str(tmp_path / "www"))
    assert r.returncode == 0, r.stderr
    pub = Publisher(ch.home.publisher_db)
    before = pub.feed(NAME)
    pub.close()
    app = web.Application()
    app.router.add_static("/", tmp_path / "www")
    runner, url = await start_app(app)
    try:
        _lose(ch.home, key=True)
        r = await acli(ch.home.root, "feed", "recover", NAME, "--from", f"{url}/{NAME}/", "--vkey", ch.vkey,
                       "--access", "public")
        assert r.returncode == 0, r.stderr
        pub = Publisher(ch.home.publisher_db)
        after = pub.feed(NAME)
        pub.close()
        assert (after.size, after.version, after.digest, after.checkpoint, after.vkey, after.access) == \
            (before.size, before.version, before.digest, before.checkpoint, before.vkey, "public")
        # The next step of the runbook: without the key nothing signs; a feed
        # without a trust chain cannot rotate to a new key (docs/trust.md).
        r = await acli(ch.home.root, "publish", NAME, str(write_batch(tmp_path / "b9.csv", 1)))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        r = await acli(ch.home.root, "feed", "rotate-key", NAME, "--new-key", str(tmp_path / "new.key"),
                       "--old-key-lost")
        assert r.returncode == 2 and "publishes no trust chain" in r.stderr, r.stderr
    finally:
        await runner.cleanup()


async def test_recover_errors_are_one_line_with_an_exit_code_and_write_nothing(tmp_path):
    ch = Clearinghouse(tmp_path / "publisher")
    ch.publish(["9e107d9d372bb6826bd81d3542a419d6"])
    _lose(ch.home, key=False)
    home = ch.home.root
    cases = [
        (3, ["--from", f"http://127.0.0.1:{closed_port()}/feeds/tid/"]),  # transport
        (2, ["--from", "http://127.0.0.1:9/feeds/tid/", "--vkey", ch.vkey, "--key", str(ch.home.key_path(NAME))]),
        (2, ["--from", "http://127.0.0.1:9/feeds/tid/", "--vkey", "not+a+vkey"]),
        (2, ["--from", "http://127.0.0.1:9/feeds/tid/", "--key", str(tmp_path / "missing.key")]),
    ]
    for code, args in cases:
        r = await acli(home, "feed", "recover", NAME, *args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.startswith("error ("), r.stderr
    pub = Publisher(ch.home.publisher_db)
    assert pub.feeds() == []
    pub.close()
