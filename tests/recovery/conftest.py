"""Fixtures of the recovery tests: a publisher home made with the real CLI,
served on loopback (snapshots too, once written), and a mirror home following it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from federation.net.server import PublisherSource, create_app
from federation.net.snapshots import server_extension

from support.disk import acli


@dataclass
class Node:
    """A publisher home serving feed ``tid`` and a member's home following it."""
    pub: Path
    mirror: Path
    url: str  # the feed's tlog-tiles prefix
    vkey: str


@pytest.fixture
async def node(tmp_path, serve) -> Node:
    pub, mirror = tmp_path / "publisher", tmp_path / "member"
    out = (await acli(pub, "feed", "create", "tid", "--origin", "127.0.0.1/feeds/tid", "--access", "public")).stdout
    vkey = next(line.split()[1] for line in out.splitlines() if line.startswith("vkey:"))
    db = pub / "publisher.db"
    url = await serve(create_app([PublisherSource(db)], extensions=[server_extension(db)])) + "/feeds/tid/"
    await acli(mirror, "follow", "tid", "--url", url, "--origin", "127.0.0.1/feeds/tid", "--vkey", vkey)
    return Node(pub, mirror, url, vkey)
