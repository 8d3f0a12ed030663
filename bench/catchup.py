"""Memory of a mirror catching up through the log (no snapshot).

    python bench/catchup.py [N]        # default 1,000,000 entries (10 versions of 100k)

A publisher process serves the cached N-hash bench feed (``common.published_feed``);
a fresh mirror in this process syncs it with snapshots disabled. Printed: the
time, and the mirror's peak RSS as a ratio to its RSS just before the sync
(the baseline, same process, same run). Memory should grow with the largest
version (applied in one transaction), not with the length of the catch-up.
"""
from __future__ import annotations

import asyncio
import json
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

SERVE = """
import sys
from aiohttp import web
from federation.net.server import PublisherSource, create_app
web.run_app(create_app([PublisherSource(sys.argv[1])]), host="127.0.0.1", port=int(sys.argv[2]),
            access_log=None, print=None)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(n: int) -> dict:
    from federation.store.mirror import Mirror
    from federation.store.publisher import Publisher
    from federation.sync.orchestrator import sync_once
    db = common.published_feed(n)
    f = Publisher(db).feeds()[0]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(db), str(port)])
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        m = Mirror(Path(tempfile.mkdtemp(dir=common.WORK)) / "catchup.db")
        m.follow(f.name, f.origin, [f.vkey], [f"http://127.0.0.1:{port}/feeds/{f.name}/"])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        r = await sync_once(m, f.name, snapshots=False)
        dt = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        server.terminate()
        server.wait()
    return dict(bench="catchup", entries=r.size, versions=r.version, seconds=round(dt, 1),
                peak_rss_mb=round(peak / 1024), before_rss_mb=round(before / 1024),
                ratio_peak_to_before=round(peak / before, 2))


def main(n: int = 1_000_000) -> dict:
    res = asyncio.run(run(n))
    print(f"log catch-up of {res['entries']:,} entries ({res['versions']} versions) in {res['seconds']} s: "
          f"mirror peak RSS {res['peak_rss_mb']} MiB, {res['ratio_peak_to_before']}x its RSS before the sync")
    print("RESULT " + json.dumps(res))
    return res


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
