"""Near-match index of the mirror's PDQ hashes, kept in step with the ``changes`` table.

PDQ near-match: two 256-bit PDQ hashes match when their Hamming distance is
at most a threshold (31 is the PDQ standard). The index is faiss's
multi-index hashing (``IndexBinaryMultiHash``): the 256 bits are cut into
16 chunks of 16 bits; by pigeonhole, a hash within distance ``t`` of the
query agrees with it on some chunk up to ``t // 16`` flipped bits, so probing
each chunk's buckets with ``nflip = t // 16`` finds *every* hash within
``t`` (no false negatives), and faiss then checks the full distance.

Invariants:

* The index holds a superset of the active PDQ values: every value added
  by an applied version up to ``cursor`` (a ``changes.seq``), minus those
  dropped at the last rebuild. Withdrawals are not removed from faiss
  (it cannot delete from a multi-hash index); instead every candidate is
  confirmed against the ``hashes`` table in the same read that returns its
  provenance, so an answer never names a withdrawn hash. When too many
  values are dead the index is rebuilt from the active rows.
* A feed whose new version left no change rows (a snapshot bootstrap
  writes none) triggers a rebuild, so bootstrapped rows are indexed too.
* ``refresh`` reads ``changes`` with ``seq > cursor``. The mirror writes a
  version's changes and its head in one transaction, and SQLite has one
  writer, so sequence numbers become visible in order: a cursor never
  skips a change.
"""
from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass

import faiss
import numpy as np

from federation.store.activeset import split_labels
from federation.store.mirror import changes_head, follow_ids, follow_versions, has_changes, lookup_rows
from federation.platform.frames import index_changes, index_values
from federation.core.errors import InputError

PDQ_BITS = 256
PDQ_BYTES = 32
DEFAULT_THRESHOLD = 31  # the PDQ standard's threshold for a confident match
MAX_THRESHOLD = 63      # beyond this nflip=3 probes get slow and matches meaningless
CHUNKS = 16             # 16 chunks x 16 bits
REBUILD_DEAD_FRACTION = 0.25


@dataclass(frozen=True)
class NearMatch:
    """One active record whose PDQ hash is within the threshold of a query."""

    feed: str
    value: bytes
    distance: int
    case: str
    labels: tuple[str, ...]
    added_version: int


def check_threshold(threshold: int) -> int:
    if type(threshold) is not int or not 0 <= threshold <= MAX_THRESHOLD:
        raise InputError(f"PDQ threshold {threshold!r} must be an integer 0..{MAX_THRESHOLD}")
    return threshold


