"""PDQ near-match at N hashes, threshold 31: our index vs a numpy brute-force scan vs python-threatexchange's.

    python bench/pdq_nearmatch.py --n 10000000 [--queries 2000] [--sample 100] [--http-seconds 10]

Corpus: N uniformly random 256-bit PDQ hashes (the hard case for
near-neighbour search: nothing clusters) loaded into a real mirror database.
Queries: half are indexed hashes with 0..31 bits flipped (each must find its
original), half are random (almost always no match).

Each engine runs in a child process of its own, one after the other, so its
peak memory (ru_maxrss) is its own:

* ours: ``PdqIndex`` built from the mirror (the SQLite read included), saved
  next to it; queries one per call, in batches of 1000, and with the SQL
  provenance (``search``); then a restart that loads the saved file.
* brute force: XOR + popcount of every hash for each query (numpy
  ``bitwise_count`` over four uint64 words), on the first ``--sample``
  queries: the ground truth.
* threatexchange: ``PDQIndex`` (faiss multi-hash, what HMA uses), one query
  per call, on the first ``--peer-queries`` queries (it is slow at 10M).
* http: the real lookup API (``lookup_extension``) in a server process that
  loads the saved index, one query per ``GET /lookup/pdq/{hash}`` request,
  load from wrk (or bench/loadgen.py) in a third process.

Exactness: ours and threatexchange's answers on the sample are compared with
brute force's (every (hash, distance) within 31). Ratios are queries/s over
brute force's, measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from federation.platform.pdq_file import index_path  # noqa: E402
from federation.platform.pdq_index import DEFAULT_THRESHOLD as T, PdqIndex  # noqa: E402
from federation.store.db import connect  # noqa: E402
from federation.store.mirror import Mirror  # noqa: E402


class Clock:
    """Wall and process CPU time of a block: on a shared machine the CPU
    rate is what the engine costs, the wall rate what it got."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def rates(self, n: int) -> dict:
        return {"wall": n / self.wall, "cpu": n / self.cpu}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def corpus(n: int, nq: int, out: Path) -> None:
    rng = np.random.default_rng(1)
    values = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    near = values[rng.integers(0, n, nq // 2)].copy()
    bits = np.unpackbits(near, axis=1)
    for row in bits:
        row[rng.choice(256, int(rng.integers(0, T + 1)), replace=False)] ^= 1
    queries = np.concatenate([np.packbits(bits, axis=1), rng.integers(0, 256, (nq - nq // 2, 32), dtype=np.uint8)])
    order = rng.permutation(nq)  # near and random mixed, so the sample has both
    np.save(out / "values.npy", values)
    np.save(out / "queries.npy", queries[order])
    m = Mirror(out / "mirror.db")
    now = int(time.time())
    m.conn.execute("INSERT INTO follows (name, origin, vkeys, urls, compact, digest, version, fresh_time, max_age)"
                   " VALUES ('tid', 'bench/feeds/tid', '', '', x'', x'', 1, ?, 864000)", (now,))
    # Inserted in key order (memcmp order of the 32-byte values: the primary
    # key's), so each insert appends to the B-tree: random order spills
    # pages to the WAL over and over (>15 min at 10M on a busy machine).
    ordered = np.sort(values.view("S32").ravel())
    m.conn.execute("PRAGMA cache_size=-262144")  # 256 MiB
    m.conn.execute("BEGIN")
    for s in range(0, n, 1 << 18):
        m.conn.executemany("INSERT INTO hashes VALUES (1,'pdq',?,'c','csam',1,0)",
                           ((v.ljust(32, b"\0"),) for v in ordered[s:s + (1 << 18)].tolist()))
    m.conn.execute("COMMIT")
    m.close()


def as_sets(per_query) -> list[list]:
    return [sorted([v.hex() if isinstance(v, bytes) else v, int(d)] for v, d in q) for q in per_query]


def child_ours(d: Path, sample: int) -> dict:
    queries = [bytes(q) for q in np.load(d / "queries.npy")]
    conn = connect(d / "mirror.db", readonly=True)
    t0 = time.perf_counter()
    index = PdqIndex(conn, index_path(d / "mirror.db"))
    build = time.perf_counter() - t0
    rss_built = rss_mib()
    with Clock() as c1:
        single = [index.candidates([q], T)[0] for q in queries]
    batched = []
    with Clock() as c2:
        for s in range(0, len(queries), 1000):
            batched += index.candidates(queries[s:s + 1000], T)
    with Clock() as c3:
        for q in queries:
            index.search([q], T)
    per_call, per_batch, with_sql = c1.rates(len(queries)), c2.rates(len(queries)), c3.rates(len(queries))
    assert batched == single
    del index
    t0 = time.perf_counter()
    again = PdqIndex(conn, index_path(d / "mirror.db"))
    load = time.perf_counter() - t0
    return {"build_s": build, "load_s": load, "loaded_from_file": again.loaded_from_file,
            "rss_after_build_mib": rss_built,
            "per_call": per_call, "batched": per_batch, "with_sql": with_sql, "rss_mib": rss_mib(),
            "answers": as_sets(single[:sample])}


def child_brute(d: Path, sample: int) -> dict:
    words = np.load(d / "values.npy").view(np.uint64)  # (n, 4)
    values = words.view(np.uint8)
    queries = np.load(d / "queries.npy")[:sample].view(np.uint64)
    answers = []
    with Clock() as c:
        for q in queries:
            dist = np.bitwise_count(words[:, 0] ^ q[0])
            for w in range(1, 4):
                dist += np.bitwise_count(words[:, w] ^ q[w])
            hits = np.nonzero(dist <= T)[0]
            answers.append([(values[i].tobytes(), int(dist[i])) for i in hits])
    return {"per_call": c.rates(len(queries)), "rss_mib": rss_mib(), "answers": as_sets(answers)}


def child_threatexchange(d: Path, sample: int, nq: int) -> dict:
    import faiss
    from threatexchange.signal_type.pdq.pdq_index import PDQIndex
    # One OpenMP thread: one query per call has nothing to share out, and on a
    # busy machine idle-spinning threads only slow it down (faster for them).
    faiss.omp_set_num_threads(1)
    values = np.load(d / "values.npy")
    queries = [q.tobytes().hex() for q in np.load(d / "queries.npy")[:max(nq, sample)]]
    t0 = time.perf_counter()
    index = PDQIndex((v.tobytes().hex(), i) for i, v in enumerate(values))
    build = time.perf_counter() - t0
    with Clock() as c:
        found = [index.query(q) for q in queries]
    per_call = c.rates(len(queries))
    answers = [[(values[m.metadata].tobytes(), int(m.similarity_info.distance)) for m in ms] for ms in found[:sample]]
    return {"build_s": build, "per_call": per_call, "rss_mib": rss_mib(), "answers": as_sets(answers)}


def serve(db: str, port: int) -> None:
    from aiohttp import web
    from federation.net.server import create_app
    from federation.platform.lookup import lookup_extension
    web.run_app(create_app([], extensions=[lookup_extension(db)]), host="127.0.0.1", port=port, print=None,
                access_log=None)


def child_http(d: Path, seconds: float, conns: int) -> dict:
    import common
    from server import load
    common.WORK.mkdir(parents=True, exist_ok=True)
    port = common.free_port()
    t0 = time.perf_counter()
    proc = common.start_child([__file__, "--serve", str(d / "mirror.db"), str(port)], port, timeout=600)
    ready = time.perf_counter() - t0
    try:
        base = f"http://127.0.0.1:{port}/lookup/pdq/"
        # wrk passes the paths in one environment variable (at most 128 KiB): 1000 of them
        urls = [base + q.tobytes().hex() for q in np.load(d / "queries.npy")[:1000]]
        load(urls, conns, 1.0)  # warm-up
        cpu0 = server_cpu(proc.pid)
        r = load(urls, conns, seconds)
        r["server_cpu_s"] = server_cpu(proc.pid) - cpu0
        r["requests"] = r["rps"] * seconds if "requests" not in r else r["requests"]
        r["server_rss_mib"] = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    finally:
        common.stop(proc)
    return {**r, "server_ready_s": ready}


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(kind: str, d: Path, *extra: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(d), *extra], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--sample", type=int, default=100, help="queries checked against brute force")
    ap.add_argument("--http-seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--peer-queries", type=int, default=500, help="queries timed on threatexchange's index")
    ap.add_argument("--skip-threatexchange", action="store_true")
    ap.add_argument("--child", nargs="+")
    ap.add_argument("--serve", nargs=2)
    a = ap.parse_args()
    if a.serve:
        return serve(a.serve[0], int(a.serve[1]))
    if a.child:
        kind, d = a.child[0], Path(a.child[1])
        res = {"ours": lambda: child_ours(d, a.sample), "brute": lambda: child_brute(d, a.sample),
               "threatexchange": lambda: child_threatexchange(d, a.sample, a.peer_queries),
               "http": lambda: child_http(d, a.http_seconds, a.connections)}[kind]()
        print(json.dumps(res))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        corpus(a.n, a.queries, d)
        print(f"N={a.n:,} random PDQ hashes loaded into a mirror in {time.perf_counter() - t0:.0f} s; "
              f"{a.queries} queries (half within {T} of an indexed hash), threshold {T}", flush=True)
        common_args = ["--sample", str(a.sample)]
        ours = run_child("ours", d, *common_args)
        print(f"ours built in {ours['build_s']:.1f} s", flush=True)
        brute = run_child("brute", d, *common_args)
        theirs = None if a.skip_threatexchange else run_child("threatexchange", d, *common_args,
                                                              "--peer-queries", str(a.peer_queries))
        http = run_child("http", d, "--http-seconds", str(a.http_seconds), "--connections", str(a.connections))
    base = brute["per_call"]
    same = ours["answers"] == brute["answers"]
    found = sum(len(x) for x in brute["answers"])
    load1 = os.getloadavg()[0]
    print(f"\nN={a.n:,} threshold={T} queries={a.queries} (sample checked against brute force: {a.sample}, "
          f"{found} matches in it); load average {load1:.1f} on {os.cpu_count()} cores")
    print("queries/s by wall clock, and per CPU second of the process (what it costs on an idle core)")
    print(f"{'engine':47} {'wall q/s':>9} {'cpu q/s':>9} {'vs brute':>9} {'build s':>8} {'peak MiB':>9}")

    def row(name, r, build="", mib=None):
        print(f"{name:47} {r['wall']:>9,.0f} {r['cpu']:>9,.0f} {r['cpu'] / base['cpu']:>8.1f}x {build:>8} "
              f"{'' if mib is None else f'{mib:,.0f}':>9}")
    row("numpy brute-force scan, one query per call", base, "-", brute["rss_mib"])
    if theirs:
        row("threatexchange PDQIndex (faiss), one per call", theirs["per_call"], f"{theirs['build_s']:.1f}",
            theirs["rss_mib"])
    row("ours, one query per call", ours["per_call"], f"{ours['build_s']:.1f}", ours["rss_after_build_mib"])
    row("ours, batches of 1000", ours["batched"])
    row("ours, one per call with SQL provenance", ours["with_sql"])
    http_rates = {"wall": http["rps"], "cpu": http["requests"] / max(http["server_cpu_s"], 1e-9)}
    row(f"ours, HTTP GET, one per request ({http['tool']})", http_rates, "", http["server_rss_mib"])
    if theirs:
        print(f"ours vs threatexchange (per CPU second), one query per call: "
              f"{ours['per_call']['cpu'] / theirs['per_call']['cpu']:.1f}x; "
              f"batched: {ours['batched']['cpu'] / theirs['per_call']['cpu']:.1f}x")
    print(f"restart: the saved index loaded in {ours['load_s']:.1f} s (loaded from file: {ours['loaded_from_file']}); "
          f"HTTP server ready in {http['server_ready_s']:.1f} s; HTTP errors: {http['errors']}; "
          f"HTTP cpu q/s = requests per server CPU second ({a.connections} connections)")
    print(f"exact on the sample (ours == brute force): {same}")
    if theirs:
        got = sum(len(x) for x in theirs["answers"])
        same_theirs = theirs["answers"] == brute["answers"]
        print(f"threatexchange on the sample: {got}/{found} matches, identical: {same_theirs}")


if __name__ == "__main__":
    main()
