"""Issue 15, items 2-3, through the real CLI and real servers on 127.0.0.1:
a publisher that lost its database, or restored an older backup, refuses to
sign until ``feed recover`` rebuilt the feed from a relay; then the feed
continues the same log, and a mirror that followed all along applies the
next version as an extension and verifies clean.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from aiohttp import web

from federation.net.relay import RelaySource
from federation.net.server import PublisherSource, create_app
from federation.node.home import Home
from federation.store.publisher import Publisher

from support.cli import write_batch
from support.clearinghouse import NAME, Clearinghouse, acli, follow
from support.loopback import start_app


class Node:
    """A publisher home made and published into by the CLI, served on 127.0.0.1
    by a read-side server that can be stopped and started again (the node
    restarting around a lost disk)."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.ch = Clearinghouse(tmp_path / "publisher")
        self.home: Home = self.ch.home
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.batches = 0

    async def start(self) -> str:
        self.runner, url = await start_app(create_app([PublisherSource(self.home.publisher_db)]), self.port)
        self.port = int(url.rsplit(":", 1)[1])  # the same address after a restart
        return url

    async def stop(self) -> None:
        await self.runner.cleanup()
        self.runner = None

    async def publish(self, n: int = 40):
        self.batches += 1
        return await acli(self.home.root, "publish", NAME, str(write_batch(self.tmp / f"b{self.batches}.csv", n,
                                                                          f"case-{self.batches}")))

    def head(self):
        pub = Publisher(self.home.publisher_db)
        try:
            return pub.feed(NAME)
        finally:
            pub.close()

    def lose_database(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.home.publisher_db}{suffix}").unlink(missing_ok=True)


async def _ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    return r


async def _followed(home: Path) -> tuple[int, int]:
    r = await _ok(await acli(home, "status", "--json"))
    f = json.loads(r.stdout)["followed"][0]
    assert f["ready"] and f["last_error"] is None, f
    return f["version"], f["size"]


async def _setup(tmp_path):
    """Publisher (3 versions, > 1 full tile) -> relay -> (a relay home) and a
    member mirror that follows the publisher directly."""
    node = Node(tmp_path)
    for n in (300, 40, 7):
        await _ok(await node.publish(n))
    url = await node.start()
    relay_home, member = tmp_path / "relay", tmp_path / "member"
    follow(relay_home, f"{url}/feeds/{NAME}/", node.ch.vkey)
    await _ok(await acli(relay_home, "sync"))
    relay_runner, relay_url = await start_app(create_app([RelaySource(Home(relay_home).mirror_db)]))
    follow(member, f"{url}/feeds/{NAME}/", node.ch.vkey)
    await _ok(await acli(member, "sync"))
    return node, relay_home, relay_runner, f"{relay_url}/feeds/{NAME}/", member


async def test_lost_database_recovered_from_a_relay_continues_the_same_log(tmp_path):
    node, relay_home, relay_runner, relay, member = await _setup(tmp_path)
    try:
        before = node.head()
        await node.stop()
        node.lose_database()  # the disk is gone; keys (HOME/private) and HOME/state survived

        # Without recovery the feed cannot be created anew: that would fork it.
        r = await acli(node.home.root, "feed", "create", NAME, "--origin", before.origin,
                       "--key", str(tmp_path / "other.key"))
        assert r.returncode == 5, r.stderr
        assert "feed recover" in r.stderr and f"size {before.size}" in r.stderr

        r = await _ok(await acli(node.home.root, "feed", "recover", NAME, "--from", relay, "--access", "public"))
        assert f"tree size 0 -> {before.size}" in r.stdout
        after = node.head()
        assert (after.size, after.version, after.count, after.digest, after.compact, after.checkpoint, after.vkey) == \
            (before.size, before.version, before.count, before.digest, before.compact, before.checkpoint, before.vkey)

        # The feed continues the same log with the same key ...
        await _ok(await node.publish(5))
        assert node.head().version == before.version + 1
        await node.start()
        # ... and the mirror that followed all along applies it as an extension.
        await _ok(await acli(member, "sync"))
        assert await _followed(member) == (before.version + 1, node.head().size)
        await _ok(await acli(member, "verify"))
        # So does the relay, which served the recovery.
        await _ok(await acli(relay_home, "sync"))
        await _ok(await acli(relay_home, "verify"))
    finally:
        await relay_runner.cleanup()
        if node.runner is not None:
            await node.stop()


async def test_restored_week_old_backup_refuses_to_sign_until_recovered(tmp_path):
    node, relay_home, relay_runner, relay, member = await _setup(tmp_path)
    try:
        week_old = tmp_path / "backup"
        await _ok(await acli(node.home.root, "backup", str(week_old)))
        for n in (20, 9):  # the week after the backup, mirrored by the relay and the member
            await _ok(await node.publish(n))
        await _ok(await acli(relay_home, "sync"))
        await _ok(await acli(member, "sync"))
        served = node.head()

        await node.stop()
        node.lose_database()
        shutil.copy(week_old / "publisher.db", node.home.publisher_db)  # the operator restores the backup
        old = node.head()
        assert old.size < served.size

        # Every way to sign refuses, says what is missing, and points to recovery.
        r = await node.publish(3)
        assert r.returncode == 5, r.stdout + r.stderr
        assert f"size {old.size}" in r.stderr and f"size {served.size}" in r.stderr
        assert f"federation feed recover {NAME} --from URL" in r.stderr
        r = await acli(node.home.root, "feed", "refresh", NAME)
        assert r.returncode != 0 and "feed recover" in r.stderr
        new_key = tmp_path / "new.key"
        r = await acli(node.home.root, "feed", "rotate-key", NAME, "--new-key", str(new_key))
        assert r.returncode == 5 and "feed recover" in r.stderr, r.stderr
        assert node.head().checkpoint == old.checkpoint  # nothing was signed

        r = await _ok(await acli(node.home.root, "feed", "recover", NAME, "--from", relay))
        assert f"tree size {old.size} -> {served.size}" in r.stdout
        recovered = node.head()
        assert (recovered.size, recovered.version, recovered.digest, recovered.checkpoint) == \
            (served.size, served.version, served.digest, served.checkpoint)
        assert recovered.access == "public"  # the restored row keeps its own

        await _ok(await node.publish(4))
        await node.start()
        await _ok(await acli(member, "sync"))
        assert await _followed(member) == (served.version + 1, node.head().size)
        await _ok(await acli(member, "verify"))
    finally:
        await relay_runner.cleanup()
        if node.runner is not None:
            await node.stop()


def test_private_keys_are_never_in_the_home_state(tmp_path):
    """The record outside the database holds a public checkpoint, mode-safe, and nothing secret."""
    ch = Clearinghouse(tmp_path / "p")
    ch.publish(["9e107d9d372bb6826bd81d3542a419d6"])
    record = ch.home.served_checkpoint(NAME)
    assert record.read_bytes() == ch.checkpoint()
    assert oct(os.stat(record.parent).st_mode & 0o777) == "0o700"
