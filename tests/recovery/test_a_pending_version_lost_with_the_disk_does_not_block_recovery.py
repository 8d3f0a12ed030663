"""Review (issue 15): a version committed but never served -- held back
while it awaits cosignatures -- is recorded in the served-checkpoint
record as if it had been served. When the disk is lost (or an older backup
restored) before it was cosigned, no relay, export or member holds it (they
only ever saw the cosigned, smaller checkpoint), so ``feed recover`` refuses
every copy as "behind", and every signing refuses the database: the
publisher can never publish again (no withdrawal reaches anyone) short of
deleting the record by hand, which docs/node.md says never to touch.

What should hold: recovery from a copy holding everything that was SERVED
succeeds, and the feed can then publish again.
"""
from __future__ import annotations

import pytest

from federation.net.relay import RelaySource
from federation.net.server import create_app

from support.disk import acli, batch

pytestmark = pytest.mark.timeout(120)

ORIGIN = "127.0.0.1/feeds/tid"


async def test_a_pending_version_lost_with_the_disk_does_not_block_recovery(tmp_path, serve, node):
    pub, member = node.pub, node.mirror  # feed tid of ORIGIN, served; member follows it
    await acli(pub, "publish", "tid", str(batch(tmp_path / "v1.csv", 300, "c1")))
    assert "version 0 -> 1" in (await acli(member, "sync")).stdout
    relay = await serve(create_app([RelaySource(member / "mirror.db")])) + "/feeds/tid/"

    # Cosigning is configured; the witness is down, so version 2 is committed but not served.
    wvkey = (await acli(pub, "cosign", "keygen", "w.example", "--out", str(tmp_path / "w.key"))).stdout.split()[0]
    await acli(pub, "cosign", "configure", "tid", "--witness", f"http://127.0.0.1:9/witness={wvkey}",
               "--quorum", "1")
    p = await acli(pub, "publish", "tid", str(batch(tmp_path / "v2.csv", 10, "c2")), check=False)
    assert "not served" in p.stderr, p.stderr
    await acli(member, "sync")  # the member holds version 1: all that was ever served

    # The disk dies before the witness comes back; HOME/state and HOME/private survive (the runbook's step 1).
    for suffix in ("", "-wal", "-shm"):
        (pub / f"publisher.db{suffix}").unlink(missing_ok=True)
    r = await acli(pub, "feed", "recover", "tid", "--from", relay, "--access", "public", check=False)
    assert r.returncode == 0, r.stderr
    await acli(pub, "cosign", "configure", "tid", "--off")
    p = await acli(pub, "publish", "tid", str(batch(tmp_path / "v3.csv", 5, "c3")), check=False)
    assert p.returncode == 0, p.stderr
