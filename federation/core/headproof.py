"""Proof of a snapshot's head against a verified checkpoint (pure).

A fresh mirror, or one that fell behind the publisher's pruned range, loads
a snapshot (docs/PROTOCOL.md section 11) instead of replaying the log. The
snapshot's server is never trusted. With ``C`` the verified checkpoint and
``a`` the snapshot's tree size, ``verify_head`` proves from hash tiles at
size ``C.size``:

1. the seal closing the snapshot's version (the last entry of its last
   bundle) is in the signed tree: an RFC 6962 inclusion proof to ``C.root``
   (``malformed`` otherwise);
2. the compact range at ``a`` (the Merkle state the mirror continues from),
   read from the tiles, is consistent with ``C``: an RFC 6962 consistency
   proof from ``root(a)`` to ``C.root``; and the bundle's entries, appended
   to the compact range at the bundle's start, reproduce ``root(a)``
   (``malformed`` otherwise);
3. the header's count equals the seal's (``digest`` otherwise).

The records themselves are checked by the loader (their LtHash16 against the
seal's digest) inside the transaction that installs them. These functions
are the internals of ``acceptance.Acceptance.prove_head``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from federation.core import entries as E
from federation.core.checkpoint import Checkpoint
from federation.core.errors import DigestError, MalformedError
from federation.core.layout import ENTRIES, TILE_WIDTH, tile_path, tile_width
from federation.core.merkle import CompactRange, consistency_proof, inclusion_proof, leaf_hash, verify_consistency, \
    verify_inclusion
from federation.core.tiles import TileHashes, needed_tiles, parse_bundle


class SnapshotClaim(Protocol):
    """What a snapshot's header states (``snapshot.SnapshotHeader``); unverified."""

    origin: str
    size: int
    version: int
    count: int
    bundle: bytes  # the log's last entry bundle at ``size`` (tlog-tiles bytes)


@dataclass(frozen=True)
class VerifiedHead:
    """A snapshot header proven against a signed checkpoint."""

    header: SnapshotClaim
    seal: E.Seal
    compact: CompactRange  # at header.size
    tiles: dict[tuple[int, int, int], bytes]  # partial hash tiles at header.size, and the last bundle


def last_bundle(size: int) -> tuple[int, int]:
    """(index, width) of the last entry bundle of a tree of ``size`` > 0."""
    index = (size - 1) // TILE_WIDTH
    return index, tile_width(0, index, size)


def _compact_nodes(size: int) -> list[tuple[int, int]]:
    """[start, end) of the perfect subtrees of a tree of ``size``, largest first."""
    out, start = [], 0
    for k in range(size.bit_length() - 1, -1, -1):
        if size >> k & 1:
            out.append((start, start + (1 << k)))
            start += 1 << k
    return out


def _head_proofs(th: TileHashes, header: SnapshotClaim, cp: Checkpoint):
    """Everything ``verify_head`` reads from tiles: the compact ranges at the
    snapshot's size and at the start of its last bundle, the consistency
    proof to ``cp`` and the seal's inclusion proof."""
    a = header.size
    first = last_bundle(a)[0] * TILE_WIDTH
    nodes = [th.mth(s, e) for s, e in _compact_nodes(a)]
    before = [th.mth(s, e) for s, e in _compact_nodes(first)]
    consistency = consistency_proof(a, cp.size, th.mth)
    seal_proof = inclusion_proof(a - 1, cp.size, th.mth)
    return nodes, before, consistency, seal_proof


def head_tiles(header: SnapshotClaim, cp: Checkpoint) -> set[tuple[int, int, int]]:
    """Hash tiles (level, index, width at ``cp.size``) that ``verify_head`` reads."""
    if not 0 < header.size <= cp.size:
        return set()
    return needed_tiles(cp.size, lambda th: _head_proofs(th, header, cp))


def verify_head(header: SnapshotClaim, origin: str, cp: Checkpoint,
                tiles: dict[tuple[int, int], list[bytes]]) -> VerifiedHead:
    """Prove a snapshot header against verified checkpoint ``cp``. Pure.

    ``tiles`` maps (level, index) to the hashes of the tiles ``head_tiles``
    named. Raises ``MalformedError`` (not in the signed tree, bad bytes) or
    ``DigestError`` (header count differs from the seal's).
    """
    a = header.size
    if header.origin != origin:
        raise MalformedError(f"snapshot is of origin {header.origin!r}, want {origin!r}")
    if not 0 < a <= cp.size:
        raise MalformedError(f"snapshot tree size {a} is outside the signed tree of size {cp.size}")
    bidx, bwidth = last_bundle(a)
    where = f"snapshot of {origin} at size {a}: bundle {tile_path(ENTRIES, bidx, bwidth)}"
    entries = parse_bundle(header.bundle, bwidth, where)
    th = TileHashes(cp.size, tiles)
    nodes, before, consistency, seal_proof = _head_proofs(th, header, cp)
    if th.needed:
        raise MalformedError(f"{where}: hash tiles missing for the proofs: {sorted(th.needed)[:4]}")
    # 1. the seal closing the snapshot's version is in the signed tree.
    if not verify_inclusion(leaf_hash(entries[-1]), a - 1, cp.size, seal_proof, cp.root):
        raise MalformedError(f"{where}: the seal at entry {a - 1} is not in the signed tree "
                             f"of size {cp.size} (inclusion proof fails)")
    try:
        seal = E.decode(entries[-1])
    except MalformedError as e:
        raise MalformedError(f"{where}: last entry: {e}") from None
    if not isinstance(seal, E.Seal) or seal.version != header.version:
        raise MalformedError(f"{where}: last entry is not the seal of version {header.version}")
    # 2. the Merkle state at size a, from the tiles, is a prefix of the signed tree.
    compact = CompactRange(a, nodes)
    if not verify_consistency(a, cp.size, compact.root(), cp.root, consistency):
        raise MalformedError(f"hash tiles at size {a} are not consistent with the signed root of size {cp.size}")
    # ... and the bundle's other entries are its leaves [first, a): appended to
    # the tree before the bundle, they reproduce that verified root.
    rebuilt = CompactRange(bidx * TILE_WIDTH, before)
    for raw in entries:
        rebuilt.append(leaf_hash(raw))
    if rebuilt.root() != compact.root():
        raise MalformedError(f"{where}: entries are not the signed tree's leaves {bidx * TILE_WIDTH}..{a - 1}")
    # 3. the count the loader will check records against is the seal's.
    if header.count != seal.count:
        raise DigestError(f"snapshot of {origin} version {seal.version} states {header.count} hashes, "
                          f"its seal says {seal.count}")
    # Partial tiles at size a, for the mirror's appender (tlog-tiles widths at a);
    # every hash in them was read into the compact range just verified.
    out: dict[tuple[int, int, int], bytes] = {(ENTRIES, bidx, bwidth): header.bundle}
    level = 0
    while a >> (8 * level):
        count = a >> (8 * level)
        w = count % TILE_WIDTH
        if w:
            out[(level, count // TILE_WIDTH, w)] = b"".join(tiles[(level, count // TILE_WIDTH)][:w])
        level += 1
    return VerifiedHead(header, seal, compact, out)
