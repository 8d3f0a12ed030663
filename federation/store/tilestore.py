"""Tiles and entry bundles of one feed in a SQLite ``tiles`` table.

Shared by the publisher (which creates them) and the mirror (which rebuilds
the same bytes from verified entries, so a relay can re-serve them). Tiles
are a pure function of the tree, so both sides store identical bytes.
The caller owns the transaction.
"""
from __future__ import annotations

import sqlite3

from federation.core.errors import StorageError
from federation.core.layout import ENTRIES, TILE_WIDTH
from federation.core.merkle import CompactRange, leaf_hash
from federation.core.tiles import BundleBuilder, TileBuilder, parse_bundle, parse_hash_tile

SCHEMA = """
CREATE TABLE IF NOT EXISTS tiles (
    feed INTEGER NOT NULL,
    level INTEGER NOT NULL,        -- -1: entry bundle
    idx INTEGER NOT NULL,
    width INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (feed, level, idx, width)
) WITHOUT ROWID;
"""


class TileStore:
    def __init__(self, conn: sqlite3.Connection, feed: int):
        self.conn = conn
        self.feed = feed

    def get(self, level: int, index: int, width: int) -> bytes | None:
        row = self.conn.execute(
            "SELECT data FROM tiles WHERE feed=? AND level=? AND idx=? AND width=?",
            (self.feed, level, index, width),
        ).fetchone()
        return row[0] if row else None

    def sizes(self) -> list[tuple[int, int, int, int]]:
        """(level, index, width, length in bytes) of every stored tile and bundle."""
        return self.conn.execute("SELECT level, idx, width, length(data) FROM tiles WHERE feed=?",
                                 (self.feed,)).fetchall()

    def delete_bundles(self) -> None:
        """Delete every entry bundle (hash tiles stay: they still prove the tree)."""
        self.conn.execute("DELETE FROM tiles WHERE feed=? AND level=?", (self.feed, ENTRIES))

    def replace_healed(self, feed: int) -> None:
        """Replace every tile and bundle of this feed with those of feed
        ``feed`` of the database attached as ``healed`` (``db.HEALED``: a
        rebuilt copy, ``sync.heal``)."""
        self.conn.execute("DELETE FROM tiles WHERE feed=?", (self.feed,))
        self.conn.execute("INSERT INTO tiles SELECT ?, level, idx, width, data FROM healed.tiles WHERE feed=?",
                          (self.feed, feed))

    def prune_bundles(self, minimum: int, keep: tuple[int, int]) -> int:
        """Delete the entry bundles whose end index is at most ``minimum``,
        except ``keep`` (index, width); returns how many were deleted."""
        cur = self.conn.execute(
            "DELETE FROM tiles WHERE feed=? AND level=? AND idx * ? + width <= ? AND NOT (idx=? AND width=?)",
            (self.feed, ENTRIES, TILE_WIDTH, minimum, *keep))
        return cur.rowcount

    def put(self, items: dict[tuple[int, int, int], bytes]) -> None:
        # OR REPLACE: a tile of a given width always has the same bytes, so a
        # rewrite after a rolled-back attempt is harmless.
        self.conn.executemany(
            "INSERT OR REPLACE INTO tiles (feed, level, idx, width, data) VALUES (?,?,?,?,?)",
            [(self.feed, lvl, idx, w, data) for (lvl, idx, w), data in items.items()],
        )

    def appender(self, size: int, compact: CompactRange) -> "Appender":
        """Builders positioned at ``size``, from the partial tiles stored for it."""
        partial_tiles = {}
        level = 0
        while (size >> (8 * level)) > 0:
            count = size >> (8 * level)
            width = count % TILE_WIDTH
            if width:
                data = self.get(level, count // TILE_WIDTH, width)
                if data is None:
                    raise StorageError(f"feed {self.feed}: partial tile {level}/{count // TILE_WIDTH}.p/{width} missing")
                partial_tiles[level] = parse_hash_tile(data, width)
            level += 1
        width = size % TILE_WIDTH
        pending: list[bytes] = []
        if width:
            data = self.get(ENTRIES, size // TILE_WIDTH, width)
            if data is None:
                raise StorageError(f"feed {self.feed}: partial bundle {size // TILE_WIDTH}.p/{width} missing")
            pending = parse_bundle(data, width)
        return Appender(self, compact, TileBuilder(size, partial_tiles), BundleBuilder(size, pending))


class Appender:
    """Appends entries: updates the compact range and streams tiles to the store."""

    def __init__(self, store: TileStore, compact: CompactRange, tiles: TileBuilder, bundles: BundleBuilder):
        if not (compact.size == tiles.size == bundles.size):
            raise StorageError("compact range and tiles disagree on the tree size")
        self.store = store
        self.compact = compact
        self.tiles = tiles
        self.bundles = bundles

    def append(self, encoded: list[bytes], hashes: list[bytes] | None = None) -> None:
        if hashes is None:
            hashes = [leaf_hash(e) for e in encoded]
        for h in hashes:
            self.compact.append(h)
        self.store.put({**self.tiles.add_leaves(hashes), **self.bundles.add_entries(encoded)})

    def finish(self) -> None:
        """Write the partial tiles and bundle of the current size."""
        self.store.put({**self.tiles.partials(), **self.bundles.partial()})
