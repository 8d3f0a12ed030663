"""Shared pieces of the benchmarks: synthetic feeds, child servers, reporting.

Nothing here is timed; each script times its own phases and prints ratios
against a baseline measured in the same run.
"""
from __future__ import annotations

import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from federation.core import entries as E  # noqa: E402
from federation.core.note import Signer  # noqa: E402
from federation.store.publisher import Publisher  # noqa: E402

WORK = Path(os.environ.get("FEDERATION_BENCH_DIR", "/tmp/federation-bench"))
NAME = "bench"
ORIGIN = "bench.example/feeds/bench"
# A fixed seed, only for benchmark data; never a real key.
SEED = bytes(range(32))


def signer() -> Signer:
    return Signer.from_seed(ORIGIN, SEED)


def synthetic_ops(n: int, seed: int = 1, start: int = 0) -> list[E.Add]:
    """n md5 adds, 10 per case, one label: a clearinghouse-like shape."""
    rng = random.Random(seed)
    return [E.Add("md5", rng.randbytes(16), f"case-{(start + i) // 10}", ("csam",), 0) for i in range(n)]


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def published_feed(n: int, batch: int = 100_000) -> Path:
    """A publisher DB holding one feed with ``n`` hashes (cached across runs)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"pub-{n}.db"
    done = WORK / f"pub-{n}.done"
    if done.exists():
        return path
    for p in WORK.glob(f"pub-{n}.db*"):
        p.unlink()
    s = signer()
    pub = Publisher(path)
    pub.create_feed(NAME, ORIGIN, s)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        pub.publish(NAME, synthetic_ops(min(batch, n - start), seed=start, start=start), s)
        print(f"  setup: published {min(start + batch, n)}/{n} hashes ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    pub.close()
    done.write_text("ok\n")
    return path


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_child(args: list[str], port: int, timeout: float = 30.0) -> subprocess.Popen:
    """Start a server child process and wait until GET /healthz answers."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server {args} exited with {proc.returncode}")
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server {args} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def emit(result: dict) -> None:
    """Print one machine-readable result line (run_all.py collects them)."""
    print("RESULT " + json.dumps(result), flush=True)
