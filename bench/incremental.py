"""Incremental: publish a 1,000-entry version; time until a following mirror applied it.

    python bench/incremental.py [--versions K]

The publisher runs here, the server and the mirror in child processes. The
mirror follows with one keep-alive HTTP session, polling the checkpoint
every 2 ms (a tight poll: the wait mechanism available to every mirror).
Latency is measured from the start of ``publish`` (batch encoding, active
set, tiles, signature, commit all included) and from its commit, to the
moment the mirror's head row shows the new version (read from its DB here,
polled every 0.5 ms). Baseline, same run: the time to poll an unchanged
checkpoint (one loopback request), the floor of any poll-based follower.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

HERE = Path(__file__).resolve().parent


def child_follow(url: str, db: str) -> None:
    from federation.net.fetcher import Fetcher
    from federation.store.mirror import Mirror
    from federation.sync.orchestrator import sync_feed

    m = Mirror(db)
    m.follow(common.NAME, common.ORIGIN, [common.signer().vkey], [url])

    async def run():
        async with Fetcher([url], concurrency=8) as f:
            while True:
                r = await sync_feed(m, common.NAME, f)
                if not r.changed:
                    await asyncio.sleep(0.002)

    asyncio.run(run())


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main(versions: int = 50, size: int = 1000) -> dict:
    import urllib.request

    from federation.store.db import connect
    from federation.store.publisher import Publisher

    common.WORK.mkdir(parents=True, exist_ok=True)
    for p in common.WORK.glob("incr-*.db*"):
        p.unlink()
    pub_db, mir_db = common.WORK / "incr-pub.db", common.WORK / "incr-mirror.db"
    s = common.signer()
    pub = Publisher(pub_db)
    pub.create_feed(common.NAME, common.ORIGIN, s)
    pub.publish(common.NAME, common.synthetic_ops(size, seed=0), s)
    port = common.free_port()
    server = common.start_child([str(HERE / "serve_child.py"), "federation", str(pub_db), str(port)], port)
    url = f"http://127.0.0.1:{port}/feeds/{common.NAME}/"
    follower = subprocess.Popen([sys.executable, __file__, "--child-follow", url, str(mir_db)])
    try:
        while not mir_db.exists():
            time.sleep(0.01)
        conn = connect(mir_db, readonly=True)

        def mirror_version() -> int:
            try:
                row = conn.execute("SELECT version FROM follows").fetchone()
            except sqlite3.OperationalError:  # the child has not created its schema yet
                return 0
            return row[0] if row else 0

        deadline = time.monotonic() + 30
        while mirror_version() < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("mirror did not catch up")
            time.sleep(0.01)
        # Baseline: one poll of an unchanged checkpoint over loopback (urllib, new connection each).
        polls = []
        for _ in range(50):
            t0 = time.perf_counter()
            urllib.request.urlopen(url + "checkpoint").read()
            polls.append(time.perf_counter() - t0)
        from_start, from_commit = [], []
        for v in range(2, versions + 2):
            ops = common.synthetic_ops(size, seed=v, start=v * size)
            t0 = time.perf_counter()
            pub.publish(common.NAME, ops, s)
            t1 = time.perf_counter()
            deadline = time.monotonic() + 30
            while mirror_version() < v:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mirror did not apply version {v}")
                time.sleep(0.0005)
            t2 = time.perf_counter()
            from_start.append(t2 - t0)
            from_commit.append(t2 - t1)
        conn.close()
    finally:
        follower.terminate()
        follower.wait(5)
        common.stop(server)
        pub.close()
    ms = lambda x: round(1000 * x, 1)  # noqa: E731
    r = {"bench": "incremental", "versions": versions, "entries_per_version": size,
         "p50_ms": ms(statistics.median(from_start)), "p99_ms": ms(percentile(from_start, 99)),
         "p50_from_commit_ms": ms(statistics.median(from_commit)), "p99_from_commit_ms": ms(percentile(from_commit, 99)),
         "poll_baseline_p50_ms": ms(statistics.median(polls)),
         "ratio_p50_to_poll": round(statistics.median(from_start) / statistics.median(polls), 1)}
    print(f"incremental, {versions} versions of {size:,} entries: publish-to-applied p50 {r['p50_ms']} ms, "
          f"p99 {r['p99_ms']} ms (from commit: p50 {r['p50_from_commit_ms']} ms, p99 {r['p99_from_commit_ms']} ms); "
          f"baseline checkpoint poll p50 {r['poll_baseline_p50_ms']} ms (target: p50 < 100 ms)")
    common.emit(r)
    return r


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child-follow"]:
        child_follow(sys.argv[2], sys.argv[3])
    else:
        args = sys.argv[1:]
        main(versions=int(args[args.index("--versions") + 1]) if "--versions" in args else 50)
