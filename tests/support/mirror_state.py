"""What a mirror stores, compared before and after; syncs bounded in time;
syncs that must fail and leave the mirror exactly where it was.
"""
from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import pytest

from federation.core.merkle import CompactRange
from federation.store.mirror import Mirror
from federation.sync.orchestrator import sync_once

from support.feeds import NAME

SYNC_TIMEOUT = 15.0  # seconds; every sync in the tests is bounded by this


def _h(b: bytes | None) -> str | None:
    return None if b is None else hashlib.sha256(b).hexdigest()


def snapshot(m: Mirror, name: str = NAME, with_times: bool = True) -> dict:
    """Everything the mirror stores for ``name`` except bookkeeping of sync attempts.

    ``with_times=False`` drops wall-clock fields the mirror sets when applying
    (so two mirrors that applied the same versions at different moments compare equal).
    """
    f = m.get(name)
    c = m.conn
    snap = dict(
        applied_size=f.applied_size,
        version=f.version,
        count=f.count,
        digest=_h(f.digest),
        compact=f.compact.hex(),
        verified_checkpoint=f.verified_checkpoint,
        checkpoint=f.checkpoint,
        hashes=c.execute(
            "SELECT hash_type, hex(value), case_id, labels, added_version, added_time FROM hashes"
            " WHERE feed=? ORDER BY hash_type, value, case_id", (f.id,)).fetchall(),
        tiles=[(lvl, idx, w, _h(d)) for lvl, idx, w, d in c.execute(
            "SELECT level, idx, width, data FROM tiles WHERE feed=? ORDER BY level, idx, width", (f.id,))],
        changes=c.execute(
            "SELECT seq, version, action, hash_type, hex(value), case_id, labels, reason, time FROM changes"
            " WHERE feed=? ORDER BY seq", (f.id,)).fetchall(),
        versions=c.execute(
            "SELECT version, size, time, count" + (", applied_at" if with_times else "")
            + " FROM versions WHERE feed=? ORDER BY version", (f.id,)).fetchall(),
    )
    if with_times:
        snap["updated"] = f.updated
    return snap


def publisher_tiles(db: Path | str, name: str = NAME) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (fid,) = conn.execute("SELECT id FROM feeds WHERE name=?", (name,)).fetchone()
        return [(lvl, idx, w, _h(d)) for lvl, idx, w, d in conn.execute(
            "SELECT level, idx, width, data FROM tiles WHERE feed=? ORDER BY level, idx, width", (fid,))]
    finally:
        conn.close()


def assert_matches_publisher(m, pf):
    """Mirror head equals the publisher's head, the mirror audits clean and
    stores the same tile bytes the publisher serves."""
    f, h = m.get(pf.name), pf.head()
    assert (f.applied_size, f.version, f.count, f.digest) == (h.size, h.version, h.count, h.digest)
    assert CompactRange.from_bytes(f.compact).root() == CompactRange.from_bytes(h.compact).root()
    assert f.checkpoint == h.checkpoint == f.verified_checkpoint
    assert m.audit(pf.name) == []
    assert [t for t in snapshot(m, pf.name)["tiles"]] == publisher_tiles(pf.path, pf.name)


async def sync(m: Mirror, name: str = NAME, timeout: float = SYNC_TIMEOUT, **kw):
    """``sync_once`` bounded in time."""
    async with asyncio.timeout(timeout):
        return await sync_once(m, name, **kw)


async def expect_failure(m: Mirror, exc_type: type, kind: str, *words: str, name: str = NAME,
                         timeout: float = SYNC_TIMEOUT, before: dict | None = None) -> Exception:
    """Run a sync that must raise ``exc_type`` (with ``kind``, and ``words`` in
    its message) and must leave the mirror exactly where it was."""
    if before is None:
        before = snapshot(m, name)
    with pytest.raises(Exception) as info:
        await sync(m, name, timeout=timeout)
    e = info.value
    assert type(e) is exc_type, f"want {exc_type.__name__}, got {type(e).__name__}: {e}"
    assert e.kind == kind, f"want kind {kind!r}, got {e.kind!r}: {e}"
    for w in words:
        assert w in str(e), f"{w!r} not in error message {str(e)!r}"
    assert snapshot(m, name) == before, "a failed sync changed the mirror"
    assert m.audit(name) == []
    assert m.get(name).last_error.startswith(f"{kind}: "), m.get(name).last_error
    return e
