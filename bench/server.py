"""Server requests/s at 64 connections: the federation app vs a bare aiohttp handler.

    python bench/server.py [--seconds S]

Both servers run in child processes over the same publisher DB (a feed of
100k hashes from the bootstrap setup); the bare one returns the same
checkpoint and tile bytes from a dict. The load generator is a third
process: ``wrk`` (apt-get install wrk) if installed, else bench/loadgen.py
(aiohttp client, keep-alive). Same run, same
machine: the ratio is what counts.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

HERE = Path(__file__).resolve().parent


WRK_LUA = """
local paths = {}
for p in string.gmatch(os.getenv("WRK_PATHS"), "[^,]+") do paths[#paths + 1] = p end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
"""


def load(urls: list[str], conns: int, seconds: float) -> dict:
    """Requests/s from ``wrk`` (Debian package) when installed, else bench/loadgen.py."""
    wrk = shutil.which("wrk")
    if wrk:
        from urllib.parse import urlsplit
        script = common.WORK / "paths.lua"
        script.write_text(WRK_LUA)
        u = urlsplit(urls[0])
        env = {**os.environ, "WRK_PATHS": ",".join(urlsplit(x).path for x in urls)}
        out = subprocess.run([wrk, "-t1", f"-c{conns}", f"-d{max(1, int(seconds))}s", "-s", str(script),
                              f"{u.scheme}://{u.netloc}/"], check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
        rps = float(next(line for line in out.splitlines() if line.startswith("Requests/sec:")).split()[1])
        bad = next((line for line in out.splitlines() if "Non-2xx" in line), None)
        return {"rps": rps, "errors": int(bad.split()[-1]) if bad else 0, "tool": "wrk"}
    out = subprocess.run([sys.executable, str(HERE / "loadgen.py"), ",".join(urls), str(conns), str(seconds)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return {**json.loads(out), "tool": "loadgen.py"}


def main(seconds: float = 5.0, conns: int = 64, n: int = 100_000) -> list[dict]:
    from federation.core.layout import tile_path
    db = common.published_feed(n)
    paths = {"checkpoint": ["checkpoint"],
             "tile": [tile_path(0, i) for i in range(4)] + [tile_path(1, 0)]}
    results = []
    rps: dict[tuple[str, str], float] = {}
    for kind in ("bare", "federation"):
        port = common.free_port()
        proc = common.start_child([str(HERE / "serve_child.py"), kind, str(db), str(port)], port)
        try:
            base = f"http://127.0.0.1:{port}/feeds/{common.NAME}/"
            for what, ps in paths.items():
                load([base + p for p in ps], conns, 1.0)  # warm-up (tile cache, connections)
                r = load([base + p for p in ps], conns, seconds)
                if r["errors"]:
                    raise RuntimeError(f"{kind} {what}: {r['errors']} errors")
                rps[(kind, what)] = r["rps"]
                tool = r["tool"]
        finally:
            common.stop(proc)
    for what in paths:
        ratio = rps[("federation", what)] / rps[("bare", what)]
        r = {"bench": f"server_{what}", "connections": conns, "rps": round(rps[("federation", what)]),
             "bare_rps": round(rps[("bare", what)]), "ratio_to_bare": round(ratio, 3), "load_generator": tool}
        print(f"server {what} at {conns} connections: {r['rps']:,} req/s; bare aiohttp {r['bare_rps']:,} req/s; "
              f"ratio {r['ratio_to_bare']} (target: >= 0.5; load from {tool})")
        common.emit(r)
        results.append(r)
    return results


if __name__ == "__main__":
    args = sys.argv[1:]
    main(seconds=float(args[args.index("--seconds") + 1]) if "--seconds" in args else 5.0)
