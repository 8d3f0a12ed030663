"""What the shared PDQ index holds: image PDQ hashes and the frames of videos.

The PDQ index (``pdq_index.PdqIndex``) indexes 256-bit values; both image
``pdq`` records and the frames of ``vpdq`` records (core/vpdq.py) go into
the one index, so a video lookup searches its frames with the same
structure, in the same pass over the mirror's changes, as an image lookup.
An image lookup confirms each candidate against the active ``pdq`` rows, a
video lookup against the active ``vpdq`` rows (``video_index``), so a frame
value never passes for an image record, nor the reverse.

Both functions read inside the caller's read transaction (the index reads
``changes_head`` and these in one WAL snapshot).
"""
from __future__ import annotations

import sqlite3

from federation.core.errors import MalformedError
from federation.core.vpdq import decode_segment
from federation.store.mirror import active_value_batches, change_values

VIDEO = "vpdq"


def frame_pdqs(segment: bytes) -> list[bytes]:
    """The PDQ hashes of a stored segment's frames (a mirror only holds
    segments it verified; one that does not decode contributes none)."""
    try:
        return [f.pdq for f in decode_segment(segment).frames]
    except MalformedError:
        return []


def index_value_batches(conn: sqlite3.Connection, size: int):
    """What the index holds, in lists of at most ``size`` values: active image
    PDQs, then the frames of active videos. A value may come twice (an image
    that is also a frame, a frame of two videos): the index answers each
    value once and confirms every candidate against the active rows."""
    yield from active_value_batches(conn, "pdq", size)
    for segments in active_value_batches(conn, VIDEO, max(1, size // 80)):
        yield [pdq for segment in segments for pdq in frame_pdqs(segment)]


def index_changes(conn: sqlite3.Connection, after: int, upto: int) -> list[tuple[int, str, bytes]]:
    """(seq, action, value) of the changes to what the index holds, in order:
    a video's change is one change per frame, at the video's sequence number."""
    rows = change_values(conn, "pdq", after, upto)
    video_rows = change_values(conn, VIDEO, after, upto)
    if not video_rows:
        return rows
    out = list(rows)
    for seq, action, segment in video_rows:
        out.extend((seq, action, pdq) for pdq in frame_pdqs(segment))
    out.sort(key=lambda r: r[0])
    return out
