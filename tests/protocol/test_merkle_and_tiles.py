"""Merkle hashing, proofs and tile arithmetic against a brute-force reference."""
import hashlib
import random

import pytest

from federation.core.errors import MalformedError
from federation.core.layout import encode_index, parse_tile_path, tile_path, tiles_for_size
from federation.core.merkle import (CompactRange, EMPTY_ROOT, consistency_proof, inclusion_proof, leaf_hash, root_of,
                                    verify_consistency, verify_inclusion)
from federation.core.tiles import BundleBuilder, TileBuilder, TileHashes, encode_bundle, parse_bundle, parse_hash_tile


def mth(leaves):
    """RFC 6962 2.1 MTH, written straight from the definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(1100)]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 255, 256, 257, 1000, 1024, 1100])
def test_compact_range_root_matches_definition(n):
    assert root_of(LEAVES[:n]) == mth(LEAVES[:n])
    cr = CompactRange()
    for h in LEAVES[:n]:
        cr.append(h)
    assert CompactRange.from_bytes(cr.to_bytes()).root() == mth(LEAVES[:n])


def test_empty_root():
    assert CompactRange().root() == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_proofs_verify_and_detect_tampering():
    rng = random.Random(7)
    node = lambda s, e: mth(LEAVES[s:e])  # noqa: E731
    for _ in range(60):
        size = rng.randint(1, 1100)
        old = rng.randint(0, size)
        i = rng.randrange(size)
        root, old_root = mth(LEAVES[:size]), mth(LEAVES[:old])
        p = inclusion_proof(i, size, node)
        assert verify_inclusion(LEAVES[i], i, size, p, root)
        assert not verify_inclusion(leaf_hash(b"not in the tree"), i, size, p, root)
        c = consistency_proof(old, size, node)
        assert verify_consistency(old, size, old_root, root, c)
        if 0 < old < size:
            assert not verify_consistency(old, size, mth(LEAVES[1:old + 1]), root, c)
            bad = list(c)
            bad[0] = bytes(32)
            assert not verify_consistency(old, size, old_root, root, bad)


def test_tile_paths():
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(5) == "005"
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(-1, 3, 17) == "tile/entries/003.p/17"
    for level, idx, width in [(0, 0, 256), (2, 1234067, 5), (-1, 999, 255), (63, 1000, 1)]:
        assert parse_tile_path(tile_path(level, idx, width)) == (level, idx, width)


@pytest.mark.parametrize("bad", [
    "tile/0/1", "tile/0/0001", "tile/00/001", "tile/64/001", "tile/0/001.p/0", "tile/0/001.p/256",
    "tile/0/x000/001", "tile/0/../../etc/passwd", "tile/0/001/", "tile/0/x1/001", "tile/entries/001.p/01",
])
def test_bad_tile_paths(bad):
    with pytest.raises(MalformedError):
        parse_tile_path(bad)


def test_tiles_for_size_matches_spec_example():
    # tlog-tiles: "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial
    # level 0 tile of width 112, one full level 1 tile, one partial level 1 tile of width 17, and
    # one partial level 2 tile of width 1."
    t = tiles_for_size(70000)
    assert sum(1 for lvl, _, w in t if lvl == 0 and w == 256) == 273
    assert (0, 273, 112) in t
    assert (1, 0, 256) in t and (1, 1, 17) in t and (2, 0, 1) in t
    assert len(t) == 273 + 1 + 2 + 1


def test_tile_builder_streams_the_same_tiles_for_any_batching():
    rng = random.Random(3)
    size = 70000
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    store, pos = {}, 0
    tb = TileBuilder(0, {})
    while pos < size:
        chunk = leaves[pos:pos + rng.choice([1, 3, 255, 256, 700, 5000])]
        pos += len(chunk)
        store.update(tb.add_leaves(chunk))
        partials = tb.partials()
        store.update(partials)
        tb = TileBuilder(pos, {lvl: parse_hash_tile(d, w) for (lvl, _, w), d in partials.items()})
    assert set(tiles_for_size(size)) <= set(store)
    tiles = {(lvl, i): parse_hash_tile(store[(lvl, i, w)], w) for lvl, i, w in tiles_for_size(size)}
    th = TileHashes(size, tiles)
    assert th.mth(0, size) == root_of(leaves)
    assert th.mth(256, 512) == root_of(leaves[256:512])
    assert th.mth(65536, 65536 + 4096) == root_of(leaves[65536:65536 + 4096])


def test_bundles():
    entries = [bytes([i % 256]) * (i % 50) for i in range(300)]
    bb = BundleBuilder(0, [])
    full = bb.add_entries(entries)
    assert list(full) == [(-1, 0, 256)]
    assert parse_bundle(full[(-1, 0, 256)], 256) == entries[:256]
    (key, data), = bb.partial().items()
    assert key == (-1, 1, 44) and parse_bundle(data, 44) == entries[256:]
    with pytest.raises(MalformedError, match="holds 44 entries, want 45"):
        parse_bundle(data, 45)
    with pytest.raises(MalformedError, match="truncated"):
        parse_bundle(data[:-1], 44)
    with pytest.raises(MalformedError, match="over 4096"):
        parse_bundle(b"\xff\xff" + bytes(65535), 1)
    assert encode_bundle([b"ab"]) == b"\x00\x02ab"
