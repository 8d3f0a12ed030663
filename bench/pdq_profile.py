"""Where a PDQ near-match query's time goes: a cProfile of ``mih.Table.search``.

    python bench/pdq_profile.py [--n 10000000] [--queries 2000]

Builds the table straight from N random values (no SQLite), then profiles
the queries one per call and in one batch. Each numpy call in the profile
is one step of the search: ``take`` the random reads (bucket offsets, ids,
values), ``repeat``/``cumsum``/``arange`` the candidate positions,
``bitwise_count`` the distances, ``unique`` the de-duplication.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from federation.platform import mih  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--queries", type=int, default=2000)
    a = ap.parse_args()
    rng = np.random.default_rng(1)
    values = rng.integers(0, 256, (a.n, 32), dtype=np.uint8)
    t0 = time.process_time()
    table = mih.Table.build(values)
    print(f"N={a.n:,}: built in {time.process_time() - t0:.1f} CPU s; {table.nbytes / 2**20:,.0f} MiB; "
          f"{table.probes(31)} probes a query at threshold 31")
    queries = values[rng.integers(0, a.n, a.queries)].copy()
    queries[:, 0] ^= 0x0F  # 4 bits off an indexed value
    for name, run in (("one query per call", lambda: [table.search(queries[i:i + 1], 31) for i in range(len(queries))]),
                      ("one batch", lambda: table.search(queries, 31))):
        run()  # warm (plans, page faults)
        prof = cProfile.Profile()
        t0 = time.process_time()
        prof.runcall(run)
        cpu = time.process_time() - t0
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(10)
        print(f"\n{name}: {a.queries / cpu:,.0f} queries per CPU second under the profiler")
        print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))


if __name__ == "__main__":
    main()
