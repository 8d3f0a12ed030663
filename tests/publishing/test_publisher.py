"""Publisher: versions, crash safety, key files."""
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from federation.core.checkpoint import open_checkpoint
from federation.core.entries import Add, Withdraw
from federation.core.errors import InputError
from federation.core.layout import tiles_for_size
from federation.core.merkle import leaf_hash, root_of
from federation.core.note import Signer
from federation.core.tiles import parse_bundle
from federation.node.keys import load_signer, write_new_key
from federation.store.publisher import Publisher

ORIGIN = "example.org/feeds/t"


def adds(n, case="c", start=0):
    return [Add("md5", (start + i).to_bytes(16, "big"), f"{case}{(start + i) % 7}", ("x",), 0) for i in range(n)]


@pytest.fixture
def pub(tmp_path):
    p = Publisher(tmp_path / "pub.db")
    s = Signer.generate(ORIGIN)
    p.create_feed("t", ORIGIN, s)
    yield p, s
    p.close()


def state(p):
    f = p.feed("t")
    tiles = p.conn.execute("SELECT level, idx, width, data FROM tiles ORDER BY 1,2,3").fetchall()
    rows = p.conn.execute("SELECT * FROM hashes ORDER BY 2,3,4").fetchall()
    return f, tiles, rows


def test_versions_and_tiles_are_complete(pub):
    p, s = pub
    r1 = p.publish("t", adds(300), s)
    r2 = p.publish("t", [Withdraw("hash_error", 0, case="c3")], s)
    assert (r1.version, r1.size, r2.version) == (1, 301, 2)
    assert r2.count == 300 - len([i for i in range(300) if i % 7 == 3])
    f = p.feed("t")
    cp = open_checkpoint(f.checkpoint, ORIGIN, [s.verifier]).checkpoint
    assert cp.size == f.size == r2.size
    # every tile the size needs exists, and the bundles hash to the signed root
    for level, idx, width in tiles_for_size(f.size):
        assert p.tile(f.id, level, idx, width) is not None
    leaves = []
    for idx in range((f.size + 255) // 256):
        width = min(256, f.size - idx * 256)
        leaves += [leaf_hash(e) for e in parse_bundle(p.tile(f.id, -1, idx, width), width)]
    assert root_of(leaves) == cp.root


def test_failed_batch_publishes_nothing(pub):
    p, s = pub
    p.publish("t", adds(10), s)
    before = state(p)

    def ops():
        yield from adds(40000, start=100)  # past one streaming chunk: tiles were already written
        raise InputError("line 40001: bad hash")

    with pytest.raises(InputError, match="40001"):
        p.publish("t", ops(), s)
    assert state(p) == before
    r = p.publish("t", adds(5, start=10), s)
    assert r.version == 2


def test_unknown_withdrawal_refused_unless_allowed(pub):
    p, s = pub
    p.publish("t", adds(3), s)
    before = state(p)
    with pytest.raises(InputError, match="matches no active hash"):
        p.publish("t", [Withdraw("hash_error", 0, "md5", bytes(15) + b"\x99")], s)
    assert state(p) == before
    r = p.publish("t", [Withdraw("hash_error", 0, "md5", bytes(15) + b"\x99")], s, allow_unknown_withdrawals=True)
    assert r.no_effect == 1 and r.count == 3


def test_a_withdrawal_repeated_in_one_batch_is_not_taken_for_a_typo(pub):
    """The typo check refuses withdrawals that match nothing; one whose target
    an earlier op of the same batch already withdrew is a repeat, and the
    batch goes through. A real typo in the same batch is still refused."""
    p, s = pub
    p.publish("t", adds(14), s)  # cases c0..c6, two hashes each
    h = (3).to_bytes(16, "big")  # in case c3
    repeat = [Withdraw("hash_error", 0, "md5", h), Withdraw("hash_error", 0, "md5", h),
              Withdraw("submitter_request", 0, case="c3"), Withdraw("submitter_request", 0, case="c3"),
              Withdraw("hash_error", 0, "md5", (10).to_bytes(16, "big"))]  # c3's other hash, withdrawn with the case
    before = state(p)
    with pytest.raises(InputError, match=f"md5 {(99).to_bytes(16, 'big').hex()} matches no active hash"):
        p.publish("t", repeat + [Withdraw("hash_error", 0, "md5", (99).to_bytes(16, "big"))], s)
    assert state(p) == before
    r = p.publish("t", repeat, s)
    assert r.count == 12 and r.withdrawals == 5 and r.no_effect == 3


def test_empty_batch_and_wrong_key_refused(pub):
    p, s = pub
    with pytest.raises(InputError, match="empty"):
        p.publish("t", [], s)
    with pytest.raises(InputError, match="is not the key"):
        p.publish("t", adds(1), Signer.generate(ORIGIN))
    with pytest.raises(InputError, match="no feed"):
        p.publish("nope", adds(1), s)


def test_sigkill_during_publish_leaves_previous_version(tmp_path):
    key = tmp_path / "k" / "t.key"
    signer = write_new_key(key, ORIGIN)
    p = Publisher(tmp_path / "pub.db")
    p.create_feed("t", ORIGIN, signer)
    p.publish("t", adds(100), signer)
    before = state(p)
    p.close()
    code = f"""
import sys
from pathlib import Path
sys.path.insert(0, {os.getcwd()!r})
from federation.store.publisher import Publisher
from federation.node.keys import load_signer
from federation.core.entries import Add
def ops():
    for i in range(10**7):
        if i == 30000:
            print("started", flush=True)
        yield Add("md5", (10**6 + i).to_bytes(16, "big"), "k", (), 0)
Publisher(Path({str(tmp_path / "pub.db")!r})).publish("t", ops(), load_signer(Path({str(key)!r})))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"started"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    p = Publisher(tmp_path / "pub.db")
    assert state(p) == before
    assert p.publish("t", adds(1, start=500), signer).version == 2


def test_key_file_mode_and_no_overwrite(tmp_path):
    path = tmp_path / "keys" / "a.key"
    s = write_new_key(path, ORIGIN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_signer(path).vkey == s.vkey
    with pytest.raises(InputError, match="refusing to overwrite"):
        write_new_key(path, ORIGIN)
    os.chmod(path, 0o644)
    with pytest.raises(InputError, match="readable by others"):
        load_signer(path)


def test_concurrent_reader_sees_whole_versions(pub, tmp_path):
    p, s = pub
    reader = sqlite3.connect(f"file:{tmp_path / 'pub.db'}?mode=ro", uri=True)
    p.publish("t", adds(1000), s)
    size, cp = reader.execute("SELECT size, checkpoint FROM feeds").fetchone()
    # tiles of the size the checkpoint names are all present for the reader
    fid = reader.execute("SELECT id FROM feeds").fetchone()[0]
    for level, idx, width in tiles_for_size(size):
        assert reader.execute("SELECT 1 FROM tiles WHERE feed=? AND level=? AND idx=? AND width=?",
                              (fid, level, idx, width)).fetchone()
