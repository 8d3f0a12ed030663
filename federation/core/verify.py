"""Pure verification steps of a mirror sync: bytes in, verified values out.

No I/O here. These are the internals of ``acceptance.Acceptance``, which
calls them in this order and refuses any other; they stay public so each can
be tested on its own:

1. ``check_progress``: the signed checkpoint is not a rollback or a fork of
   what this mirror already verified.
2. ``tile_plan`` / ``authenticate_tiles``: the hash tiles a sync needs --
   the right edge of the new tree, the nodes of consistency proofs from
   the sizes the mirror trusts, and level-1 entries for every full bundle
   to fetch -- are proven against the signed root: the tiles hash to it,
   and every full tile hashes to its entry one level up. Level-0 tiles are
   fetched only at the edges, so the mirror holds 1/256 of a hash per new
   entry, not one hash (bounded memory on long catch-ups).
   ``check_extends`` then proves, with those tiles, that the new tree
   contains the trees the mirror trusts (``fork`` otherwise).
3. ``EntryVerifier``: each full bundle hashes to its authenticated level-1
   entry, a partial one to its authenticated level-0 tile; entries decode strictly, and entries group into versions closed by a
   seal with the next version number.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from federation.core import entries as E
from federation.core.checkpoint import Checkpoint
from federation.core.errors import ForkError, MalformedError, NothingNew, RollbackError
from federation.core.layout import ENTRIES, TILE_WIDTH, tile_path, tile_width
from federation.core.merkle import CompactRange, consistency_proof, leaf_hash, root_of, verify_consistency
from federation.core.tiles import TileHashes, needed_tiles, parse_bundle


@dataclass(frozen=True)
class TrustedState:
    """What a mirror holds for a feed: verified and applied tree positions."""

    verified: Checkpoint | None  # newest checkpoint verified (may be ahead of applied)
    applied_size: int
    compact: CompactRange  # at applied_size
    version: int  # last applied seal's version (0 for none)


def check_progress(state: TrustedState, cp: Checkpoint) -> None:
    """Refuse rollback and same-size forks; ``NothingNew`` when up to date."""
    v = state.verified
    if v is not None:
        if cp.size < v.size:
            raise RollbackError(f"checkpoint size {cp.size} is smaller than verified size {v.size}")
        if cp.size == v.size and cp.root != v.root:
            raise ForkError(f"two signed roots for size {cp.size}: {v.root.hex()} and {cp.root.hex()}")
    if cp.size < state.applied_size:
        raise RollbackError(f"checkpoint size {cp.size} is smaller than applied size {state.applied_size}")
    if cp.size == state.applied_size:
        if cp.root != state.compact.root():
            raise ForkError(f"signed root for size {cp.size} differs from the mirror's tree")
        raise NothingNew()


def leaf_tiles(start: int, size: int) -> Iterator[tuple[int, int, int]]:
    """Level-0 tiles (level, index, width) covering leaves [start, size).

    A generator: a signed but absurd size (2**40) costs nothing until the
    tiles are actually fetched, and the first missing one ends the sync.
    """
    for i in range(start // TILE_WIDTH, (size - 1) // TILE_WIDTH + 1 if size > start else 0):
        yield (0, i, tile_width(0, i, size))


def bundles(start: int, size: int) -> Iterator[tuple[int, int, int]]:
    return ((ENTRIES, i, w) for _, i, w in leaf_tiles(start, size))


def tiles_for_root(size: int) -> set[tuple[int, int, int]]:
    return needed_tiles(size, lambda th: th.mth(0, size))


def _known_prefixes(state: TrustedState, cp: Checkpoint) -> list[tuple[int, bytes, str]]:
    """(size, root, what) of every tree the new checkpoint must extend."""
    out = []
    v = state.verified
    seen = f" (previously verified size {v.size})" if v is not None else ""
    if 0 < state.applied_size < cp.size:
        out.append((state.applied_size, state.compact.root(), f"the mirror's tree of size {state.applied_size}{seen}"))
    if v is not None and state.applied_size < v.size < cp.size:
        out.append((v.size, v.root, f"the checkpoint of previously verified size {v.size}"))
    return out


def _with_parents(tiles: set[tuple[int, int, int]], size: int) -> set[tuple[int, int, int]]:
    """Add, for every full tile, the tile one level up that holds its hash."""
    out = set(tiles)
    todo = [t for t in out if t[2] == TILE_WIDTH]
    while todo:
        level, index, _ = todo.pop()
        parent = (level + 1, index // TILE_WIDTH, tile_width(level + 1, index // TILE_WIDTH, size))
        if parent not in out:
            out.add(parent)
            if parent[2] == TILE_WIDTH:
                todo.append(parent)
    return out


def proof_tiles(state: TrustedState, cp: Checkpoint) -> set[tuple[int, int, int]]:
    """Hash tiles (level, index, width) that prove ``cp``'s root and that it
    extends every tree ``state`` trusts: the right edge, the consistency
    proofs' nodes, and the parent of every full one (``authenticate_tiles``)."""
    size = cp.size
    core = tiles_for_root(size) if size else set()
    for old, _, _ in _known_prefixes(state, cp):
        core |= needed_tiles(size, lambda th, old=old: consistency_proof(old, size, th.mth))
    return _with_parents(core, size)


