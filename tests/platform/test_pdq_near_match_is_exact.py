"""Multi-index hashing (platform.mih) finds exactly what a brute-force scan finds.

Random values plus planted neighbours at every distance around the
threshold, searched by probing (with and without folded buckets) and by
scanning, against a bit-by-bit reference that shares no code with mih.
"""
from __future__ import annotations

import numpy as np
import pytest

from federation.platform import mih


def reference(values: np.ndarray, queries: np.ndarray, t: int) -> set[tuple[int, int, int]]:
    out = set()
    for i, q in enumerate(queries):
        d = np.unpackbits(values ^ q, axis=1).sum(axis=1)
        out |= {(i, int(v), int(d[v])) for v in np.nonzero(d <= t)[0]}
    return out


def planted(n: int, centers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random values and, around ``centers`` of them, one neighbour at each distance 0..40."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    queries = values[rng.choice(n, centers, replace=False)].copy()
    near = []
    for q in queries:
        for d in range(0, 41):
            bits = np.unpackbits(q)
            bits[rng.choice(256, d, replace=False)] ^= 1
            near.append(np.packbits(bits))
    return np.concatenate([values, np.array(near, dtype=np.uint8)]), queries


@pytest.mark.parametrize("bucket_bits", [None, 12, 24])
@pytest.mark.parametrize("method", ["probe", "scan"])
def test_every_value_within_the_threshold_is_found_and_nothing_else(bucket_bits, method):
    values, queries = planted(20_000, 12, seed=bucket_bits or 1)
    table = mih.Table.build(values, bucket_bits)
    for t in (0, 1, 10, 11, 21, 30, 31, 32):
        qn, vn, dist = table.search(queries, t, method=method)
        got = set(zip(qn.tolist(), vn.tolist(), dist.tolist()))
        assert len(got) == len(qn)  # each pair once
        assert got == reference(values, queries, t), (t, method, bucket_bits)


def test_radii_cover_every_split_of_the_threshold():
    """Pigeonhole: for every threshold, a distance split over the chunks that
    exceeds every chunk's radius sums to more than the threshold."""
    for t in range(0, 64):
        r = mih.radii(t)
        assert sum(x + 1 for x in r) == t + 1


def test_random_queries_far_from_everything_find_nothing_and_scan_agrees():
    rng = np.random.default_rng(9)
    values = rng.integers(0, 256, (5_000, 32), dtype=np.uint8)
    queries = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    table = mih.Table.build(values)
    for method in ("probe", "scan"):
        qn, vn, dist = table.search(queries, 31, method=method)
        assert set(zip(qn.tolist(), vn.tolist(), dist.tolist())) == reference(values, queries, 31)
        assert len(qn) == 0


def test_a_partial_value_is_refused():
    with pytest.raises(mih.InputError):
        mih.as_values(b"\0" * 33)
