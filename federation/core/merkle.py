"""RFC 6962 Merkle tree hashing, compact ranges and proof checks.

Pure. Hashes are SHA-256; a leaf hashes as ``H(0x00 || entry)``, an interior
node as ``H(0x01 || left || right)``, and the empty tree as ``H("")``.

A *compact range* for a tree of size ``n`` holds one hash per set bit of ``n``:
the roots of the perfect subtrees that make up the tree, largest first. It is
all the state needed to append leaves and to compute the root, so mirrors and
publishers persist it instead of the whole tree.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from federation.core.errors import MalformedError

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (RFC 6962 ``k``), n > 1."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(hashes: list[bytes]) -> bytes:
    """MTH of a list of leaf (or same-level node) hashes."""
    if not hashes:
        return EMPTY_ROOT
    cr = CompactRange()
    for h in hashes:
        cr.append(h)
    return cr.root()


class CompactRange:
    """Right edge of a Merkle tree: perfect-subtree roots for each set bit of size.

    ``hashes[i]`` is the root of a perfect subtree whose height is the
    position of the i-th set bit of ``size``, counting from the top.
    """

    __slots__ = ("size", "hashes")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()):
        self.size = size
        self.hashes = list(hashes)
        if len(self.hashes) != bin(size).count("1"):
            raise MalformedError(f"compact range for size {size} needs {bin(size).count('1')} hashes")

    def copy(self) -> "CompactRange":
        return CompactRange(self.size, self.hashes)

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash; amortised O(1)."""
        h = leaf
        size = self.size
        # Merge with the smallest subtrees while the new one has the same height.
        while size & 1:
            h = node_hash(self.hashes.pop(), h)
            size >>= 1
        self.hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = node_hash(left, h)
        return h

    def to_bytes(self) -> bytes:
        return self.size.to_bytes(8, "big") + b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> "CompactRange":
        if len(data) < 8 or (len(data) - 8) % 32:
            raise MalformedError("compact range blob has a bad length")
        size = int.from_bytes(data[:8], "big")
        body = data[8:]
        return cls(size, [body[i : i + 32] for i in range(0, len(body), 32)])


# A node source returns MTH(D[start:end]) for a range that is a node of the tree.
NodeSource = Callable[[int, int], bytes]


def inclusion_proof(index: int, size: int, mth: NodeSource) -> list[bytes]:
    """RFC 6962 2.1.1 PATH(m, D[n]) built from a node source."""

    def path(m: int, start: int, n: int) -> list[bytes]:
        if n == 1:
            return []
        k = split_point(n)
        if m < k:
            return path(m, start, k) + [mth(start + k, start + n)]
        return path(m - k, start + k, n - k) + [mth(start, start + k)]

    if not 0 <= index < size:
        raise MalformedError(f"inclusion proof: index {index} outside a tree of size {size}")
    return path(index, 0, size)


def consistency_proof(old: int, new: int, mth: NodeSource) -> list[bytes]:
    """RFC 6962 2.1.2 PROOF(m, D[n]) built from a node source."""

    def subproof(m: int, start: int, n: int, whole: bool) -> list[bytes]:
        if m == n:
            return [] if whole else [mth(start, start + n)]
        k = split_point(n)
        if m <= k:
            return subproof(m, start, k, whole) + [mth(start + k, start + n)]
        return subproof(m - k, start + k, n - k, False) + [mth(start, start + k)]

    if not 0 <= old <= new:
        raise MalformedError(f"consistency proof: no tree of size {old} within one of size {new}")
    if old == 0 or old == new:
        return []
    return subproof(old, 0, new, True)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2, plus the trivial cases old == new and old == 0."""
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof and old_root == EMPTY_ROOT
    if not 0 < old < new or not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
