"""Bootstrap of N hashes into a verified mirror, against raw sqlite3 executemany.

    python bench/bootstrap.py [N]        # N defaults to 1,000,000; try 10000000

Setup (not timed, cached in $FEDERATION_BENCH_DIR): a publisher DB with N
hashes published in 100k batches, and one zstd snapshot of it. Timed, each in
a fresh child process so peak RSS is its own:

* bootstrap: a new mirror follows the feed over loopback HTTP (server in
  another process) and runs ``bootstrap_feed``: download, verify header and
  proofs from hash tiles, stream the rows into SQLite, LtHash16 of every
  record (worker processes) checked against the seal, indexes rebuilt.
* raw: the same rows, already in memory and in primary-key order, inserted
  with one ``executemany`` into a fresh DB with the same table, the same
  pragmas (WAL, synchronous=FULL) and the same indexes built after.
"""
from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def child_bootstrap(url: str, db: str, workers: str) -> None:
    from federation.sync.bootstrap import bootstrap_feed
    from federation.net.fetcher import Fetcher
    from federation.store.mirror import Mirror

    m = Mirror(db)
    m.follow(common.NAME, common.ORIGIN, [common.signer().vkey], [url])

    async def run():
        async with Fetcher([url]) as f:
            return await bootstrap_feed(m, common.NAME, f, workers=None if workers == "auto" else int(workers),
                                        progress=False)

    t0 = time.perf_counter()
    r = asyncio.run(run())
    dt = time.perf_counter() - t0
    assert r is not None and r.count == m.get(common.NAME).count
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": dt, "count": r.count, "rss_mb": rss, "worker_rss_mb": kids}))


def child_raw(snapshot: str, db: str) -> None:
    from federation.store.activeset import SCHEMA
    from federation.sync.bootstrap import _sort_pragmas
    from federation.store.db import connect, write_txn
    from federation.core.snapshot_format import SnapshotReader

    with open(snapshot, "rb") as fh:
        reader = SnapshotReader(fh)
        rows = [(1, t, v, c, ",".join(labels), 1, 0) for batch in reader.records() for t, v, c, labels in batch]
    conn = connect(db)
    table, index = SCHEMA.split("CREATE INDEX", 1)
    conn.executescript(table)
    t0 = time.perf_counter()
    with write_txn(conn):
        _sort_pragmas(conn, sorting=False)
        conn.executemany("INSERT INTO hashes VALUES (?,?,?,?,?,?,?)", rows)
        _sort_pragmas(conn, sorting=True)  # as the mirror builds its index
        conn.execute("CREATE INDEX" + index.rstrip().rstrip(";"))  # the mirror's one secondary index
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "count": len(rows)}))


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(n: int, workers: str = "auto") -> dict:
    from federation.store.snapshots import list_snapshots, snapshot_dir, write_snapshot
    from federation.store.db import connect

    db = common.published_feed(n)
    conn = connect(db, readonly=True)
    fid = conn.execute("SELECT id FROM feeds").fetchone()[0]
    refs = list_snapshots(conn, fid)
    conn.close()
    snap_s = None
    if not refs:
        t0 = time.perf_counter()
        refs = [write_snapshot(db, common.NAME, compress=True, progress=False)]
        snap_s = time.perf_counter() - t0
    ref = refs[-1]
    snap_file = snapshot_dir(db) / str(fid) / f"{ref.sha256}.snap"

    port = common.free_port()
    server = common.start_child([str(Path(__file__).parent / "serve_child.py"), "federation", str(db), str(port)], port)
    try:
        for p in common.WORK.glob("mirror-*.db*"):
            p.unlink()
        boot = run_child("--child-bootstrap", f"http://127.0.0.1:{port}/feeds/{common.NAME}/",
                         str(common.WORK / f"mirror-{n}.db"), workers)
    finally:
        common.stop(server)
    for p in common.WORK.glob("raw-*.db*"):
        p.unlink()
    raw = run_child("--child-raw", str(snap_file), str(common.WORK / f"raw-{n}.db"))
    result = {
        "bench": "bootstrap", "n": n, "seconds": round(boot["seconds"], 2),
        "hashes_per_s": round(n / boot["seconds"]), "peak_rss_mb": round(boot["rss_mb"]),
        "worker_peak_rss_mb": round(boot["worker_rss_mb"]),
        "raw_seconds": round(raw["seconds"], 2), "ratio_to_raw": round(boot["seconds"] / raw["seconds"], 2),
        "snapshot_bytes": ref.bytes, "snapshot_write_seconds": None if snap_s is None else round(snap_s, 2),
    }
    print(f"bootstrap of {n:,} hashes: {boot['seconds']:.1f} s ({result['hashes_per_s']:,} hashes/s), "
          f"peak RSS {result['peak_rss_mb']} MiB (+ LtHash worker {result['worker_peak_rss_mb']} MiB); "
          f"raw executemany {raw['seconds']:.1f} s; ratio {result['ratio_to_raw']}x raw "
          f"(target: 10M < 60 s and <= 3x raw)")
    common.emit(result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child-bootstrap"]:
        child_bootstrap(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1:2] == ["--child-raw"]:
        child_raw(sys.argv[2], sys.argv[3])
    else:
        args = [a for a in sys.argv[1:] if not a.startswith("--workers=")]
        w = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--workers=")), "auto")
        main(int(args[0]) if args else 1_000_000, w)
