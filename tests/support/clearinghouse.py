"""A clearinghouse made the way an operator makes one: a home created by the
CLI (``feed create``, key in HOME/private), published into, served on loopback
by the ``serve_feed`` fixture; the CLI run as a user runs it, with a home.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

from federation.core.entries import Add
from federation.node.home import Home
from federation.store.publisher import Publisher

NAME = "tid"
ORIGIN = "clearinghouse.test/feeds/tid"
MD5 = "9e107d9d372bb6826bd81d3542a419d6"
DAY = 86400


def cli(home: Path, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, FEDERATION_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "federation", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


async def acli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(cli, home, *args)


class Clearinghouse:
    """A publisher home made by the CLI (key in HOME/private), served on loopback."""

    def __init__(self, root: Path):
        self.home = Home(root)
        out = cli(root, "feed", "create", NAME, "--origin", ORIGIN, "--access", "public")
        assert out.returncode == 0, out.stderr
        self.vkey = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("vkey:"))
        from federation.node.keys import load_signer
        self.signer = load_signer(self.home.key_path(NAME))

    def publish(self, hashes: list[str], case: str = "c-17", when: int | None = None):
        pub = Publisher(self.home.publisher_db)
        try:
            return pub.publish(NAME, [Add("md5", bytes.fromhex(h), case, ("csam",), 0) for h in hashes],
                               self.signer, now=when)
        finally:
            pub.close()

    def checkpoint(self) -> bytes:
        pub = Publisher(self.home.publisher_db)
        try:
            return pub.feed(NAME).checkpoint
        finally:
            pub.close()

    def frozen_copy(self, path: Path) -> Path:
        """A copy of the publisher database as it is now: served, it is a relay
        or CDN that keeps serving this checkpoint forever."""
        pub = Publisher(self.home.publisher_db)
        pub.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pub.close()
        shutil.copy(self.home.publisher_db, path)
        return path


def follow(home: Path, url: str, vkey: str, *extra: str) -> None:
    r = cli(home, "follow", NAME, "--url", url, "--origin", ORIGIN, "--vkey", vkey, *extra)
    assert r.returncode == 0, r.stderr
