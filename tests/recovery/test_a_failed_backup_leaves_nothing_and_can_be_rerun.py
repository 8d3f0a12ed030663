"""Review (issue 15): a backup that fails (a database it cannot open: a
damaged file, a full target disk) leaves a ``.partial-*.db`` file in OUT
(``node/backup.py`` ``_copy`` only cleans up after ``sqlite3.Error`` and
``OSError``, not our own ``StorageError`` from ``connect``), and OUT is
then "not an empty directory": the same command (a cron line with
``$(date +%F)``) is refused for the rest of the day.

What should hold: a failed backup leaves no temporary file behind, so the
same OUT can be used once the cause is fixed.
"""
from __future__ import annotations

import shutil

from support.disk import cli


def test_a_failed_backup_leaves_nothing_and_can_be_rerun(tmp_path):
    home = tmp_path / "home"
    cli(home, "feed", "create", "tid", "--origin", "ch.example/feeds/tid", "--access", "public")
    good = tmp_path / "publisher.db.good"
    shutil.copy(home / "publisher.db", good)
    (home / "publisher.db").write_bytes(b"\x00" * 8192)  # a damaged file (a bad disk)
    out = tmp_path / "backup"
    p = cli(home, "backup", str(out), check=False)
    assert p.returncode == 4 and "Traceback" not in p.stderr, p.stderr
    assert list(out.iterdir()) == [] if out.exists() else True, list(out.iterdir())
    shutil.copy(good, home / "publisher.db")  # the cause is fixed
    p = cli(home, "backup", str(out), check=False)
    assert p.returncode == 0, p.stderr
    assert (out / "manifest.json").exists()


def test_a_backup_killed_mid_copy_does_not_block_the_next_one(tmp_path):
    """A backup killed before it could clean up leaves a ``.partial-*.db``;
    the next backup into the same OUT removes it (only our litter: any other
    file still makes OUT refused)."""
    home = tmp_path / "home"
    cli(home, "feed", "create", "tid", "--origin", "ch.example/feeds/tid", "--access", "public")
    out = tmp_path / "backup"
    out.mkdir()
    (out / ".partial-abc123.db").write_bytes(b"half a copy")
    p = cli(home, "backup", str(out), check=False)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in out.iterdir()) == ["manifest.json", "publisher.db"]
    other = tmp_path / "other"
    other.mkdir()
    (other / ".partial-x.db").write_bytes(b"")
    (other / "notes.txt").write_text("mine")
    p = cli(home, "backup", str(other), check=False)
    assert p.returncode == 2 and "not an empty directory" in p.stderr, p.stderr
