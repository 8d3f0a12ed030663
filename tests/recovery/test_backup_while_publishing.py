"""Issue 15, item 1: ``federation backup OUT`` copies a running node's
databases consistently. A writer thread publishes version after version
while the real CLI backs the home up; every copy opens, its served
checkpoint is the root of the tiles it holds, and its manifest says so."""
from __future__ import annotations

import base64
import json
import os
import threading

from federation.core.checkpoint import parse_checkpoint_body
from federation.core.layout import tile_width
from federation.core.note import parse_note
from federation.core.tiles import TileHashes, needed_tiles, parse_hash_tile
from federation.store.db import connect
from federation.store.publisher import Publisher, feed_id, served_feeds
from federation.store.tilestore import TileStore

from support.clearinghouse import NAME, Clearinghouse, cli, follow
from support.feeds import adds


def _check_copy(db) -> dict:
    """The copy's feed row, after checking its checkpoint is the root of its own tiles."""
    conn = connect(db, readonly=True)
    try:
        (name, origin, vkey, size, version, pending, note), = served_feeds(conn)
        cp = parse_checkpoint_body(parse_note(note).text)
        assert cp.size == size
        store = TileStore(conn, feed_id(conn, name))
        tiles = {}
        for level, index, _ in needed_tiles(size, lambda th: th.mth(0, size)):
            w = tile_width(level, index, size)
            tiles[(level, index)] = parse_hash_tile(store.get(level, index, w), w)
        assert TileHashes(size, tiles).mth(0, size) == cp.root  # no checkpoint without its tiles
        return dict(name=name, size=size, version=version, root=base64.b64encode(cp.root).decode())
    finally:
        conn.close()


def test_backup_of_a_node_publishing_meanwhile_is_consistent(tmp_path):
    ch = Clearinghouse(tmp_path / "node")
    ch.publish(["9e107d9d372bb6826bd81d3542a419d6"])
    follow(tmp_path / "node", "http://127.0.0.1:9/feeds/tid/", ch.vkey)  # a mirror.db too (never synced)
    stop = threading.Event()
    published = []

    def writer():
        pub = Publisher(ch.home.publisher_db)
        try:
            while not stop.is_set():
                published.append(pub.publish(NAME, adds(300, case=f"c{len(published)}"), ch.signer).version)
        finally:
            pub.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        outs = []
        for i in range(3):
            out = tmp_path / f"backup-{i}"
            r = cli(ch.home.root, "backup", str(out))
            assert r.returncode == 0, r.stderr
            assert "private keys are not in this backup" in r.stderr
            outs.append(out)
    finally:
        stop.set()
        t.join(30)
    assert len(published) >= 2  # the backups really ran while versions were committed

    for out in outs:
        manifest = json.loads((out / "manifest.json").read_text())
        assert sorted(os.listdir(out)) == ["manifest.json", "mirror.db", "publisher.db"]  # no key, no -wal
        for f in ("manifest.json", "mirror.db", "publisher.db"):
            assert os.stat(out / f).st_mode & 0o777 == 0o600
        row = _check_copy(out / "publisher.db")
        (feed,) = manifest["published"]
        assert (feed["name"], feed["size"], feed["version"], feed["checkpoint_root"]) == \
            (row["name"], row["size"], row["version"], row["root"])
        assert feed["checkpoint_size"] == row["size"]
        assert [f["name"] for f in manifest["followed"]] == [NAME]
        assert manifest["tool"].startswith("federation ") and manifest["created"] > 0
        assert manifest["files"]["publisher.db"]["bytes"] == os.stat(out / "publisher.db").st_size


def test_backup_refuses_a_target_that_is_not_new(tmp_path):
    ch = Clearinghouse(tmp_path / "node")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    r = cli(ch.home.root, "backup", str(tmp_path / "used"))
    assert r.returncode == 2 and "not an empty directory" in r.stderr
    r = cli(ch.home.root, "backup", str(ch.home.root / "inside"))
    assert r.returncode == 2 and "inside the node home" in r.stderr
    r = cli(tmp_path / "missing", "backup", str(tmp_path / "b"))
    assert r.returncode == 5
