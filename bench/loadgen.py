"""Load generator child: ``loadgen.py URL[,URL...] CONNECTIONS SECONDS``.

Keeps CONNECTIONS requests in flight (one keep-alive connection each) for
SECONDS, cycling through the URLs, and prints requests/s and the error
count as JSON. Runs in its own process so it does not share the server's
core scheduling with the benchmark driver.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


async def run(urls: list[str], conns: int, seconds: float) -> dict:
    done = errors = 0
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=conns, force_close=False)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as s:
        async def worker(k: int):
            nonlocal done, errors
            i = k
            while time.perf_counter() < stop:
                try:
                    async with s.get(urls[i % len(urls)]) as r:
                        await r.read()
                        if r.status == 200:
                            done += 1
                        else:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                i += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(conns)))
        dt = time.perf_counter() - t0
    return {"rps": done / dt, "errors": errors, "requests": done}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(sys.argv[1].split(","), int(sys.argv[2]), float(sys.argv[3])))))
