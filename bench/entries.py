"""Entry encode/decode cost per entry, against bare msgpack in the same run.

    python bench/entries.py [N]        # N synthetic adds, default 20,000

``entries.decode`` parses, validates strictly and checks the canonical
encoding (it re-encodes); ``entries.encode`` validates and packs. Baselines:
``msgpack.unpackb`` / ``msgpack.packb`` of the same bytes / maps, which is
what any decoder must at least pay. Best of 5 rounds each.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def best_of(fn, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(n: int = 20_000) -> dict:
    from federation.core import entries as E
    ops = common.synthetic_ops(n, seed=3)
    data = [E.encode(o) for o in ops]
    maps = [msgpack.unpackb(d, raw=False) for d in data]
    dec = best_of(lambda: [E.decode(d) for d in data]) / n
    raw_dec = best_of(lambda: [msgpack.unpackb(d, raw=False) for d in data]) / n
    enc = best_of(lambda: [E.encode(o) for o in ops]) / n
    raw_enc = best_of(lambda: [msgpack.packb(m, use_bin_type=True) for m in maps]) / n
    result = {"bench": "entries", "n": n, "decode_us": round(dec * 1e6, 2), "unpackb_us": round(raw_dec * 1e6, 2),
              "decode_ratio": round(dec / raw_dec, 1), "encode_us": round(enc * 1e6, 2),
              "packb_us": round(raw_enc * 1e6, 2), "encode_ratio": round(enc / raw_enc, 1)}
    print(f"entries, {n:,} adds: decode {result['decode_us']} us ({result['decode_ratio']}x bare unpackb "
          f"{result['unpackb_us']} us), encode {result['encode_us']} us ({result['encode_ratio']}x bare packb "
          f"{result['packb_us']} us)")
    common.emit(result)
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
