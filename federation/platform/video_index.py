"""Video (vPDQ) matching against a mirror, through the shared PDQ index.

A query video's usable frames (deduplicated, quality >= 50) are searched
in the shared PDQ index (``pdq_index.PdqIndex.candidates``, which holds
video frames next to image PDQs: ``frames.py``). Each frame found names
the segments that hold it (this module's map), each segment its video;
each candidate video is then reassembled from its *active* segments
(``lookup_rows``, per feed and case) and compared with the query by vPDQ's
algorithm: it matches when the share of query frames within the distance
of one of its frames reaches the query percentage, and the share of its
frames near a query frame reaches the target percentage.

The comparison costs the index's candidates, not query x target frames
(``_percents``): the index returns, for each query frame, *every* indexed
value within the distance, so a query frame is near a video iff one of its
candidates is a frame of that video, and a frame of the video is near the
query iff it is a candidate of some query frame. A video's frame the index
does not hold (the index read the mirror a version before the map did) is
compared pair by pair (``core.vpdq.match_hits``), so the numbers stay exact.

Invariants:

* The map is a superset of the active segments (withdrawals are not
  removed from it; it is rebuilt when a quarter is dead, and after a
  version that left no change rows, as a snapshot bootstrap does). Every
  answer is confirmed against the active rows in the same read, so a
  withdrawn video -- any of its segments withdrawn -- never matches: a
  video matches only whole (``core.vpdq.reassemble``).
* The percentages are computed over the whole reassembled video (its
  usable frames), so they are vPDQ's exact brute-force numbers
  (python-threatexchange ``match_VPDQ_hash_brute``), from the candidates.
"""
from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from federation.core import vpdq as V
from federation.core.errors import InputError, MalformedError
from federation.platform.frames import VIDEO
from federation.platform.pdq_index import PdqIndex, check_threshold
from federation.store.activeset import split_labels
from federation.store.mirror import active_values, change_values, changes_head, follow_ids, follow_versions, \
    has_changes, lookup_rows

REBUILD_DEAD_FRACTION = 0.25


@dataclass(frozen=True)
class VideoQuery:
    frames: tuple[V.Frame, ...]
    distance: int = V.DISTANCE_THRESHOLD
    quality: int = V.QUALITY_THRESHOLD
    query_percent: float = V.QUERY_MATCH_PERCENT
    target_percent: float = V.TARGET_MATCH_PERCENT


def _percent(value, what: str) -> float:
    if type(value) not in (int, float) or not 0 <= value <= 100:
        raise InputError(f"{what} must be a number 0..100")
    return float(value)


def video_query(text: str, distance=None, quality=None, query_percent=None, target_percent=None) -> VideoQuery:
    """A vpdq lookup query from its text and optional thresholds; ``InputError``."""
    frames = tuple(V.parse_frames(text, V.MAX_QUERY_FRAMES))
    if quality is not None and (type(quality) is not int or not 0 <= quality <= 100):
        raise InputError("quality must be an integer 0..100")
    return VideoQuery(frames,
                      V.DISTANCE_THRESHOLD if distance is None else check_threshold(distance),
                      V.QUALITY_THRESHOLD if quality is None else quality,
                      V.QUERY_MATCH_PERCENT if query_percent is None else _percent(query_percent, "query_percent"),
                      V.TARGET_MATCH_PERCENT if target_percent is None else _percent(target_percent,
                                                                                     "target_percent"))


@dataclass(frozen=True)
class VideoMatch:
    feed: str
    case: str
    video: bytes
    labels: tuple[str, ...]
    added_version: int
    frames: int
    query_percent: float
    target_percent: float


