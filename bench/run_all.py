"""Run every benchmark with quick default sizes and print a summary.

    python bench/run_all.py            # quick: bootstrap 1M, 50 incremental versions, ...
    python bench/run_all.py --n 10000000   # the 10M bootstrap (setup takes minutes, cached)

Each benchmark prints its figures as ratios against a baseline measured in
the same run; see bench/README.md for recorded figures.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bootstrap  # noqa: E402
import common  # noqa: E402
import entries  # noqa: E402
import incremental  # noqa: E402
import publish  # noqa: E402
import server  # noqa: E402


def main() -> None:
    args = sys.argv[1:]
    n = int(args[args.index("--n") + 1]) if "--n" in args else 1_000_000
    print(f"machine: {common.machine()}")
    print(f"work dir: {common.WORK}")
    t0 = time.perf_counter()
    bootstrap.main(n)
    incremental.main()
    publish.main()
    server.main()
    entries.main()
    print(f"all benchmarks done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