def tile_plan(state: TrustedState, cp: Checkpoint) -> Iterator[tuple[int, int, int]]:
    """Hash tiles (level, index, width) a sync from ``state`` to ``cp`` needs.

    First the few tiles of the right edge and of the consistency proofs (so
    an absurd signed size fails on its first missing tile), then level by
    level from the top the tiles holding the hashes of the full bundles to
    fetch. Lazy: nothing is built in proportion to the tree size.
    """
    size = cp.size
    core = proof_tiles(state, cp)
    yield from sorted(core)
    first, end = state.applied_size // TILE_WIDTH, size // TILE_WIDTH  # full bundles [first, end)
    level = max((lvl for lvl, _, _ in core), default=0)
    while level >= 1:
        # Level-L tiles covering the hashes of full bundles [first, end): node
        # indices at level L are bundle indices >> 8(L-1).
        lo = (first >> (8 * (level - 1))) // TILE_WIDTH
        hi = ((end - 1) >> (8 * (level - 1))) // TILE_WIDTH if end > first else lo - 1
        for index in range(lo, hi + 1):
            t = (level, index, tile_width(level, index, size))
            if t[2] and t not in core:
                yield t
        level -= 1


def authenticate_tiles(cp: Checkpoint, tiles: dict[tuple[int, int], list[bytes]]) -> None:
    """Prove every tile in ``tiles`` against the signed root, or raise ``MalformedError``.

    The tiles must hash to the root (this uses every entry of the right-edge
    partial tiles), and each full tile must hash to its entry in the tile
    one level up: by induction from the top, every entry is then a node of
    the signed tree.
    """
    th = TileHashes(cp.size, tiles)
    if cp.size and th.mth(0, cp.size) != cp.root:
        missing = f" ({len(th.needed)} tiles missing)" if th.needed else ""
        raise MalformedError(f"hash tiles do not hash to the signed root of size {cp.size}{missing}")
    for (level, index), hashes in tiles.items():
        if len(hashes) != TILE_WIDTH:
            continue
        parent_index, offset = divmod(index, TILE_WIDTH)
        parent = tiles.get((level + 1, parent_index))
        where = tile_path(level, index)
        if parent is None or len(parent) <= offset:
            raise MalformedError(f"{where}: the tile holding its hash was not fetched")
        if root_of(hashes) != parent[offset]:
            up = tile_path(level + 1, parent_index, len(parent))
            raise MalformedError(f"hash tiles do not hash to the signed root of size {cp.size}: "
                                 f"{where} does not match its entry in {up}")


def check_extends(state: TrustedState, cp: Checkpoint,
                  tiles: dict[tuple[int, int], list[bytes]]) -> list[tuple[int, list[bytes]]]:
    """With authenticated ``tiles``: the signed tree contains every tree the
    mirror trusts, or ``ForkError`` (two signed trees that cannot both be true).
    Returns the verified consistency proofs, as (old size, proof)."""
    th = TileHashes(cp.size, tiles)
    proofs = []
    for old, root, what in _known_prefixes(state, cp):
        proof = consistency_proof(old, cp.size, th.mth)
        if not verify_consistency(old, cp.size, root, cp.root, proof):
            raise ForkError(f"signed tree of size {cp.size} does not extend {what}")
        proofs.append((old, proof))
    return proofs


@dataclass
class Version:
    """A verified version. ``staged``: too big to hold in memory, its entries
    were handed out as ``Spill``s (stored by the caller) and ``ops``,
    ``encoded`` and ``hashes`` are empty."""

    ops: list
    seal: E.Seal
    start: int  # log index of the first entry
    end: int  # log index after the seal
    encoded: list[bytes] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    staged: bool = False
    staged_digest: bytes = b""  # staged: SHA-256 of the concatenated leaf hashes of all its entries


