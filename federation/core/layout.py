"""tlog-tiles path arithmetic (https://c2sp.org/tlog-tiles). Pure.

A tile is addressed by ``(level, index, width)``; ``level == -1`` stands for
an entry bundle (``tile/entries/...``). ``width`` is 256 for a full tile and
1..255 for a partial one. Full tiles are immutable; a partial tile at a given
width is immutable too, because its content is fixed by the tree prefix.
"""
from __future__ import annotations

import re

from federation.core.errors import MalformedError

TILE_WIDTH = 256
HASH_SIZE = 32
ENTRIES = -1

_TILE_PATH_RE = re.compile(
    # At most six x-groups: an index below 2**56 has at most 17 digits, and the
    # bound keeps int() away from thousands of digits (a ValueError, not ours).
    r"tile/(?P<level>entries|0|[1-9][0-9]?)/(?P<index>(?:x[0-9]{3}/){0,6}[0-9]{3})(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
)


def encode_index(n: int) -> str:
    """1234067 -> 'x001/x234/067'."""
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n > 0:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    lvl = "entries" if level == ENTRIES else str(level)
    path = f"tile/{lvl}/{encode_index(index)}"
    if width != TILE_WIDTH:
        path += f".p/{width}"
    return path


def parse_tile_path(path: str) -> tuple[int, int, int]:
    """Inverse of ``tile_path``; rejects non-canonical paths (no traversal possible)."""
    m = _TILE_PATH_RE.fullmatch(path)
    if not m:
        raise MalformedError(f"not a tile path: {path[:100]!r}")
    level = ENTRIES if m["level"] == "entries" else int(m["level"])
    if level > 63:
        raise MalformedError(f"tile level {level} out of range")
    elements = m["index"].split("/")
    if len(elements) > 1 and elements[0] == "x000":
        raise MalformedError(f"non-canonical tile index in {path!r}")
    index = int("".join(e.lstrip("x") for e in elements))
    if index >= 1 << 56:  # tree sizes are u64: no tile index reaches 2^64 / 256
        raise MalformedError(f"tile index in {path[:100]!r} out of range")
    width = int(m["width"]) if m["width"] else TILE_WIDTH
    if width > 255 and m["width"]:
        raise MalformedError(f"partial tile width {width} out of range")
    return level, index, width


def tile_width(level: int, index: int, tree_size: int) -> int:
    """Width of tile ``index`` at ``level`` in a tree of ``tree_size`` (0 if absent)."""
    lvl = max(level, 0)
    count = tree_size >> (8 * lvl)  # number of complete nodes at this level
    start = index * TILE_WIDTH
    if count <= start:
        return 0
    return min(TILE_WIDTH, count - start)


def tiles_for_size(tree_size: int) -> list[tuple[int, int, int]]:
    """Every hash tile (level, index, width) a tree of ``tree_size`` exposes."""
    out = []
    level = 0
    while (tree_size >> (8 * level)) > 0:
        count = tree_size >> (8 * level)
        for index in range((count + TILE_WIDTH - 1) // TILE_WIDTH):
            out.append((level, index, tile_width(level, index, tree_size)))
        level += 1
    return out
