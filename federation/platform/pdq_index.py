"""Near-match index of the mirror's PDQ hashes, kept in step with the ``changes`` table.

PDQ near-match: two 256-bit PDQ hashes match when their Hamming distance is
at most a threshold (31 is the PDQ standard). The index is exact
multi-index hashing in numpy (``platform.mih``: 11 chunks, every hash within
the threshold is found and its full distance checked), chosen from the
measurements in bench/README.md over faiss's multi-hash and a brute-force scan.

Layout: a ``main`` table built from every active value, a ``recent`` table
rebuilt from the values added since (small, so cheap to rebuild), and a
``tail`` of the newest additions scanned directly. Adding a change costs an
append; the tail is folded into ``recent`` past ``TAIL_MAX`` values; a
full rebuild happens only when ``recent`` grows past a fraction of ``main``
or too many indexed values were withdrawn.

Invariants:

* The index holds a superset of the active PDQ values: every value added
  by an applied version up to ``cursor`` (a ``changes.seq``), minus those
  dropped at the last rebuild. Withdrawals are not removed from the tables
  (they are immutable); every candidate is confirmed against the ``hashes``
  table in the same read that returns its provenance, so an answer never
  names a withdrawn hash. A value added again after its withdrawal may be
  indexed twice; ``candidates`` reports it once.
* A feed whose new version left no change rows (a snapshot bootstrap
  writes none) triggers a rebuild, so bootstrapped rows are indexed too.
* ``refresh`` reads ``changes`` with ``seq > cursor``. The mirror writes a
  version's changes and its head in one transaction, and SQLite has one
  writer, so sequence numbers become visible in order: a cursor never
  skips a change.
* With a ``path``, ``main`` is saved there after each full rebuild
  (``pdq_file``) with the mirror state it was built from, and loaded at
  start only if the file is intact *and* that state is in this mirror's
  history: the change row at its cursor has the same fingerprint (sequence
  numbers are never reused, and a pruned row fails the check), and every
  feed it knew is still followed with the same origin, at the same digest if
  at the same version. Otherwise the file is rebuilt, never trusted.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from federation.core.errors import FederationError, InputError
from federation.platform import mih, pdq_file
from federation.store.activeset import split_labels
from federation.store.mirror import change_fingerprint, changes_head, first_change_seq, follow_ids, follow_states, \
    follow_versions, has_changes, lookup_rows
from federation.platform.frames import index_changes, index_value_batches

log = logging.getLogger("federation.platform.pdq_index")

PDQ_BITS = 256
PDQ_BYTES = 32
DEFAULT_THRESHOLD = 31  # the PDQ standard's threshold for a confident match
MAX_THRESHOLD = 63      # beyond this matches are meaningless (and a scan beats probing)
REBUILD_DEAD_FRACTION = 0.25
TAIL_MAX = 4096          # newest values scanned directly: 4096 x 32 B per query is ~10 us
RECENT_FRACTION = 0.125  # ``recent`` past this fraction of ``main`` (and RECENT_MIN): full rebuild
RECENT_MIN = 1 << 16
LOAD_BATCH = 1 << 16     # values read from SQLite per batch at a rebuild


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
    """Exact near-match index over one mirror database's PDQ values.

    ``path``: where the built index is kept between restarts (see the module
    docstring); None keeps it in memory only. ``save=False`` only reads a
    file there (a one-shot command must not write 1 GB). Thread-safe: ``refresh`` and
    the searches take one lock around the swap of the tables.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path | str | None = None, save: bool = True):
        self.conn = conn
        self.path = Path(path) if path is not None else None
        self.save = save
        self.cursor = 0
        self._lock = threading.Lock()
        self._main = mih.Table.build(_EMPTY)
        self._recent = mih.Table.build(_EMPTY)
        self._tail = _EMPTY
        self._withdrawn_since_build = 0
        self._versions: dict[int, int] = {}  # feed id -> version seen at the last read
        self.loaded_from_file = False
        if not self._load():
            self.rebuild()

    def __len__(self) -> int:
        """Values indexed (withdrawn ones not yet dropped by a rebuild included)."""
        return len(self._main) + len(self._recent) + len(self._tail)

    def values(self) -> np.ndarray:
        """Every indexed value, as an (n, 32) uint8 array (for checks and benchmarks)."""
        return np.concatenate([self._main.values, self._recent.values, self._tail])

    # ---- keeping in step with the mirror ---------------------------------------

    def rebuild(self) -> None:
        """Index every active PDQ value as of one snapshot, and save it (with ``path``)."""
        self.conn.execute("BEGIN")  # a read transaction: one WAL snapshot for every read
        try:
            basis = _basis(self.conn)
            self._versions = follow_versions(self.conn)
            values = _pack(index_value_batches(self.conn, LOAD_BATCH))  # image PDQs and video frames (frames.py)
        finally:
            self.conn.execute("COMMIT")
        main = mih.Table.build(values)
        with self._lock:
            self._main, self._recent, self._tail = main, mih.Table.build(_EMPTY), _EMPTY
            self.cursor = basis.cursor
            self._withdrawn_since_build = 0
        if self.path is not None and self.save:
            try:
                pdq_file.write(self.path, main, basis)
            except FederationError as e:  # the index still works; the next start rebuilds
                log.warning("%s", e)

    def _load(self) -> bool:
        """Use the saved index if it is intact and built from this mirror's history."""
        if self.path is None or not self.path.exists():
            return False
        try:
            main, basis = pdq_file.read(self.path)
        except FederationError as e:
            log.warning("rebuilding the PDQ index: %s", e)
            return False
        self.conn.execute("BEGIN")
        try:
            why = _mismatch(self.conn, basis)
        finally:
            self.conn.execute("COMMIT")
        if why:
            log.warning("rebuilding the PDQ index: %s was built from another mirror state (%s)", self.path, why)
            return False
        with self._lock:
            self._main, self.cursor = main, basis.cursor
        self._versions = {i: v for i, (_, v, _) in basis.feeds.items()}
        self.loaded_from_file = True
        self.refresh()  # the changes applied since it was saved
        return True

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
        # The usual case, every lookup: nothing new. Two reads, no transaction:
        # a version committed between them changes one of the two, and the
        # full path below runs on one snapshot.
        if changes_head(self.conn) == self.cursor and follow_versions(self.conn) == self._versions:
            return 0
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
        new = list(dict.fromkeys(v for _, action, v in rows if action == "add"))
        withdrawn = sum(1 for _, action, _ in rows if action == "withdraw")
        with self._lock:
            if new:
                tail = np.concatenate([self._tail, _pack([new])])
                if len(tail) > TAIL_MAX:  # fold the tail into ``recent``: a rebuild of a small table
                    self._recent = mih.Table.build(np.concatenate([self._recent.values, tail]))
                    tail = _EMPTY
                self._tail = tail
            self.cursor = max(self.cursor, top)
            self._withdrawn_since_build += withdrawn
            total = len(self)
            full = (len(self._recent) > max(RECENT_MIN, RECENT_FRACTION * len(self._main))
                    or (total and self._withdrawn_since_build > REBUILD_DEAD_FRACTION * total))
        if full:
            self.rebuild()
        return len(new)

    # ---- queries ---------------------------------------------------------------

    def candidates(self, queries: list[bytes], threshold: int) -> list[list[tuple[bytes, int]]]:
        """For each query, (value, distance) of indexed values within ``threshold``,
        each value once, nearest first (then by value).

        Includes values that may since have been withdrawn; ``search``
        confirms them against the active rows.
        """
        check_threshold(threshold)
        for q in queries:
            if not isinstance(q, bytes) or len(q) != PDQ_BYTES:
                raise InputError(f"PDQ hash is {len(q)} bytes, want {PDQ_BYTES}")
        if not queries:
            return []
        xq = np.frombuffer(b"".join(queries), dtype=np.uint8).reshape(-1, PDQ_BYTES)
        with self._lock:
            parts = [(t.values, t.search(xq, threshold)) for t in (self._main, self._recent)]
            parts.append((self._tail, mih.scan(self._tail.view(np.uint64), xq, threshold)))
        found: list[dict[bytes, int]] = [{} for _ in queries]
        for values, (qn, vn, dist) in parts:
            for i, v, d in zip(qn.tolist(), vn.tolist(), dist.tolist()):
                found[i][values[v].tobytes()] = d
        return [sorted(f.items(), key=lambda x: (x[1], x[0])) for f in found]

    def holds(self, values: list[bytes]) -> np.ndarray:
        """Whether each of ``values`` (32-byte PDQ values) is indexed, as a boolean array."""
        if not values:
            return np.zeros(0, dtype=bool)
        xv = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(-1, PDQ_BYTES)
        with self._lock:
            main, recent, tail = self._main, self._recent, self._tail
        out = main.contains(xv) | recent.contains(xv)
        in_tail = {row.tobytes() for row in tail}  # at most TAIL_MAX values
        return out | np.fromiter((v in in_tail for v in values), dtype=bool, count=len(values))

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


