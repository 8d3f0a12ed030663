"""LtHash16: a homomorphic hash of a set (Bellare-Micciancio; Meta's LtHash).

Pure. The digest of a set is the lane-wise sum, modulo 2**16, of the element
hashes, where an element hash is SHAKE-256 of ``DOMAIN || element`` expanded
to 2048 bytes and read as 1024 little-endian uint16 lanes. The empty set's
digest is 2048 zero bytes.

Because addition is commutative and invertible, adding or removing one
element costs O(1) regardless of the set's size, and the digest depends only
on the set, not on the order of changes. Adding an element already present
counts it twice: callers (publisher and mirror) keep the set semantics by
only adding absent elements and only removing present ones.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from federation.core.errors import MalformedError, StorageError

DOMAIN = b"federation/lthash16/v1\x00"
LANES = 1024
DIGEST_BYTES = 2 * LANES
_BATCH = 4096


def element_hash(element: bytes) -> bytes:
    return hashlib.shake_256(DOMAIN + element).digest(DIGEST_BYTES)


def _batch_sum(batch: list[bytes]) -> np.ndarray:
    """Lane sums, modulo 2**16, of a batch of element hashes (uint16).

    Integer addition in numpy wraps, so summing in uint16 is exact modulo
    2**16, which is all the digest keeps, and about 3x faster than summing
    in uint32 (0.4 against 1.3 us per element on the benchmark machine).
    """
    rows = np.frombuffer(b"".join(batch), dtype="<u2").reshape(-1, LANES)
    return np.add.reduce(rows, axis=0, dtype=np.uint16)


def _lane_sum(elements: Iterable[bytes]) -> np.ndarray:
    """Sum of element hashes, lane by lane, modulo 2**16 (uint16)."""
    total = np.zeros(LANES, dtype=np.uint16)
    batch: list[bytes] = []
    for e in elements:
        batch.append(element_hash(e))
        if len(batch) == _BATCH:
            total += _batch_sum(batch)
            batch.clear()
    if batch:
        total += _batch_sum(batch)
    return total


class LtHash16:
    """A mutable LtHash16 digest."""

    __slots__ = ("_lanes",)

    def __init__(self, digest: bytes | None = None):
        if digest is None:
            self._lanes = np.zeros(LANES, dtype=np.uint16)
        else:
            if len(digest) != DIGEST_BYTES:
                raise MalformedError(f"LtHash16 digest must be {DIGEST_BYTES} bytes, got {len(digest)}")
            self._lanes = np.frombuffer(digest, dtype="<u2").astype(np.uint16)

    def add(self, elements: Iterable[bytes]) -> "LtHash16":
        self._lanes = self._lanes + _lane_sum(elements)  # uint16 arithmetic wraps mod 2**16
        return self

    def remove(self, elements: Iterable[bytes]) -> "LtHash16":
        self._lanes = self._lanes - _lane_sum(elements)
        return self

    def combine(self, other: "LtHash16") -> "LtHash16":
        self._lanes = self._lanes + other._lanes  # uint16 arithmetic wraps mod 2**16
        return self

    def digest(self) -> bytes:
        return self._lanes.astype("<u2").tobytes()

    def copy(self) -> "LtHash16":
        return LtHash16(self.digest())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LtHash16) and self.digest() == other.digest()

    def __repr__(self) -> str:
        return f"LtHash16({hashlib.sha256(self.digest()).hexdigest()[:16]}...)"


def digest_of(elements: Iterable[bytes]) -> bytes:
    return LtHash16().add(elements).digest()


class ParallelSum:
    """Accumulates ``LtHash16().add(elements)`` over many batches, hashing in
    worker processes so that the caller's core stays free (for SQLite, in a
    bootstrap or a large publish). SHAKE-256 is ~5 us per element and holds
    the GIL, so threads would not help; processes do.

    Workers are ``python -m federation.lthash_worker`` subprocesses fed over
    pipes (see that module), not ``multiprocessing``: they never re-import
    the caller's ``__main__``. The result is identical to
    ``LtHash16().add(all elements)``, since lane sums are order-independent.
    At most two batches per worker are in flight, which bounds memory.
    ``workers=0`` hashes in this process (start-up costs ~0.1 s).
    """

    MAX_IN_FLIGHT = 2

    def __init__(self, workers: int = 1):
        import subprocess
        import sys
        self._total = np.zeros(LANES, dtype=np.uint16)
        self._procs = [subprocess.Popen([sys.executable, "-m", "federation.core.lthash_worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                       for _ in range(workers)]
        self._pending: list = []  # (proc) in submission order
        self._next = 0

    def _submit(self, kind: str, items: list) -> None:
        import msgpack
        proc = self._procs[self._next % len(self._procs)]
        self._next += 1
        while sum(1 for p in self._pending if p is proc) >= self.MAX_IN_FLIGHT:
            self._collect_one()
        frame = msgpack.packb([kind, items], use_bin_type=True)
        try:
            proc.stdin.write(len(frame).to_bytes(4, "big") + frame)
            proc.stdin.flush()
        except BrokenPipeError:
            raise StorageError("LtHash worker process died") from None  # local: retry, nothing was applied
        self._pending.append(proc)

    def _collect_one(self) -> None:
        proc = self._pending.pop(0)
        data = proc.stdout.read(DIGEST_BYTES)
        if len(data) != DIGEST_BYTES:
            raise StorageError(f"LtHash worker process died (exit code {proc.poll()})")
        self._total += np.frombuffer(data, dtype="<u2")

    def add(self, elements: list[bytes]) -> None:
        if not self._procs:
            self._total += _lane_sum(elements)
        else:
            self._submit("e", elements)

    def add_records(self, records: list[tuple[str, bytes, str, tuple[str, ...]]]) -> None:
        """Add the elements of (hash_type, value, case, labels) records,
        computing the elements in the worker too."""
        if not self._procs:
            from federation.core.entries import elements_of
            self._total += _lane_sum(elements_of(records))
        else:
            self._submit("r", [list(r) for r in records])

    def result(self) -> "LtHash16":
        """Wait for every batch; return the digest of all elements added."""
        while self._pending:
            self._collect_one()
        d = LtHash16()
        d._lanes = self._total.copy()
        return d

    def close(self) -> None:
        for proc in self._procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 -- TimeoutExpired, or interrupted: never leave a worker behind
                proc.kill()
                proc.wait()
            proc.stdout.close()
        self._procs = []
        self._pending = []

    def __enter__(self) -> "ParallelSum":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