def hamming(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


class PdqIndex:
    """Multi-index-hashing index over one mirror database's PDQ values.

    Thread-safe: ``refresh`` and ``search`` take one lock, because faiss
    indexes are not safe to add to while searching.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.cursor = 0
        self._lock = threading.Lock()
        self._values: list[bytes] = []      # faiss id -> value
        self._ids: dict[bytes, int] = {}    # value -> faiss id
        self._withdrawn_since_build = 0
        self._versions: dict[int, int] = {}  # feed id -> version seen at the last read
        self._index = self._new_index()
        self.rebuild()

    @staticmethod
    def _new_index() -> faiss.IndexBinaryMultiHash:
        return faiss.IndexBinaryMultiHash(PDQ_BITS, CHUNKS, PDQ_BITS // CHUNKS)

    def __len__(self) -> int:
        return len(self._values)

    # ---- keeping in step with the mirror ---------------------------------------

    def rebuild(self) -> None:
        """Load every active PDQ value and the cursor from one snapshot."""
        self.conn.execute("BEGIN")  # a read transaction: one WAL snapshot for both reads
        try:
            cursor = changes_head(self.conn)
            values = index_values(self.conn)  # image PDQs and video frames (frames.py)
            self._versions = follow_versions(self.conn)
        finally:
            self.conn.execute("COMMIT")
        index = self._new_index()
        if values:
            index.add(np.frombuffer(b"".join(values), dtype=np.uint8).reshape(-1, PDQ_BYTES))
        with self._lock:
            self._index = index
            self._values = values
            self._ids = {v: i for i, v in enumerate(values)}
            self.cursor = cursor
            self._withdrawn_since_build = 0

    def _versions_without_changes(self) -> bool:
        """True if a feed reached a new version that left no change rows.

        That is how a snapshot bootstrap looks (rare otherwise: a version of
        only duplicate adds); either way a rebuild is correct.
        """
        versions = follow_versions(self.conn)
        jumped = False
        for fid, v in versions.items():
            if v > self._versions.get(fid, 0) and not has_changes(self.conn, fid, v):
                jumped = True
        self._versions = versions
        return jumped

    def refresh(self) -> int:
        """Apply changes after the cursor; returns how many PDQ values were added."""
        self.conn.execute("BEGIN")  # one snapshot: rows up to ``top`` are all there is up to ``top``
        try:
            top = changes_head(self.conn)
            rows = index_changes(self.conn, self.cursor, top)
            jumped = self._versions_without_changes()
        finally:
            self.conn.execute("COMMIT")
        if jumped:
            # A snapshot bootstrap loads rows without change rows (bootstrap.py):
            # the cursor cannot see them, so reload from the active rows.
            self.rebuild()
            return 0
        new: list[bytes] = []
        withdrawn = 0
        seen: set[bytes] = set()
        for seq, action, value in rows:
            if action == "withdraw":
                withdrawn += 1
            elif value not in self._ids and value not in seen:
                seen.add(value)
                new.append(value)
        with self._lock:
            if new:
                self._index.add(np.frombuffer(b"".join(new), dtype=np.uint8).reshape(-1, PDQ_BYTES))
                for v in new:
                    self._ids[v] = len(self._values)
                    self._values.append(v)
            self.cursor = max(self.cursor, top)
            self._withdrawn_since_build += withdrawn
        if self._values and self._withdrawn_since_build > REBUILD_DEAD_FRACTION * len(self._values):
            self.rebuild()
        return len(new)

    # ---- queries ---------------------------------------------------------------

    def candidates(self, queries: list[bytes], threshold: int) -> list[list[tuple[bytes, int]]]:
        """For each query, (value, distance) of indexed values within ``threshold``.

        Includes values that may since have been withdrawn; ``search``
        confirms them against the active rows.
        """
        check_threshold(threshold)
        for q in queries:
            if len(q) != PDQ_BYTES:
                raise InputError(f"PDQ hash is {len(q)} bytes, want {PDQ_BYTES}")
        if not queries:
            return []
        xq = np.frombuffer(b"".join(queries), dtype=np.uint8).reshape(-1, PDQ_BYTES)
        with self._lock:
            if not self._values:
                return [[] for _ in queries]
            self._index.nflip = threshold // (PDQ_BITS // CHUNKS)
            # faiss range_search returns distances strictly below the radius.
            lims, dist, ids = self._index.range_search(xq, threshold + 1)
            values = self._values
            return [[(values[ids[j]], int(dist[j])) for j in range(lims[i], lims[i + 1])]
                    for i in range(len(queries))]

    def search(self, queries: list[bytes], threshold: int = DEFAULT_THRESHOLD) -> list[list[NearMatch]]:
        """Near matches of each query among active records, nearest first."""
        found = self.candidates(queries, threshold)
        feeds = follow_ids(self.conn)
        out: list[list[NearMatch]] = []
        for cands in found:
            matches: list[NearMatch] = []
            for value, d in cands:
                for feed, case, labels, ver in lookup_rows(self.conn, "pdq", value, feeds):
                    matches.append(NearMatch(feed, value, d, case, split_labels(labels), ver))
            matches.sort(key=lambda m: (m.distance, m.feed, m.case, m.value))
            out.append(matches)
        return out
