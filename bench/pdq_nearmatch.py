"""PDQ near-match at 1M hashes, threshold 31: the mirror's index vs a brute-force numpy scan.

Corpus: 2,000 real PDQ hashes of generated images (pdqhash) plus uniformly
random 256-bit hashes up to N (default 1,000,000), loaded into a real
mirror database and indexed by ``federation.pdq_index.PdqIndex`` (faiss
multi-index hashing). Queries: PDQ hashes of near-duplicates of 200 of the
indexed images (each must find its original) and 200 unrelated images.

Printed figures, all measured in this run on this machine:
* queries/s of the brute-force numpy scan (XOR + popcount over all N) = baseline
* queries/s of ``PdqIndex.candidates`` one query per call, all queries in
  one call (as ``POST /lookup`` does), and of ``PdqIndex.search`` one query
  per call (with the SQL confirmation and provenance), each as a ratio
  against the baseline
* that both return the same matches for every query.

Run: python bench/pdq_nearmatch.py [N]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image

from federation.store.mirror import Mirror
from federation.platform.pdq_index import DEFAULT_THRESHOLD, PdqIndex

REAL = 2000
QUERIES = 200


def image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(Image.fromarray(rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)).resize((256, 256), Image.BICUBIC))


def near(img: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.clip(img.astype(np.int16) + 8 + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(x[2:-2, 2:-2]).resize((192, 192), Image.BILINEAR))


def pdq(img: np.ndarray) -> bytes:
    bits, _ = pdqhash.compute(img)
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()  # first bit most significant


def main(n: int) -> None:
    t0 = time.perf_counter()
    real = [pdq(image(i)) for i in range(REAL)]
    queries = [pdq(near(image(i), i)) for i in range(QUERIES)] + [pdq(image(10**6 + i)) for i in range(QUERIES)]
    rng = np.random.default_rng(1)
    filler = rng.integers(0, 256, (n - REAL, 32), dtype=np.uint8)
    print(f"hashed {REAL + 2 * QUERIES} images in {time.perf_counter() - t0:.1f}s")

    with tempfile.TemporaryDirectory() as tmp:
        m = Mirror(Path(tmp) / "mirror.db")
        m.conn.execute("INSERT INTO follows (name, origin, vkeys, urls, compact, digest)"
                       " VALUES ('tid','bench/feeds/tid','','',x'',x'')")
        t0 = time.perf_counter()
        m.conn.execute("BEGIN")
        m.conn.executemany("INSERT OR IGNORE INTO hashes VALUES (1,'pdq',?,?,'csam',1,0)",
                           ((v, f"c{i}") for i, v in enumerate(real + [r.tobytes() for r in filler])))
        m.conn.execute("COMMIT")
        print(f"loaded {n} PDQ rows into the mirror in {time.perf_counter() - t0:.1f}s")
        t0 = time.perf_counter()
        index = PdqIndex(m.conn)
        print(f"built the index of {len(index)} hashes in {time.perf_counter() - t0:.1f}s")

        data = np.frombuffer(b"".join(index._values), dtype=np.uint8).reshape(-1, 32)
        words = data.view(np.uint64)
        qwords = np.frombuffer(b"".join(queries), dtype=np.uint8).reshape(-1, 32).view(np.uint64)

        t0 = time.perf_counter()
        brute = []
        for q in qwords:
            d = np.bitwise_count(words ^ q).sum(axis=1, dtype=np.uint16)
            hits = np.nonzero(d <= DEFAULT_THRESHOLD)[0]
            brute.append({(data[i].tobytes(), int(d[i])) for i in hits})
        base = len(queries) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        cands = [index.candidates([q], DEFAULT_THRESHOLD)[0] for q in queries]
        mih = len(queries) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        batched = index.candidates(queries, DEFAULT_THRESHOLD)  # one call, as POST /lookup does
        mih_batch = len(queries) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        full = [index.search([q], DEFAULT_THRESHOLD)[0] for q in queries]
        mih_sql = len(queries) / (time.perf_counter() - t0)

        same = all(set(c) == b for c, b in zip(cands, brute)) and all(
            set(c) == b for c, b in zip(batched, brute))
        found = sum(1 for i in range(QUERIES) if any(x.value == real[i] for x in full[i]))
        false = sum(1 for r in full[QUERIES:] if r)
        m.close()
    print(f"N={n} threshold={DEFAULT_THRESHOLD} queries={len(queries)}")
    print(f"brute-force numpy scan (baseline): {base:9.1f} queries/s  1.00x")
    print(f"PdqIndex.candidates (faiss MIH):   {mih:9.1f} queries/s  {mih / base:.1f}x")
    print(f"PdqIndex.candidates, one batch:    {mih_batch:9.1f} queries/s  {mih_batch / base:.1f}x")
    print(f"PdqIndex.search (+SQL provenance): {mih_sql:9.1f} queries/s  {mih_sql / base:.1f}x")
    print(f"same matches as brute force: {same}; near-duplicates found: {found}/{QUERIES}; "
          f"unrelated queries with a match: {false}/{QUERIES}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
