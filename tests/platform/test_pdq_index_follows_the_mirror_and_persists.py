"""The PDQ index follows the mirror's changes without a rebuild, never
answers a withdrawn hash, and survives a restart through its file next to
the mirror -- which is rebuilt, never trusted, when damaged or foreign.

The mirror's rows are written here as the mirror writes them in one
version's transaction: the active rows (``hashes``), their change rows
(``changes``) and the feed's new version.
"""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from federation.platform import mih, pdq_file, pdq_index
from federation.platform.lookup import Lookup, parse_query
from federation.platform.pdq_index import PdqIndex
from federation.store.mirror import Mirror


class Feed:
    """One followed feed of a real mirror database, written version by version."""

    def __init__(self, path, origin="o"):
        self.m = Mirror(path)
        self.m.conn.execute("INSERT INTO follows (name, origin, vkeys, urls, compact, digest)"
                            " VALUES ('f', ?, '', '', x'', x'')", (origin,))
        self.version = 0

    def apply(self, add=(), withdraw=()):
        self.version += 1
        c = self.m.conn
        c.execute("BEGIN")
        for v in add:
            c.execute("INSERT OR IGNORE INTO hashes VALUES (1,'pdq',?,'c','csam',?,0)", (v, self.version))
            c.execute("INSERT INTO changes (feed, version, action, hash_type, value, case_id, labels, time)"
                      " VALUES (1, ?, 'add', 'pdq', ?, 'c', 'csam', 0)", (self.version, v))
        for v in withdraw:
            c.execute("DELETE FROM hashes WHERE value=?", (v,))
            c.execute("INSERT INTO changes (feed, version, action, hash_type, value, case_id, labels, time)"
                      " VALUES (1, ?, 'withdraw', 'pdq', ?, 'c', '', 0)", (self.version, v))
        c.execute("UPDATE follows SET version=?, digest=?", (self.version, self.version.to_bytes(4, "big")))
        c.execute("COMMIT")

    def active(self) -> np.ndarray:
        rows = self.m.conn.execute("SELECT DISTINCT value FROM hashes").fetchall()
        return np.frombuffer(b"".join(v for (v,) in rows), dtype=np.uint8).reshape(-1, 32)


def brute(active: np.ndarray, queries: list[bytes], t: int) -> list[list[tuple[bytes, int]]]:
    out = []
    for q in queries:
        d = np.unpackbits(active ^ np.frombuffer(q, dtype=np.uint8), axis=1).sum(axis=1)
        out.append(sorted(((active[i].tobytes(), int(d[i])) for i in np.nonzero(d <= t)[0]),
                          key=lambda x: (x[1], x[0])))
    return out


def neighbours(rng, centre: bytes, count: int, most: int = 40) -> list[bytes]:
    out = []
    for _ in range(count):
        bits = np.unpackbits(np.frombuffer(centre, dtype=np.uint8))
        bits[rng.choice(256, int(rng.integers(0, most + 1)), replace=False)] ^= 1
        out.append(np.packbits(bits).tobytes())
    return out


def search_values(index, queries, t=31):
    return [[m.value for m in ms] for ms in index.search(queries, t)]


@pytest.fixture
def small_levels(monkeypatch):
    """Fold the tail and rebuild early, so a test walks every level."""
    monkeypatch.setattr(pdq_index, "TAIL_MAX", 8)
    monkeypatch.setattr(pdq_index, "RECENT_MIN", 40)


