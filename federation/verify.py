"""Pure verification steps of a mirror sync: bytes in, verified values out.

No I/O here. ``sync`` fetches bytes and calls these in order:

1. ``check_progress``: the signed checkpoint is not a rollback or a fork of
   what this mirror already verified.
2. ``authenticate_leaves``: the level-0 hash tiles for the missing range,
   appended to the mirror's own compact range, reproduce the signed root.
   That proves both consistency (the new tree extends ours) and every new
   leaf hash. If they do not, ``classify_root_mismatch`` tells a fork from
   tampered tiles with an RFC 6962 consistency proof computed from the
   served tiles.
3. ``EntryVerifier``: each entry of each bundle hashes to its authenticated
   leaf hash, decodes strictly, and entries group into versions closed by a
   seal with the next version number.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from . import entries as E
from .checkpoint import Checkpoint
from .errors import ForkError, MalformedError, NothingNew, RollbackError
from .layout import ENTRIES, TILE_WIDTH, tile_path, tile_width
from .merkle import CompactRange, consistency_proof, leaf_hash, verify_consistency
from .tiles import TileHashes, needed_tiles, parse_bundle


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


def authenticate_leaves(state: TrustedState, cp: Checkpoint, tiles: list[list[bytes]]) -> list[bytes] | None:
    """Leaf hashes [applied_size, cp.size) if they prove the signed root, else None.

    ``tiles`` are the parsed tiles from ``leaf_tiles``, in order. Raises
    ``ForkError`` when the same tiles reproduce the previously verified
    checkpoint's root wrongly: that checkpoint and ``cp`` are both signed and
    cannot both be true.
    """
    first = (state.applied_size // TILE_WIDTH) * TILE_WIDTH
    leaves = [h for t in tiles for h in t][state.applied_size - first:]
    if len(leaves) != cp.size - state.applied_size:
        raise MalformedError(f"tiles hold {len(leaves)} new leaves, want {cp.size - state.applied_size}")
    cr = state.compact.copy()
    v = state.verified
    for h in leaves:
        cr.append(h)
        if v is not None and cr.size == v.size and v.size > state.applied_size and cr.root() != v.root:
            return None
    return leaves if cr.root() == cp.root else None


def tiles_for_root(size: int) -> set[tuple[int, int, int]]:
    return needed_tiles(size, lambda th: th.mth(0, size))


def _prefix_view(th: TileHashes, old: int, size: int) -> tuple[list[bytes], bytes]:
    """From tiles: a consistency proof old -> size, and the tiles' root at ``old``."""
    return consistency_proof(old, size, th.mth), th.mth(0, old)


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


def tiles_for_fork_check(state: TrustedState, cp: Checkpoint) -> set[tuple[int, int, int]]:
    need = tiles_for_root(cp.size)
    for old, _, _ in _known_prefixes(state, cp):
        need |= needed_tiles(cp.size, lambda th, old=old: _prefix_view(th, old, cp.size))
    return need


def classify_root_mismatch(state: TrustedState, cp: Checkpoint, tiles: dict[tuple[int, int], list[bytes]]) -> Exception:
    """Called when our tree plus the served leaf tiles miss the signed root.

    The served tiles are authentic only if they hash to the signed root. If
    they do, a consistency proof computed from them, checked against the
    signed root, pins the new tree's root at each size we already trust: a
    different root there is a fork (two signed trees that cannot both be
    true). In every other case the tiles were corrupted on the way.
    """
    th = TileHashes(cp.size, tiles)
    if th.mth(0, cp.size) != cp.root:
        return MalformedError(f"hash tiles do not hash to the signed root of size {cp.size}")
    for old, root, what in _known_prefixes(state, cp):
        proof, theirs = _prefix_view(th, old, cp.size)
        if verify_consistency(old, cp.size, theirs, cp.root, proof) and theirs != root:
            return ForkError(f"signed tree of size {cp.size} does not extend {what}")
    return MalformedError(f"hash tiles do not hash to the signed root of size {cp.size}: "
                          "the level-0 tiles served for the new entries were altered")


@dataclass
class Version:
    ops: list
    seal: E.Seal
    start: int  # log index of the first entry
    end: int  # log index after the seal
    encoded: list[bytes] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)


class EntryVerifier:
    """Checks bundles in order against authenticated leaves; yields versions."""

    def __init__(self, start: int, size: int, leaves: list[bytes], version: int):
        self.start = start
        self.size = size
        self.leaves = leaves
        self.next_index = start
        self.version = version
        self._pending = Version([], None, start, start)  # type: ignore[arg-type]

    def feed_bundle(self, index: int, width: int, data: bytes) -> list[Version]:
        where = tile_path(ENTRIES, index, width)
        items = parse_bundle(data, width, where)
        done: list[Version] = []
        for offset, raw in enumerate(items):
            i = index * TILE_WIDTH + offset
            if i < self.next_index:
                continue  # already applied, bundle started before our position
            if i != self.next_index:
                raise MalformedError(f"{where}: bundles out of order at entry {i}")
            if leaf_hash(raw) != self.leaves[i - self.start]:
                raise MalformedError(f"{where}: entry {i} does not match the signed tree")
            try:
                entry = E.decode(raw)
            except MalformedError as e:
                raise MalformedError(f"{where}: entry {i}: {e}") from None
            p = self._pending
            p.encoded.append(raw)
            p.hashes.append(self.leaves[i - self.start])
            self.next_index += 1
            if isinstance(entry, E.Seal):
                if entry.version != self.version + 1:
                    raise MalformedError(f"entry {i}: seal version {entry.version}, want {self.version + 1}")
                self.version = entry.version
                p.seal, p.end = entry, i + 1
                done.append(p)
                self._pending = Version([], None, i + 1, i + 1)  # type: ignore[arg-type]
            else:
                p.ops.append(entry)
        return done

    def finish(self) -> None:
        if self.next_index != self.size:
            raise MalformedError(f"entries stop at {self.next_index}, want {self.size}")
        if self._pending.encoded:
            raise MalformedError(f"checkpoint size {self.size} is not at a seal: "
                                 f"{len(self._pending.encoded)} entries after the last seal")
