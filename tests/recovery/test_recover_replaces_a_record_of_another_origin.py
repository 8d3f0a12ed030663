"""The served-checkpoint record is about this feed's origin: when it holds a
checkpoint of ANOTHER origin (the name once published another log here),
``feed recover`` of this origin replaces it, says so, and the feed can sign
again -- instead of every signing refusing for good."""
from __future__ import annotations

import pytest

from support.disk import acli, batch

pytestmark = pytest.mark.timeout(120)


async def test_recover_replaces_a_record_of_another_origin(node, tmp_path):
    await acli(node.pub, "publish", "tid", str(batch(tmp_path / "a.csv", 20, "a")))
    # This home once published another log under the same name; its record is still there.
    old = tmp_path / "old"
    await acli(old, "feed", "create", "tid", "--origin", "old.example/feeds/tid", "--access", "public")
    await acli(old, "publish", "tid", str(batch(tmp_path / "o.csv", 50, "o")))
    record = node.pub / "state" / "publisher" / "tid.served-checkpoint"
    record.write_bytes((old / "state" / "publisher" / "tid.served-checkpoint").read_bytes())
    refused = await acli(node.pub, "publish", "tid", str(batch(tmp_path / "b.csv", 1, "b")), check=False)
    assert refused.returncode == 5 and "feed recover" in refused.stderr, refused.stderr

    r = await acli(node.pub, "feed", "recover", "tid", "--from", node.url, "--access", "public")
    assert "replacing the served-checkpoint record of origin old.example/feeds/tid" in r.stderr, r.stderr
    assert record.read_bytes().startswith(b"127.0.0.1/feeds/tid\n")
    p = await acli(node.pub, "publish", "tid", str(batch(tmp_path / "b.csv", 1, "b")), check=False)
    assert p.returncode == 0, p.stderr