def test_adds_and_withdrawals_are_followed_exactly_without_a_full_rebuild(tmp_path, small_levels, monkeypatch):
    rng = np.random.default_rng(3)
    feed = Feed(tmp_path / "m.db")
    centres = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(6)]
    feed.apply(add=[rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(300)] + centres)
    index = PdqIndex(feed.m.conn)
    rebuilds = []
    monkeypatch.setattr(index, "rebuild", lambda: rebuilds.append(1) or PdqIndex.rebuild(index))
    queries = neighbours(rng, centres[0], 3, 10) + neighbours(rng, centres[1], 3, 10)
    for step in range(6):
        adds = neighbours(rng, centres[step % 6], 5)
        gone = [bytes(v) for v in feed.active()[rng.choice(len(feed.active()), 2, replace=False)]]
        feed.apply(add=adds, withdraw=gone)
        index.refresh()
        want = brute(feed.active(), queries, 31)
        assert search_values(index, queries) == [[v for v, _ in w] for w in want], step
        for v in gone:
            assert all(v not in got for got in search_values(index, [v], 0))
    assert len(index._recent) > 0 and not rebuilds  # followed by appends and small folds only
    feed.apply(add=neighbours(rng, centres[2], 60))
    index.refresh()
    assert rebuilds  # recent outgrew RECENT_MIN: one full rebuild, and still exact
    want = brute(feed.active(), queries, 31)
    assert search_values(index, queries) == [[v for v, _ in w] for w in want]


def test_a_withdrawn_then_re_added_hash_is_answered_once(tmp_path):
    feed = Feed(tmp_path / "m.db")
    h = bytes(range(32))
    feed.apply(add=[h])
    index = PdqIndex(feed.m.conn)
    feed.apply(withdraw=[h])
    index.refresh()
    assert index.search([h], 31) == [[]]
    feed.apply(add=[h])
    index.refresh()
    assert [(m.value, m.distance) for m in index.search([h], 31)[0]] == [(h, 0)]
    assert index.candidates([h], 0) == [[(h, 0)]]


def test_restart_loads_the_saved_index_and_replays_later_changes(tmp_path):
    rng = np.random.default_rng(4)
    feed = Feed(tmp_path / "m.db")
    centre = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    feed.apply(add=[rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(500)] + [centre])
    path = pdq_file.index_path(tmp_path / "m.db")
    first = PdqIndex(feed.m.conn, path)
    assert not first.loaded_from_file and path.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    later = neighbours(rng, centre, 4, 20)
    feed.apply(add=later, withdraw=[centre])  # after the file was saved
    again = PdqIndex(feed.m.conn, path)
    assert again.loaded_from_file
    want = brute(feed.active(), [centre], 31)
    assert search_values(again, [centre]) == [[v for v, _ in w] for w in want]
    assert set(later) <= set(search_values(again, [centre])[0]) and centre not in search_values(again, [centre])[0]


def _saved(tmp_path, origin="o", seed=5):
    rng = np.random.default_rng(seed)
    feed = Feed(tmp_path / "m.db", origin)
    feed.apply(add=[rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(400)])
    path = pdq_file.index_path(tmp_path / "m.db")
    PdqIndex(feed.m.conn, path)
    return feed, path


def _damage_body(path):
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x10
    path.write_bytes(bytes(raw))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _bad_magic(path):
    path.write_bytes(b"X" + path.read_bytes()[1:])


def _huge_header(path):
    raw = path.read_bytes()
    path.write_bytes(raw[:8] + (1 << 31).to_bytes(4, "big") + raw[12:])


def _header_not_json(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[8:12], "big")
    path.write_bytes(raw[:12] + b"\xff" * n + raw[12 + n:])


def _header_with(**fields):
    """A damage: the header's fields replaced (sizes and digest kept)."""
    def damage(path):
        raw = path.read_bytes()
        n = int.from_bytes(raw[8:12], "big")
        h = json.loads(raw[12:12 + n])
        h.update(fields)
        head = json.dumps(h).encode()
        path.write_bytes(raw[:8] + len(head).to_bytes(4, "big") + head + raw[12 + n:])
    damage.__name__ = f"_header_with_{'_'.join(fields)}"
    return damage


