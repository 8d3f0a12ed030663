"""Hash tiles and entry bundles as bytes. Pure.

* ``parse_hash_tile`` / ``parse_bundle`` turn served bytes into hashes or
  entries and check the width the path promised.
* ``TileBuilder`` and ``BundleBuilder`` are the publisher's side: fed the
  new leaf hashes (entries) of a batch, they stream out full tiles (bundles)
  and, at the end, the partial ones of the new tree size.
* ``TileHashes`` answers ``mth(start, end)`` for tree nodes from a set of
  tiles, as a client computing proofs does (tlog-tiles: a tile entry at level
  L is the root of a full 256**L-leaf subtree).
"""
from __future__ import annotations

from federation.core.errors import InputError, MalformedError
from federation.core.layout import ENTRIES, HASH_SIZE, TILE_WIDTH, tile_width
from federation.core.merkle import node_hash, root_of, split_point

MAX_ENTRY_BYTES = 4096


def parse_hash_tile(data: bytes, width: int, where: str = "tile") -> list[bytes]:
    if len(data) != width * HASH_SIZE:
        raise MalformedError(f"{where}: {len(data)} bytes, want {width * HASH_SIZE} for width {width}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: list[bytes]) -> bytes:
    out = bytearray()
    for e in entries:
        if len(e) > MAX_ENTRY_BYTES:
            raise InputError(f"entry of {len(e)} bytes exceeds {MAX_ENTRY_BYTES}")  # a bundle length is 2 bytes
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def parse_bundle(data: bytes, width: int, where: str = "bundle") -> list[bytes]:
    """Split a bundle into exactly ``width`` uint16-length-prefixed entries."""
    entries = []
    pos, n = 0, len(data)
    while pos < n:
        if pos + 2 > n:
            raise MalformedError(f"{where}: truncated length prefix at byte {pos}")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + length > n:
            raise MalformedError(f"{where}: entry {len(entries)} truncated")
        if length > MAX_ENTRY_BYTES:
            raise MalformedError(f"{where}: entry {len(entries)} is {length} bytes, over {MAX_ENTRY_BYTES}")
        entries.append(data[pos : pos + length])
        pos += length
    if len(entries) != width:
        raise MalformedError(f"{where}: holds {len(entries)} entries, want {width}")
    return entries


class TileBuilder:
    """Computes the hash tiles for a growing tree, level by level.

    State: for each level, the hashes of the current (incomplete) tile.
    It is rebuilt from the partial tiles of the current size, so the
    publisher needs no state beyond the tiles it already stored.
    ``add_leaves`` returns tiles as they become full (stream them to
    storage); ``partials`` returns the partial tiles of the current size.
    """

    def __init__(self, size: int, partial_tiles: dict[int, list[bytes]]):
        self.size = size
        self.levels: list[list[bytes]] = []
        level = 0
        while (size >> (8 * level)) > 0:
            width = (size >> (8 * level)) % TILE_WIDTH
            hashes = partial_tiles.get(level, []) if width else []
            if len(hashes) != width:
                raise MalformedError(f"partial tile at level {level} has {len(hashes)} hashes, want {width}")
            self.levels.append(list(hashes))
            level += 1

    def add_leaves(self, leaf_hashes: list[bytes]) -> dict[tuple[int, int, int], bytes]:
        """Append leaves; return the tiles that became full, keyed (level, index, 256)."""
        full: dict[tuple[int, int, int], bytes] = {}
        for h in leaf_hashes:
            self._push(0, h, self.size, full)
            self.size += 1
        return full

    def partials(self) -> dict[tuple[int, int, int], bytes]:
        """Partial tiles of the current size (tlog-tiles: served for every
        size that gets a checkpoint)."""
        out = {}
        for level, hashes in enumerate(self.levels):
            if hashes:
                count = self.size >> (8 * level)
                out[(level, count // TILE_WIDTH, len(hashes))] = b"".join(hashes)
        return out

    def _push(self, level: int, h: bytes, leaf_index: int, full: dict) -> None:
        while len(self.levels) <= level:
            self.levels.append([])
        tile = self.levels[level]
        tile.append(h)
        if len(tile) == TILE_WIDTH:
            index = (leaf_index >> (8 * level)) // TILE_WIDTH
            full[(level, index, TILE_WIDTH)] = b"".join(tile)
            self.levels[level] = []
            # tlog-tiles: only full tiles are hashed into the level above.
            self._push(level + 1, root_of(tile), leaf_index, full)


class BundleBuilder:
    """Groups entries into entry bundles of 256, like ``TileBuilder``."""

    def __init__(self, size: int, partial_entries: list[bytes]):
        if len(partial_entries) != size % TILE_WIDTH:
            raise MalformedError(f"partial bundle has {len(partial_entries)} entries, want {size % TILE_WIDTH}")
        self.size = size
        self.pending = list(partial_entries)

    def add_entries(self, entries: list[bytes]) -> dict[tuple[int, int, int], bytes]:
        full = {}
        for e in entries:
            self.pending.append(e)
            self.size += 1
            if len(self.pending) == TILE_WIDTH:
                full[(ENTRIES, (self.size - 1) // TILE_WIDTH, TILE_WIDTH)] = encode_bundle(self.pending)
                self.pending = []
        return full

    def partial(self) -> dict[tuple[int, int, int], bytes]:
        if not self.pending:
            return {}
        return {(ENTRIES, self.size // TILE_WIDTH, len(self.pending)): encode_bundle(self.pending)}


class TileHashes:
    """Tree node hashes served from a dict of tiles for a tree of ``size``.

    ``tiles`` maps (level, index) to the list of hashes of that tile at the
    width the tree size implies. ``needed`` records tiles that were asked for
    but missing, so a fetcher can run a computation twice: once to learn
    which tiles it needs, once with them.
    """

    def __init__(self, size: int, tiles: dict[tuple[int, int], list[bytes]] | None = None):
        self.size = size
        self.tiles = tiles if tiles is not None else {}
        self.needed: set[tuple[int, int, int]] = set()

    def _tile_entry(self, level: int, node_index: int) -> bytes:
        index, offset = divmod(node_index, TILE_WIDTH)
        tile = self.tiles.get((level, index))
        if tile is None or len(tile) <= offset:
            self.needed.add((level, index, tile_width(level, index, self.size)))
            return b"\x00" * HASH_SIZE
        return tile[offset]

    def mth(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a node of the tree (RFC 6962 subtree)."""
        if not 0 <= start < end <= self.size:
            raise MalformedError(f"hash range {start}..{end} outside a tree of size {self.size}")
        n = end - start
        # A power-of-256 aligned perfect subtree is one tile entry.
        level, s, e = 0, start, end
        while s % TILE_WIDTH == 0 and e % TILE_WIDTH == 0 and e - s >= TILE_WIDTH:
            s //= TILE_WIDTH
            e //= TILE_WIDTH
            level += 1
        if e - s == 1:
            return self._tile_entry(level, s)
        k = split_point(n)
        return node_hash(self.mth(start, start + k), self.mth(start + k, end))


def needed_tiles(size: int, compute) -> set[tuple[int, int, int]]:
    """Run ``compute(TileHashes)`` on an empty tile set and list the tiles it read."""
    th = TileHashes(size)
    compute(th)
    return th.needed


__all__ = [
    "ENTRIES",
    "MAX_ENTRY_BYTES",
    "BundleBuilder",
    "TileBuilder",
    "TileHashes",
    "encode_bundle",
    "needed_tiles",
    "parse_bundle",
    "parse_hash_tile",
]