_EMPTY = np.zeros((0, PDQ_BYTES), dtype=np.uint8)


def _pack(batches) -> np.ndarray:
    """Lists of 32-byte values as one (n, 32) uint8 array, built batch by batch."""
    arrays = [np.frombuffer(b"".join(b), dtype=np.uint8).reshape(-1, PDQ_BYTES) for b in batches if b]
    return np.concatenate(arrays) if arrays else _EMPTY


def _basis(conn: sqlite3.Connection) -> pdq_file.Basis:
    """The mirror state now (inside the caller's read transaction)."""
    cursor = changes_head(conn)
    anchor = change_fingerprint(conn, cursor) if cursor else None
    feeds = {i: (o, v, d.hex()) for i, (o, v, d) in follow_states(conn).items()}
    return pdq_file.Basis(cursor, anchor.hex() if anchor else "", feeds)


def _mismatch(conn: sqlite3.Connection, basis: pdq_file.Basis) -> str:
    """Why ``basis`` is not a state in this mirror's history ("" if it is)."""
    if basis.cursor:
        fp = change_fingerprint(conn, basis.cursor)
        if fp is None or fp.hex() != basis.anchor:
            return f"change {basis.cursor} differs or is gone"
    elif first_change_seq(conn) not in (None, 1):
        return "changes it never saw were pruned"
    now = follow_states(conn)
    for fid, (origin, version, digest) in basis.feeds.items():
        if fid not in now:
            return f"feed {fid} is no longer followed"
        o, v, d = now[fid]
        if o != origin or v < version or (v == version and d.hex() != digest):
            return f"feed {fid} ({o}) is not at or past the state it was built from"
    return ""
