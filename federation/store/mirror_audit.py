"""Audit of a followed feed: recompute its state from the mirror's own rows.

``federation verify`` and the demo run it. Read-only: the active set is
re-hashed through ``ActiveSet`` and the log replayed from the stored entry
bundles through ``TileStore`` (from the start of the log or, after a
snapshot bootstrap, from its base), and both are compared with the head the
``follows`` row states and with the last seal.
"""
from __future__ import annotations

import sqlite3

from federation.core import entries as E
from federation.core.checkpoint import parse_checkpoint_body
from federation.core.merkle import CompactRange, leaf_hash
from federation.core.note import parse_note
from federation.core.tiles import parse_bundle
from federation.store.activeset import ActiveSet
from federation.store.tilestore import TileStore


def audit_follow(conn: sqlite3.Connection, f) -> list[str]:
    """Recompute digest, count and root of followed feed ``f`` (a
    ``mirror.Follow``) from the mirror's own rows.

    Returns a list of problems (empty when the mirror is consistent).
    """
    problems = []
    digest, count = ActiveSet(conn, f.id).recompute_digest()
    if count != f.count:
        problems.append(f"active rows: {count}, head says {f.count}")
    if digest.digest() != f.digest:
        problems.append("state digest recomputed from rows differs from the applied seal's digest")
    # Root: replay every stored entry bundle into a compact range, from the
    # start of the log or, after a snapshot bootstrap, from its base.
    tiles = TileStore(conn, f.id)
    base = f.base_size
    cr = CompactRange.from_bytes(f.base_compact) if base else CompactRange()
    last_seal = None
    first = (base - 1) // 256 if base else 0  # the bundle holding the base's seal, if stored
    for index in range(first, (f.applied_size + 255) // 256):
        width = min(256, f.applied_size - index * 256)
        data = tiles.get(-1, index, width)
        if data is None:
            if (index + 1) * 256 <= base:
                continue  # wholly below the snapshot: never fetched
            problems.append(f"entry bundle {index} (width {width}) missing")
            break
        for offset, raw in enumerate(parse_bundle(data, width)):
            if index * 256 + offset >= base:
                cr.append(leaf_hash(raw))
            entry = E.decode(raw)
            if isinstance(entry, E.Seal):
                last_seal = entry
    else:
        if cr.root() != CompactRange.from_bytes(f.compact).root():
            problems.append("Merkle root recomputed from stored entries differs from the stored tree")
        if f.checkpoint is not None:
            cp = parse_checkpoint_body(parse_note(f.checkpoint).text)
            if cp.size == f.applied_size and cp.root != cr.root():
                problems.append("Merkle root recomputed from stored entries differs from the signed checkpoint")
        if last_seal is not None and (last_seal.digest != digest.digest() or last_seal.count != count):
            problems.append(f"rows disagree with the last seal (version {last_seal.version})")
    return problems
