"""'federation import FILE --publish FEED' adds to a feed and withdraws what the file says is gone.

Unlike ``publish --full-list`` (the file *is* the feed), an import leaves the
feed's other records alone. Also: the truncation guard of a full list, and a
diff refused at commit when the feed moved since it was taken.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from federation.core.errors import StorageError
from federation.core.imports.formats import read_claims
from federation.core.note import Signer
from federation.node.home import Home
from federation.node.keys import load_signer
from federation.store.activeset import ActiveSet
from federation.store.fulllist import ListDiff
from federation.store.publisher import Publisher

from support.feeds import adds

DATA = Path(__file__).parent / "data"


def run(home, *args):
    env = dict(os.environ, FEDERATION_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "federation", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def active(db: Path, feed: str = "tid") -> set[tuple]:
    pub = Publisher(db)
    try:
        fid = pub.feed(feed).id
        return {(t, v.hex(), c) for t, v, c, _labels in ActiveSet(pub.conn, fid).records()}
    finally:
        pub.close()


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "h"
    assert run(h, "feed", "create", "tid", "--origin", "example.org/tid").returncode == 0
    return h


def test_stopncii_import_withdraws_a_case_whose_status_changed(home, tmp_path):
    h1, h3 = "1" * 64, "3" * 64
    first = tmp_path / "first.jsonl"
    first.write_text('{"lastModtimestamp": 1, "signalType": "ImagePDQ", "hashValue": "' + h1 + '", '
                     '"hashStatus": "Active", "caseNumbers": {"SN-1": "Active", "SN-2": "Active"}}\n')
    p = run(home, "import", str(first), "--publish", "tid")
    assert p.returncode == 0 and "version 1: 2 adds, 0 withdrawals" in p.stdout, p.stdout + p.stderr
    # Unrelated records stay: an import is a delta.
    other = tmp_path / "other.csv"
    other.write_text("op,type,hash,case,labels,reason\nadd,md5," + "9" * 32 + ",own-case,csam,\n")
    assert run(home, "publish", "tid", str(other)).returncode == 0
    # The day's export: h1's SN-2 now Withdrawn (in a newer record), h3 new.
    p = run(home, "import", str(DATA / "stopncii.jsonl"), "--publish", "tid")
    assert p.returncode == 0, p.stdout + p.stderr
    assert active(Home(home).publisher_db) == {
        ("pdq", h1, "SN-1"), ("pdq", h3, "SN-1"), ("pdq", h3, "SN-3"), ("md5", "4" * 32, "stopncii"),
        ("md5", "9" * 32, "own-case"),  # not in the file, still active
    }
    # h2's withdrawal matched nothing active: not published (no unknown withdrawals).
    assert "3 adds, 0 relabels, 1 withdrawals" in p.stdout


def test_full_list_that_would_withdraw_too_much_is_refused(home, tmp_path):
    assert run(home, "publish", "tid", "--full-list", str(DATA / "ncmec_day1.xml")).returncode == 0
    small = tmp_path / "truncated.xml"
    text = (DATA / "ncmec_day1.xml").read_text()
    small.write_text(text[:text.index("<videos")] + "</queryResult>\n")  # the videos lost
    small.write_text(small.read_text().replace("<md5>abababababababababababababababab</md5>", "")
                     .replace("<sha1>e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5</sha1>", ""))  # 3 of 8 gone
    p = run(home, "publish", "tid", "--full-list", str(small))
    assert p.returncode == 2 and "over --max-withdrawals 25%" in p.stderr, p.stdout + p.stderr
    assert "Nothing was published" in p.stderr
    p = run(home, "publish", "tid", "--full-list", str(small), "--max-withdrawals", "50")
    assert p.returncode == 0 and "3 withdrawals" in p.stdout, p.stdout + p.stderr


def test_a_diff_is_refused_when_the_feed_moved_since(home, tmp_path):
    h = Home(home)
    with ListDiff(h.publisher_db, "tid", "full", tmp_path / "scratch") as d, \
            (DATA / "ncmec_day1.xml").open("rb") as f:
        d.load(read_claims(f, "day1.xml", "ncmec"))
        d.diff()
        assert d.summary.version == 0 and d.summary.adds == 8
        pub = Publisher(h.publisher_db)
        try:
            signer = load_signer(h.feed_key("tid", pub.feed("tid").key_file))
            pub.publish("tid", adds(1), signer)  # someone publishes between the diff and its publish
            with pytest.raises(StorageError, match="published to since the diff"):
                pub.publish("tid", d.ops(), signer, in_txn=d.check_version)
            assert pub.feed("tid").version == 1 and pub.feed("tid").count == 1
        finally:
            pub.close()
    assert isinstance(signer, Signer)


def test_import_out_writes_a_batch_that_publishes_the_same_as_import_publish(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for h in (a, b):
        assert run(h, "feed", "create", "tid", "--origin", "example.org/tid").returncode == 0
    out = tmp_path / "batch.jsonl"
    p = run(a, "import", str(DATA / "ncmec_day1.xml"), "--out", str(out), "--label", "csam")
    assert p.returncode == 0 and f"wrote 9 operations to {out}" in p.stdout, p.stdout + p.stderr
    assert not (tmp_path / "batch.jsonl.part").exists() and not list(tmp_path.glob(".list-diff-*"))
    # The deleted entry is a whole-case withdrawal in the batch: publishing it needs
    # --allow-unknown-withdrawals on a feed that never held the case.
    p = run(a, "publish", "tid", str(out), "--allow-unknown-withdrawals")
    assert p.returncode == 0, p.stdout + p.stderr
    p = run(b, "import", str(DATA / "ncmec_day1.xml"), "--publish", "tid", "--label", "csam")
    assert p.returncode == 0, p.stdout + p.stderr
    assert active(Home(a).publisher_db) == active(Home(b).publisher_db) and len(active(Home(b).publisher_db)) == 8
