"""Load: hundreds of followers long-polling one server while a publisher publishes.

Loopback only, bounded in time. Each follower is a real mirror (its own
SQLite file) running ``follower.watch_feed`` against a server with the
long-poll extension. The publisher publishes VERSIONS versions, one every
PERIOD seconds, on its own connection (as ``federation publish`` would).

Checked at the end, for every follower: it applied every version, in order
(its ``versions`` table holds 1..VERSIONS with the publisher's tree sizes),
its state equals the publisher's (count and digest), and its audit
(digest and root recomputed from its rows) is clean -- nothing unverified
was applied.

Printed: publish-to-apply latency (p50, p99, max) for N followers, and as a
ratio against a baseline measured in the same run with 1 follower.

    python bench/load_followers.py --followers 300 --versions 10
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from federation.net import longpoll
from federation.sync.follower import watch_feed
from federation.core.entries import Add
from federation.store.mirror import Mirror
from federation.core.note import Signer
from federation.store.publisher import Publisher
from federation.net.server import PublisherSource, create_app

ORIGIN = "bench.example/feeds/load"


def _ops(version: int, n: int) -> list[Add]:
    return [Add("md5", hashlib.md5(f"{version}/{i}".encode()).digest(), f"c-{version}", ("csam",), 0)
            for i in range(n)]


async def run_load(root: Path, followers: int, versions: int, period: float = 0.3, batch: int = 20,
                   bound: float = 120.0) -> dict:
    """Run one load round in ``root``; return figures and per-follower problems."""
    root.mkdir(parents=True, exist_ok=True)
    signer = Signer.generate(ORIGIN)
    pub = Publisher(root / "pub.db")
    pub.create_feed("load", ORIGIN, signer)
    app = create_app([PublisherSource(root / "pub.db")], extensions=[longpoll.install],
                     middlewares=[longpoll.longpoll_middleware])
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/feeds/load/"
    mirrors, tasks = [], []
    reached: list[dict[int, float]] = [dict() for _ in range(followers)]  # version -> first time applied
    done = asyncio.Event()
    complete = 0

    def on_change(i):
        def record(result):
            nonlocal complete
            now = time.monotonic()
            for v in range(result.old_version + 1, result.version + 1):
                reached[i].setdefault(v, now)
            if result.version == versions:
                complete += 1
                if complete == followers:
                    done.set()
        return record

    published: dict[int, float] = {}
    sizes: dict[int, int] = {}
    try:
        for i in range(followers):
            m = Mirror(root / f"m{i}.db")
            m.follow("load", ORIGIN, [signer.vkey], [url])
            mirrors.append(m)
            tasks.append(asyncio.create_task(watch_feed(m, "load", [url], wait=20, interval=30,
                                                             on_change=on_change(i))))
        # Let every follower reach its first long-poll before publishing.
        watch = app[longpoll.WATCH]
        deadline = time.monotonic() + bound
        while watch._waiters.get("load", 0) < followers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for v in range(1, versions + 1):
            r = await asyncio.to_thread(pub.publish, "load", _ops(v, batch), signer)
            published[v] = time.monotonic()
            sizes[v] = r.size
            await asyncio.sleep(period)
        await asyncio.wait_for(done.wait(), max(1.0, deadline - time.monotonic()))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()

    head = pub.feed("load")
    problems = []
    for i, m in enumerate(mirrors):
        rows = m.conn.execute("SELECT version, size FROM versions ORDER BY version").fetchall()
        if rows != [(v, sizes[v]) for v in range(1, versions + 1)]:
            problems.append(f"follower {i}: applied versions {rows}")
        f = m.get("load")
        if (f.count, f.digest, f.applied_size) != (head.count, head.digest, head.size):
            problems.append(f"follower {i}: state differs from the publisher's")
        audit = m.audit("load")
        if audit:
            problems.append(f"follower {i}: audit {audit}")
        m.close()
    pub.close()
    lat = sorted(reached[i][v] - published[v] for i in range(followers) for v in range(1, versions + 1)
                 if v in reached[i])
    return dict(followers=followers, versions=versions, problems=problems,
                p50=statistics.median(lat), p99=lat[min(len(lat) - 1, int(0.99 * len(lat)))], max=lat[-1],
                samples=len(lat))


async def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--followers", type=int, default=300)
    ap.add_argument("--versions", type=int, default=10)
    ap.add_argument("--period", type=float, default=0.5, help="seconds between publishes")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="federation-load-") as tmp:
        base = await run_load(Path(tmp) / "baseline", 1, args.versions, args.period)
        load = await run_load(Path(tmp) / "load", args.followers, args.versions, args.period)
    for r in (base, load):
        print(f"{r['followers']:4d} follower(s), {r['versions']} versions: publish->applied "
              f"p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms, max {r['max'] * 1000:.0f} ms; "
              f"problems: {len(r['problems'])}")
    print(f"ratio {args.followers} followers / 1 follower: p50 x{load['p50'] / base['p50']:.1f}, "
          f"p99 x{load['p99'] / base['p99']:.1f}")
    print(f"every follower applied every version, verified: {not base['problems'] and not load['problems']}")
    for p in (base["problems"] + load["problems"])[:10]:
        print("  ", p)
    return 1 if base["problems"] or load["problems"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
