"""``federation demo``: the whole story on loopback with the embedded default.

A publisher creates a feed and publishes a batch, an HTTP server on
127.0.0.1 serves it, a mirror follows and syncs it over that server, a case
is withdrawn and re-published, the mirror syncs again, and the demo shows
the withdrawn hashes gone from the mirror while the others still match.
Every step goes through the same code paths as the CLI commands.
"""
from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path

from federation.core.entries import Add, Withdraw
from federation.node.home import Home
from federation.net.httpserver import start
from federation.node.keys import write_new_key
from federation.store.mirror import Mirror
from federation.node.assembly import build_publisher_app
from federation.store.publisher import Publisher
from federation.sync.orchestrator import sync_once

FEED = "tid"
ORIGIN = "localhost/feeds/tid"


def sample_batch(cases: int = 20) -> list[Add]:
    """Deterministic sample: each case has one hash of every type."""
    ops = []
    for c in range(cases):
        case = f"case-{c:04d}"
        seed = case.encode()
        ops += [
            Add("md5", hashlib.md5(seed).digest(), case, ("demo",), 0),
            Add("sha1", hashlib.sha1(seed).digest(), case, ("demo",), 0),
            Add("sha256", hashlib.sha256(seed).digest(), case, ("demo",), 0),
            Add("pdq", hashlib.sha256(b"pdq" + seed).digest(), case, ("demo", "pdq"), 0),
            Add("photodna", hashlib.shake_256(b"pdna" + seed).digest(144), case, ("demo",), 0),
        ]
    return ops


def say(step: str, text: str) -> None:
    print(f"[{step}] {text}", flush=True)


async def run_demo(root: Path | None = None) -> bool:
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="federation-demo-")
        root = Path(tmp.name)
    home = Home.resolve(str(root))
    runner = None
    try:
        signer = write_new_key(home.key_path(FEED), ORIGIN)
        pub = Publisher(home.publisher_db)
        pub.create_feed(FEED, ORIGIN, signer, access="public")  # the mirror below reads it without a token
        say("publisher", f"created feed {FEED!r} (public), log key {signer.vkey}")
        batch = sample_batch()
        r = pub.publish(FEED, batch, signer)
        say("publisher", f"published version {r.version}: {r.adds} hashes, tree size {r.size}")

        runner, base = await start(build_publisher_app(home))  # as 'federation serve'
        url = f"{base}/feeds/{FEED}/"
        say("server", f"serving {url} (tlog-tiles)")

        mirror = Mirror(home.root / "platform-mirror.db")
        mirror.follow(FEED, ORIGIN, [signer.vkey], [url])
        s = await sync_once(mirror, FEED)
        say("mirror", f"synced over HTTP: version {s.old_version} -> {s.version}, {mirror.get(FEED).count} active hashes")

        target = batch[5]  # case-0001's md5
        hits = mirror.lookup(target.hash_type, target.value)
        say("mirror", f"lookup {target.hash_type} {target.value.hex()}: "
            + (f"MATCH case {hits[0].case}" if hits else "no match"))

        w = pub.publish(FEED, [Withdraw("submitter_request", 0, case=target.case)], signer)
        say("publisher", f"withdrew {target.case} as version {w.version}: {r.count - w.count} hashes withdrawn")
        s2 = await sync_once(mirror, FEED)
        say("mirror", f"synced: version {s2.old_version} -> {s2.version}, {mirror.get(FEED).count} active hashes")

        after = mirror.lookup(target.hash_type, target.value)
        other = batch[0]
        still = mirror.lookup(other.hash_type, other.value)
        say("mirror", f"lookup {target.hash_type} {target.value.hex()}: " + ("MATCH (withdrawal LOST)" if after else "no match -- withdrawal took effect"))
        say("mirror", f"lookup {other.hash_type} {other.value.hex()}: " + ("MATCH case " + still[0].case if still else "no match"))
        withdrawn = [c for c in mirror.changes(FEED) if c["action"] == "withdraw"]
        say("mirror", f"change stream: {len(withdrawn)} withdrawals, all of case {', '.join(sorted({c['case'] for c in withdrawn}))}")
        problems = mirror.audit(FEED)
        say("audit", "digest, count and Merkle root recomputed from the mirror's rows: "
            + ("OK" if not problems else "; ".join(problems)))
        ok = not after and bool(still) and not problems and len(withdrawn) == 5
        say("result", "PASS: the withdrawal reached the mirror" if ok else "FAIL")
        return ok
    finally:
        if runner is not None:
            await runner.cleanup()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(run_demo())
