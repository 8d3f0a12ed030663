"""``mih.Table.contains`` (whether a value is in a table, for the video
lookup's check of the frames its index holds) agrees with an exact search
at distance 0, also where a chunk's bucket is crowded."""
from __future__ import annotations

import numpy as np

from federation.platform import mih


def test_contains_is_an_exact_search_at_distance_zero():
    rng = np.random.default_rng(11)
    values = rng.integers(0, 256, (5000, 32), dtype=np.uint8)
    values[:2000, :4] = 0          # 2,000 values sharing their first chunk: a crowded bucket
    values[2000:2100] = values[0]  # a value held many times
    table = mih.Table.build(values)
    near = values[rng.choice(len(values), 300, replace=False)].copy()
    near[::2, 31] ^= 1             # half of them one bit away: not held (unless another value is that one)
    queries = np.concatenate([values[rng.choice(len(values), 300)], near,
                              rng.integers(0, 256, (300, 32), dtype=np.uint8)])
    qn, _v, _d = table.search(queries, 0, method="scan")
    want = np.zeros(len(queries), dtype=bool)
    want[qn] = True
    got = table.contains(queries, block=128)
    assert got.tolist() == want.tolist()
    assert got[:300].all() and not got[-300:].any() and 0 < got[300:600].sum() < 300
    assert not mih.Table.build(values[:0]).contains(queries).any()
