"""Diff publish: a full list against a feed of N records, as a ratio of publishing the same delta directly.

    python bench/full_list_diff.py [N] [--changes K]      (default N = 1,000,000, K = 1% of N)

Setup (cached per N under ``$FEDERATION_BENCH_DIR``): a home whose feed
``bench`` holds N md5 records (10 per case), and the day's full export as a
threatexchange / HMA dataset CSV -- the same N records minus K withdrawn plus
K new ones -- and, for the baseline, the same delta (K adds, K withdrawals)
as an ordinary batch CSV.

Timed, each in a fresh copy of the publisher database and as its own
``federation`` process (what an operator runs):

* measured: ``federation publish bench --full-list export.csv`` -- read and
  check the whole file, sort it on disk, merge it with the active set, publish
  the 2K changes;
* baseline: ``federation publish bench delta.csv`` -- the same 2K changes.

Each child's peak RSS (``ru_maxrss``) shows the diff's memory does not grow
with N (run it with two sizes to see).
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FEDERATION = [sys.executable, "-m", "federation"]


def _run(home: Path, *args: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in MiB, stdout) of one ``federation`` child."""
    env = dict(os.environ, FEDERATION_HOME=str(home))
    t0 = time.perf_counter()
    proc = subprocess.Popen([*FEDERATION, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"federation {' '.join(args)} failed:\n{out}\n{err}")
    return dt, usage.ru_maxrss // 1024, out


def setup(n: int, k: int) -> Path:
    """The cached home, export and delta for (n, k)."""
    from federation.node.home import Home
    from federation.node.keys import load_signer
    from federation.store.publisher import Publisher
    base = common.WORK / f"fulllist-{n}-{k}"
    if (base / "done").exists():
        return base
    shutil.rmtree(base, ignore_errors=True)
    home = base / "home"
    subprocess.run([*FEDERATION, "feed", "create", common.NAME, "--origin", common.ORIGIN],
                   env=dict(os.environ, FEDERATION_HOME=str(home)), check=True, capture_output=True)
    h = Home(home)
    pub = Publisher(h.publisher_db)
    signer = load_signer(h.feed_key(common.NAME, pub.feed(common.NAME).key_file))
    t0 = time.perf_counter()
    rng = random.Random(7)
    gone = set(rng.sample(range(n), k))
    batch = 100_000
    with (base / "export.csv").open("w") as export:
        export.write("signal_type,signal_str,collab,category,tags\n")
        for start in range(0, n, batch):
            ops = common.synthetic_ops(min(batch, n - start), seed=start, start=start)
            pub.publish(common.NAME, ops, signer)
            for i, op in enumerate(ops, start):
                if i not in gone:
                    export.write(f"video_md5,{op.value.hex()},{op.case},POSITIVE_CLASS,csam\n")
            print(f"  setup: {min(start + batch, n):,}/{n:,} records ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
        new = common.synthetic_ops(k, seed=10**9, start=n)
        for op in new:
            export.write(f"video_md5,{op.value.hex()},{op.case},POSITIVE_CLASS,csam\n")
    pub.close()
    with (base / "delta.csv").open("w") as delta:
        delta.write("op,type,hash,case,labels,reason\n")
        for op in new:
            delta.write(f"add,md5,{op.value.hex()},{op.case},csam,\n")
        for start in range(0, n, batch):
            for i, op in enumerate(common.synthetic_ops(min(batch, n - start), seed=start, start=start), start):
                if i in gone:
                    delta.write(f"withdraw,md5,{op.value.hex()},{op.case},,other\n")
    (base / "done").write_text("ok\n")
    return base


def fresh_home(base: Path, name: str) -> Path:
    """A copy of the cached home: each timed run starts from the same N-record feed."""
    dst = common.WORK / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(base / "home", dst)
    return dst


def main(n: int = 1_000_000, k: int | None = None) -> dict:
    k = k if k is not None else max(1, n // 100)
    base = setup(n, k)
    direct_home = fresh_home(base, "fulllist-direct")
    t_direct, rss_direct, out_direct = _run(direct_home, "publish", common.NAME, str(base / "delta.csv"))
    diff_home = fresh_home(base, "fulllist-diff")
    t_diff, rss_diff, out_diff = _run(diff_home, "publish", common.NAME, "--full-list", str(base / "export.csv"),
                                      "--scratch-dir", str(common.WORK / "fulllist-scratch"))
    want = f"{k} adds, {k} withdrawals"
    if want not in out_diff or want not in out_direct:
        raise SystemExit(f"the two runs did not publish the same delta:\n{out_diff}\n{out_direct}")
    for p in (direct_home, diff_home):
        shutil.rmtree(p, ignore_errors=True)
    r = {"bench": "full_list_diff", "n": n, "changes": 2 * k, "diff_publish_s": round(t_diff, 2),
         "direct_publish_s": round(t_direct, 2), "ratio_to_direct": round(t_diff / t_direct, 1),
         "diff_records_per_s": round(n / t_diff), "diff_peak_rss_mib": rss_diff,
         "direct_peak_rss_mib": rss_direct}
    print(f"full list of {n:,} records against {n:,} active ({k:,} adds, {k:,} withdrawals): diff publish "
          f"{t_diff:.1f} s ({r['diff_records_per_s']:,} records/s, peak RSS {rss_diff} MiB); the same delta "
          f"published directly {t_direct:.1f} s (peak RSS {rss_direct} MiB); ratio {r['ratio_to_direct']}x")
    common.emit(r)
    return r


if __name__ == "__main__":
    args = sys.argv[1:]
    k = None
    if "--changes" in args:
        i = args.index("--changes")
        k = int(args[i + 1])
        del args[i:i + 2]
    main(int(args[0]) if args else 1_000_000, k)
