"""Review (issue 17, promise 5): a vPDQ lookup's time is bounded.

``video_index.search`` compares the query with every candidate video by
``core.vpdq.match_percents``: all query frames x all target frames, in the
request handler (on the event loop: ``lookup.get_lookup``/``post_lookup``
call ``Lookup.answer`` directly). A query of MAX_QUERY_FRAMES (4,096) frames
against a stored video of 20,000 frames takes ~5 s on this machine; against
one of MAX_VIDEO_FRAMES (81,920), ~21 s -- per candidate video, and one
shared frame makes a video a candidate. Any caller (or an upstream that
publishes long videos sharing common frames) stalls the node."""
from __future__ import annotations

import time

import numpy as np
import pytest

from federation.core import vpdq as V
from federation.platform.lookup import Lookup, parse_query
from federation.store.mirror import Mirror


def _frames(rng, n):
    return [V.Frame(i, 100, rng.integers(0, 256, 32, dtype=np.uint8).tobytes(), i * 1000) for i in range(n)]


@pytest.mark.xfail(strict=True, reason="review: vPDQ lookup is O(query frames x target frames) per video, unbounded")
def test_a_long_video_query_against_a_long_video_answers_within_two_seconds(tmp_path):
    rng = np.random.default_rng(3)
    stored = _frames(rng, 250 * V.SEGMENT_FRAMES)  # 20,000 frames: a 5.5-hour video at vPDQ's 1 frame/s
    db = tmp_path / "mirror.db"
    m = Mirror(db)
    c = m.conn
    c.execute("INSERT INTO follows (name, origin, vkeys, urls, compact, digest) VALUES ('f', 'o', '', '', x'', x'')")
    c.execute("BEGIN")
    for seg in V.segments(stored):
        c.execute("INSERT INTO hashes VALUES (1,'vpdq',?,'c','csam',1,0)", (seg,))
        c.execute("INSERT INTO changes (feed, version, action, hash_type, value, case_id, labels, time)"
                  " VALUES (1, 1, 'add', 'vpdq', ?, 'c', 'csam', 0)", (seg,))
    c.execute("UPDATE follows SET version=1, digest=x'01'")
    c.execute("COMMIT")
    query = stored[:1] + _frames(np.random.default_rng(4), V.MAX_QUERY_FRAMES)[1:]  # one shared frame
    q = parse_query({"type": "vpdq", "hash": V.format_frames(query)})
    lk = Lookup(db)
    try:
        start = time.monotonic()
        [item] = lk.answer([q])
        took = time.monotonic() - start
    finally:
        lk.close()
    assert item["matched"] is False  # 1 of 4,096 frames: not a match at 80 %
    assert took < 2.0, f"one vPDQ lookup took {took:.1f} s"
