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

from federation.core.errors import MalformedError

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