@pytest.mark.parametrize("damage", [_damage_body, _truncate, _bad_magic, _huge_header, _header_not_json,
                                    _header_with(cursor=1 << 70), _header_with(feeds={"\u00b2": ["o", 1, ""]}),
                                    _header_with(n=-1), _header_with(bucket_bits=[99] * 11)],
                         ids=lambda f: f.__name__)
def test_a_damaged_file_is_rebuilt_not_trusted(tmp_path, damage):
    feed, path = _saved(tmp_path)
    damage(path)
    with pytest.raises(pdq_file.StorageError):
        pdq_file.read(path)
    index = PdqIndex(feed.m.conn, path)
    assert not index.loaded_from_file
    probe = bytes(feed.active()[7])
    assert search_values(index, [probe], 0) == [[probe]]
    pdq_file.read(path)  # rewritten whole


def test_a_file_whose_digest_matches_but_ids_point_outside_is_refused(tmp_path):
    feed, path = _saved(tmp_path)
    table, basis = pdq_file.read(path)
    ids = table.ids.copy()
    ids[3] = len(table) + 5
    pdq_file.write(path, mih.Table(table.values, table.bucket_bits, table.starts, ids), basis)
    with pytest.raises(pdq_file.StorageError, match="not a value number"):
        pdq_file.read(path)
    assert not PdqIndex(feed.m.conn, path).loaded_from_file


def test_an_index_of_another_mirror_is_rebuilt(tmp_path):
    (a := tmp_path / "a").mkdir()
    (b := tmp_path / "b").mkdir()
    _, path_a = _saved(a, seed=6)
    feed_b, path_b = _saved(b, seed=7)
    path_b.write_bytes(path_a.read_bytes())  # same cursor and version numbers, other rows
    index = PdqIndex(feed_b.m.conn, path_b)
    assert not index.loaded_from_file
    assert len(index) == len(feed_b.active())
    probe = bytes(feed_b.active()[0])
    assert search_values(index, [probe], 0) == [[probe]]


def test_an_index_of_a_state_the_mirror_never_reached_is_rebuilt(tmp_path):
    feed, path = _saved(tmp_path)
    table, basis = pdq_file.read(path)
    ahead = pdq_file.Basis(basis.cursor, basis.anchor, {1: ("o", 99, basis.feeds[1][2])})
    pdq_file.write(path, table, ahead)
    assert not PdqIndex(feed.m.conn, path).loaded_from_file
    other = pdq_file.Basis(basis.cursor, basis.anchor, {1: ("elsewhere", 1, basis.feeds[1][2])})
    pdq_file.write(path, table, other)
    assert not PdqIndex(feed.m.conn, path).loaded_from_file
    pdq_file.write(path, table, basis)
    assert PdqIndex(feed.m.conn, path).loaded_from_file


def test_a_one_shot_reader_does_not_write_the_file(tmp_path):
    feed = Feed(tmp_path / "m.db")
    feed.apply(add=[bytes(32)])
    path = pdq_file.index_path(tmp_path / "m.db")
    PdqIndex(feed.m.conn, path, save=False)
    assert not path.exists()


def test_the_serving_lookup_keeps_the_index_next_to_the_mirror_and_a_one_shot_lookup_reads_it(tmp_path):
    feed = Feed(tmp_path / "mirror.db")
    h = bytes(range(32))
    feed.apply(add=[h])
    path = tmp_path / "mirror.db.pdq-index"
    one_shot = Lookup(tmp_path / "mirror.db")
    assert not path.exists() and not one_shot.index.loaded_from_file
    one_shot.close()
    serving = Lookup(tmp_path / "mirror.db", keep_index=True)
    assert path.exists() and not serving.index.loaded_from_file
    serving.close()
    again = Lookup(tmp_path / "mirror.db")
    assert again.index.loaded_from_file
    (item,) = again.answer([parse_query({"type": "pdq", "hash": h.hex()})])
    assert [m["hash"] for m in item["matches"]] == [h.hex()]
    again.close()
