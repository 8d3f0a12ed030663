"""A static export never writes outside its directory, whatever names an old
database holds, and fails on a full disk or a bad directory with one error
line, not a traceback. The CLI as a user runs it, SQLite files under tmp_path.
"""
from __future__ import annotations

import os

import pytest

from support.clearinghouse import cli

pytestmark = pytest.mark.timeout(120)


# ---- 3. members-only feeds never leak -------------------------------------------------


# ---- 4. hostile input never kills a follower ------------------------------------------


# ---- 1. a matcher never answers from a mirror it cannot stand behind -----------------


def _limit_file_size():
    import resource
    # Writes past 48 KiB fail (EFBIG), as on a full disk: SQLite's 32 KiB -shm still
    # fits, the 68 KB snapshot file export copies does not.
    resource.setrlimit(resource.RLIMIT_FSIZE, (48 << 10, 48 << 10))


@pytest.mark.parametrize("where", ["out-under-a-file", "full-disk"])
def test_export_on_a_full_disk_or_a_bad_directory_is_one_error_line(tmp_path, where):
    home = tmp_path / "clearinghouse"
    assert cli(home, "feed", "create", "tid", "--access", "public").returncode == 0
    batch = tmp_path / "b.csv"
    batch.write_text("op,type,hash,case\n" + "".join(f"add,md5,{os.urandom(16).hex()},c-1\n" for _ in range(4000)))
    assert cli(home, "publish", "tid", str(batch)).returncode == 0
    assert cli(home, "snapshot", "write", "tid").returncode == 0
    if where == "out-under-a-file":
        (tmp_path / "afile").write_text("x")
        r = cli(home, "export", str(tmp_path / "afile" / "www"))
    else:
        r = cli(home, "export", str(tmp_path / "www"), preexec_fn=_limit_file_size)
    assert "Traceback" not in r.stderr, r.stderr[-600:]
    assert r.returncode in (2, 4) and "error (" in r.stderr, (r.returncode, r.stderr)


# ---- 2. freshness without witnesses ---------------------------------------------------


def test_export_never_writes_outside_out_whatever_names_an_old_database_holds(tmp_path):
    import sqlite3
    home = tmp_path / "clearinghouse"
    assert cli(home, "feed", "create", "tid", "--access", "public").returncode == 0
    batch = tmp_path / "b.csv"
    batch.write_text(f"op,type,hash,case\nadd,md5,{'ab' * 16},c-1\n")
    assert cli(home, "publish", "tid", str(batch)).returncode == 0
    conn = sqlite3.connect(home / "publisher.db")  # as 'feed create ..' left it before issue 10
    conn.execute("UPDATE feeds SET name='..'")
    conn.commit()
    conn.close()
    out = tmp_path / "site" / "www"
    out.mkdir(parents=True)
    cli(home, "export", str(out))
    outside = sorted(p.name for p in (tmp_path / "site").iterdir() if p.name != "www")
    assert not outside, f"export wrote {outside} next to {out}"