@dataclass(frozen=True)
class Spill:
    """Verified entries ``start .. start+len(encoded)`` of a version still
    being read, to be staged by the caller (bounded memory)."""

    start: int
    encoded: list[bytes]


SPILL_AT = 65_536  # entries of one version held in memory before spilling


class EntryVerifier:
    """Checks bundles in order against authenticated tiles; yields complete
    versions, and ``Spill``s of versions larger than ``spill_at`` entries."""

    def __init__(self, start: int, size: int, tiles: dict[tuple[int, int], list[bytes]], version: int,
                 spill_at: int | None = None):
        self.start = start
        self.size = size
        self.tiles = tiles
        self.spill_at = SPILL_AT if spill_at is None else spill_at
        self._spilled_to = start  # entries of the pending version below this were spilled
        self._spilled = hashlib.sha256()  # leaf hashes of the pending version's spilled entries
        self.next_index = start
        self.version = version
        self._pending = Version([], None, start, start)  # type: ignore[arg-type]

    def feed_bundle(self, index: int, width: int, data: bytes) -> list[Version | Spill]:
        where = tile_path(ENTRIES, index, width)
        items = parse_bundle(data, width, where)
        hashes = [leaf_hash(raw) for raw in items]
        self._check_bundle(index, width, hashes, where)
        done: list[Version | Spill] = []
        for offset, raw in enumerate(items):
            i = index * TILE_WIDTH + offset
            if i < self.next_index:
                continue  # already applied, bundle started before our position
            if i != self.next_index:
                raise MalformedError(f"{where}: bundles out of order at entry {i}")
            try:
                entry = E.decode(raw)
            except MalformedError as e:
                raise MalformedError(f"{where}: entry {i}: {e}") from None
            p = self._pending
            p.encoded.append(raw)
            p.hashes.append(hashes[offset])
            self.next_index += 1
            if isinstance(entry, E.Seal):
                if entry.version != self.version + 1:
                    raise MalformedError(f"entry {i}: seal version {entry.version}, want {self.version + 1}")
                self.version = entry.version
                p.seal, p.end = entry, i + 1
                if p.staged:  # the tail too, so the whole version is in one place
                    done.append(Spill(self._spilled_to, p.encoded))
                    self._spilled.update(b"".join(p.hashes))
                    p.staged_digest = self._spilled.digest()
                    p.encoded, p.hashes = [], []
                done.append(p)
                self._pending = Version([], None, i + 1, i + 1)  # type: ignore[arg-type]
                self._spilled_to = i + 1
                self._spilled = hashlib.sha256()
            else:
                p.ops.append(entry)
                if len(p.encoded) >= self.spill_at:
                    done.append(Spill(self._spilled_to, p.encoded))
                    self._spilled.update(b"".join(p.hashes))
                    self._spilled_to += len(p.encoded)
                    p.staged, p.encoded, p.hashes, p.ops = True, [], [], []
        return done

    def _check_bundle(self, index: int, width: int, hashes: list[bytes], where: str) -> None:
        """A full bundle hashes to its level-1 entry; a partial one matches its
        level-0 tile entry by entry (both authenticated)."""
        if width == TILE_WIDTH:
            parent = self.tiles.get((1, index // TILE_WIDTH))
            if parent is None or len(parent) <= index % TILE_WIDTH:
                raise MalformedError(f"{where}: the tile holding its hash was not fetched")
            if root_of(hashes) != parent[index % TILE_WIDTH]:
                raise MalformedError(f"{where}: the hash of its entries does not match the signed tree")
            return
        leaves = self.tiles.get((0, index))
        if leaves is None or len(leaves) != width:
            raise MalformedError(f"{where}: the tile holding its leaf hashes was not fetched")
        for offset, (got, want) in enumerate(zip(hashes, leaves)):
            if got != want:
                raise MalformedError(f"{where}: entry {index * TILE_WIDTH + offset} does not match the signed tree")

    def finish(self) -> None:
        if self.next_index != self.size:
            raise MalformedError(f"entries stop at {self.next_index}, want {self.size}")
        if self._pending.encoded or self._pending.staged:
            raise MalformedError(f"checkpoint size {self.size} is not at a seal: "
                                 f"{self.size - self._pending.start} entries after the last seal")
