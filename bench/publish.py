"""Publisher appends/s: batches of 100k and many small batches, against raw SQLite.

    python bench/publish.py [--large-batches K] [--small-batches M]

Each publish is one version: entries encoded, applied to the active set,
LtHash16 updated, tiles and bundles written, checkpoint signed, committed
with synchronous=FULL. Baseline, same run: raw ``executemany`` of the same
number of rows (a 7-column WITHOUT ROWID table with the same primary key),
one transaction per batch, same pragmas.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def raw_baseline(path: Path, batches: list[list]) -> float:
    from federation.store.activeset import SCHEMA
    from federation.store.db import connect, write_txn
    conn = connect(path)
    conn.executescript(SCHEMA)
    t0 = time.perf_counter()
    for ops in batches:
        with write_txn(conn):
            conn.executemany("INSERT INTO hashes VALUES (?,?,?,?,?,?,?)",
                             [(1, o.hash_type, o.value, o.case, ",".join(o.labels), 1, 0) for o in ops])
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def publish_all(path: Path, batches: list[list]) -> float:
    from federation.store.publisher import Publisher
    s = common.signer()
    pub = Publisher(path)
    pub.create_feed(common.NAME, common.ORIGIN, s)
    t0 = time.perf_counter()
    for ops in batches:
        pub.publish(common.NAME, ops, s)
    dt = time.perf_counter() - t0
    pub.close()
    return dt


def main(large: int = 3, small: int = 500, small_size: int = 10) -> list[dict]:
    common.WORK.mkdir(parents=True, exist_ok=True)
    out = []
    for label, batches in (
        ("large", [common.synthetic_ops(100_000, seed=i, start=i * 100_000) for i in range(large)]),
        ("small", [common.synthetic_ops(small_size, seed=10_000 + i, start=i * small_size) for i in range(small)]),
    ):
        n = sum(len(b) for b in batches)
        for p in common.WORK.glob("publish-*.db*"):
            p.unlink()
        t_pub = publish_all(common.WORK / "publish-fed.db", batches)
        t_raw = raw_baseline(common.WORK / "publish-raw.db", batches)
        r = {"bench": f"publish_{label}", "batches": len(batches), "batch_size": len(batches[0]),
             "entries_per_s": round(n / t_pub), "raw_rows_per_s": round(n / t_raw),
             "ratio_to_raw": round((n / t_pub) / (n / t_raw), 3)}
        print(f"publish, {len(batches)} batches of {len(batches[0]):,}: {r['entries_per_s']:,} entries/s "
              f"({len(batches) / t_pub:.1f} versions/s); raw executemany {r['raw_rows_per_s']:,} rows/s; "
              f"ratio {r['ratio_to_raw']} of raw" + (" (target: >= 200,000 entries/s)" if label == "large" else ""))
        common.emit(r)
        out.append(r)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    kw = {}
    if "--large-batches" in args:
        kw["large"] = int(args[args.index("--large-batches") + 1])
    if "--small-batches" in args:
        kw["small"] = int(args[args.index("--small-batches") + 1])
    main(**kw)
