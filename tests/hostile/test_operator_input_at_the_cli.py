"""Operator input at the CLI: one clear error line and exit code, never a traceback.

The real CLI as a subprocess (``python -m federation``), each run bounded in
time. Issue 10, section 4: batches that crashed ``publish`` and feed names
that reached a path unchecked.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from federation.core.note import Signer

MD5 = "9e107d9d372bb6826bd81d3542a419d6"


def cli(home: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "federation", "--home", str(home), *args], input=stdin,
                          capture_output=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def assert_clean_error(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    err = r.stderr.decode()
    assert r.returncode == code, (r.returncode, err)
    assert "Traceback" not in err, err
    assert err.startswith("error (input): "), err
    for w in words:
        assert w in err, err


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    r = cli(home, "feed", "create", "tid", "--origin", "clearinghouse.test/feeds/tid")
    assert r.returncode == 0, r.stderr
    return home


def test_publish_non_utf8_csv_is_an_input_error(home, tmp_path):
    batch = tmp_path / "latin1.csv"
    batch.write_bytes(b"op,type,hash,case,labels,reason\nadd,md5,%s,caf\xe9,csam,\n" % MD5.encode())
    assert_clean_error(cli(home, "publish", "tid", str(batch)), 2, "line 2", "UTF-8")


def test_publish_csv_with_a_bom_reads_the_header(home, tmp_path):
    batch = tmp_path / "excel.csv"
    batch.write_bytes(b"\xef\xbb\xbfop,type,hash,case,labels,reason\nadd,md5,%s,c1,csam,\n" % MD5.encode())
    r = cli(home, "publish", "tid", str(batch))
    assert r.returncode == 0, r.stderr.decode()
    assert b"1 adds" in r.stdout


def test_publish_jsonl_with_a_5000_digit_integer_is_an_input_error(home):
    line = b'{"op": "add", "type": "md5", "hash": "%s", "case": "c1", "labels": %s}\n' % (MD5.encode(), b"9" * 5000)
    assert_clean_error(cli(home, "publish", "tid", "-", "--format", "jsonl", stdin=line), 2, "line 1")


@pytest.mark.parametrize("name", ["a/b c", "..", ".", "../escape", "x" * 65, "tab\tname", "new\nline"])
def test_feed_create_refuses_a_name_that_is_not_a_feed_name(tmp_path, name):
    home = tmp_path / "h"
    assert_clean_error(cli(home, "feed", "create", name), 2, "feed name")
    private = home / "private"
    assert not private.exists() or list(private.rglob("*")) == [], list(private.rglob("*"))
    assert not (home / "escape.key").exists()


def test_follow_refuses_a_name_that_is_not_a_feed_name(tmp_path):
    vkey = Signer.generate("o.example/x").vkey
    r = cli(tmp_path / "h", "follow", "a/b", "--url", "http://127.0.0.1:9/feeds/x/", "--origin", "o.example/x",
            "--vkey", vkey)
    assert_clean_error(r, 2, "feed name")
