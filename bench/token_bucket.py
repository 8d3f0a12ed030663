"""Our token bucket (``net.auth.RateLimiter``) against aiolimiter's AsyncLimiter, one limiter per key.

Not a dependency: ``pip install aiolimiter`` to run it. 10,000 keys (the
limiter's bound), 200,000 random calls at 20/s with a burst of 100: time per
non-blocking check and traced memory per key. aiolimiter has no "seconds until
allowed" (the ``Retry-After`` of a 429) and no bound on its keys, so using it
would still need our LRU and our arithmetic around it.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
import tracemalloc

from aiolimiter import AsyncLimiter

from federation.net.auth import RateLimiter

N_KEYS, N_CALLS = 10_000, 200_000


def ours(seq: list[str]) -> tuple[float, float]:
    rl = RateLimiter()
    tracemalloc.start()
    t = time.perf_counter()
    for k in seq:
        rl.allow(k, 20.0, 100)
    dt, mem = time.perf_counter() - t, tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return dt / N_CALLS * 1e6, mem / N_KEYS


async def theirs(seq: list[str]) -> tuple[float, float]:
    limiters: dict[str, AsyncLimiter] = {}
    tracemalloc.start()
    t = time.perf_counter()
    for k in seq:
        lim = limiters.get(k)
        if lim is None:
            lim = limiters[k] = AsyncLimiter(100, 100 / 20.0)  # 100 per 5 s: burst 100, 20/s
        if lim.has_capacity():
            await lim.acquire()
    dt, mem = time.perf_counter() - t, tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return dt / N_CALLS * 1e6, mem / N_KEYS


def main() -> None:
    keys = [f"k{i}" for i in range(N_KEYS)]
    seq = [random.choice(keys) for _ in range(N_CALLS)]
    (a_us, a_b), (b_us, b_b) = ours(seq), asyncio.run(theirs(seq))
    print(f"ours: {a_us:.2f} us/check, {a_b:.0f} B/key; aiolimiter: {b_us:.2f} us/check, {b_b:.0f} B/key")
    print("RESULT " + json.dumps({"ours_us": a_us, "ours_bytes_per_key": a_b, "aiolimiter_us": b_us,
                                  "aiolimiter_bytes_per_key": b_b}))


if __name__ == "__main__":
    main()
