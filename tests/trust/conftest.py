"""Fixtures of the trust tests (``world`` itself is shared: tests/conftest.py)."""
from __future__ import annotations

import pytest

from support.feeds import NAME, ORIGIN
from support.trust_world import close_world, make_world


@pytest.fixture
async def home_world(tmp_path, make_publisher):
    """``world``, with the publisher DB and its log key laid out as a node home
    (``tmp_path/home``: ``publisher.db``, ``private/NAME.key`` mode 0600), so
    ``federation --home`` subprocesses publish into the served DB."""
    from federation.node.keys import write_new_key
    home = tmp_path / "home"
    signer = write_new_key(home / "private" / f"{NAME}.key", ORIGIN)
    world = await make_world(tmp_path, make_publisher("home/publisher.db", signer))
    world.home = home
    yield world
    await close_world(world)