class VideoIndex:
    """Segments by frame and by video, kept in step with the mirror's ``changes``."""

    def __init__(self, conn: sqlite3.Connection, frames: PdqIndex):
        self.conn = conn
        self.frames = frames
        self._lock = threading.Lock()
        self.cursor = 0
        self._by_frame: dict[bytes, set[bytes]] = {}
        self._by_video: dict[bytes, set[bytes]] = {}
        self._versions: dict[int, int] = {}
        self._segments = 0
        self._withdrawn = 0
        self.rebuild()

    def _add(self, segment: bytes) -> None:
        try:
            seg = V.decode_segment(segment)
        except MalformedError:  # the mirror verified it; a row that does not decode never matches
            return
        members = self._by_video.setdefault(seg.video, set())
        if segment in members:
            return
        members.add(segment)
        self._segments += 1
        for f in seg.frames:
            self._by_frame.setdefault(f.pdq, set()).add(segment)

    def rebuild(self) -> None:
        self.conn.execute("BEGIN")  # one snapshot for the cursor and the rows
        try:
            cursor = changes_head(self.conn)
            segments = active_values(self.conn, VIDEO)
            versions = follow_versions(self.conn)
        finally:
            self.conn.execute("COMMIT")
        with self._lock:
            self._by_frame, self._by_video, self._segments, self._withdrawn = {}, {}, 0, 0
            for s in segments:
                self._add(s)
            self.cursor, self._versions = cursor, versions

    def refresh(self) -> None:
        """Apply the video changes after the cursor. The caller refreshes the
        frame index too; whichever is ahead, a video is found only once both
        hold it (a frame without its segment, or the reverse, finds nothing)."""
        self.conn.execute("BEGIN")
        try:
            top = changes_head(self.conn)
            rows = change_values(self.conn, VIDEO, self.cursor, top)
            versions = follow_versions(self.conn)
            jumped = any(v > self._versions.get(fid, 0) and not has_changes(self.conn, fid, v)
                         for fid, v in versions.items())
        finally:
            self.conn.execute("COMMIT")
        if jumped:  # a snapshot bootstrap wrote rows without change rows
            self.rebuild()
            return
        with self._lock:
            for _seq, action, segment in rows:
                if action == "withdraw":
                    self._withdrawn += 1
                else:
                    self._add(segment)
            self.cursor, self._versions = max(self.cursor, top), versions
            dead = self._withdrawn > REBUILD_DEAD_FRACTION * max(self._segments, 1)
        if dead:
            self.rebuild()

    def search(self, q: VideoQuery, feeds: dict[int, str] | None = None) -> list[VideoMatch]:
        """Videos matching ``q`` among active records, best first (call ``refresh`` first)."""
        query = V.usable(q.frames, q.quality)
        if not query:
            return []
        found = self.frames.candidates(query, q.distance)
        near = [frozenset(value for value, _d in cands) for cands in found]
        reached = frozenset().union(*near)
        with self._lock:
            videos = {s[:V.VIDEO_ID_BYTES] for value in reached for s in self._by_frame.get(value, ())}
            members = {vid: sorted(self._by_video.get(vid, ())) for vid in videos}
        feeds = follow_ids(self.conn) if feeds is None else feeds
        out: list[VideoMatch] = []
        for vid in sorted(videos):
            groups: dict[tuple[str, str], list] = defaultdict(list)
            for segment in members[vid]:
                for feed, case, labels, version in lookup_rows(self.conn, VIDEO, segment, feeds):
                    groups[(feed, case)].append((segment, labels, version))
            for (feed, case), rows in sorted(groups.items()):
                frames = V.reassemble([V.decode_segment(s) for s, _l, _v in rows])
                if frames is None:  # a part withdrawn (or never added): the video is not whole
                    continue
                target = V.usable(frames, q.quality)
                qp, tp = self._percents(query, near, reached, target, q.distance)
                if qp >= q.query_percent and tp >= q.target_percent and qp > 0:
                    labels = tuple(sorted({x for _s, lab, _v in rows for x in split_labels(lab)}))
                    out.append(VideoMatch(feed, case, vid, labels, max(v for _s, _l, v in rows), len(frames),
                                          round(qp, 3), round(tp, 3)))
        out.sort(key=lambda m: (-m.query_percent, -m.target_percent, m.feed, m.case, m.video))
        return out

    def _percents(self, query: list[bytes], near: list[frozenset], reached: frozenset, target: list[bytes],
                  distance: int) -> tuple[float, float]:
        """vPDQ's (query %, target %) of usable frame lists, from ``near`` (each
        query frame's candidates within ``distance``) and ``reached`` (their
        union): O(candidates + target frames), never query x target."""
        if not query or not target:
            return 0.0, 0.0
        frames = set(target)
        q_hit = np.fromiter((not n.isdisjoint(frames) for n in near), dtype=bool, count=len(near))
        t_hit = np.fromiter((t in reached for t in target), dtype=bool, count=len(target))
        # A frame no query frame reached is far from all of them -- if the index
        # holds it (it was searched). One it does not hold is compared directly.
        rest = np.flatnonzero(~t_hit)
        if len(rest):
            held = self.frames.holds([target[i] for i in rest])
            unheld = [int(i) for i, h in zip(rest, held) if not h]
            if unheld:
                qh, th = V.match_hits(query, [target[i] for i in unheld], distance)
                q_hit |= qh
                t_hit[unheld] = th
        return V.percents(q_hit, t_hit)
