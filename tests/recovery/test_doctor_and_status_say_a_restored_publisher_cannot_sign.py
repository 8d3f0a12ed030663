"""Review (issue 15): after an older ``publisher.db`` is restored, every
signing refuses (the served-checkpoint record is ahead), yet ``federation
status`` shows the feed as an ordinary published feed and ``federation
doctor`` prints only OK lines and exits 0. The operator following the
runbook's last step ("Check: federation status shows the version you last
published") gets no hint; the first sign of trouble is a refused publish.

What should hold: ``doctor`` (and ``status``) name the feed as unable to
sign and point to ``feed recover``.
"""
from __future__ import annotations

import shutil

from support.cli import write_batch
from support.disk import cli


def test_doctor_and_status_say_a_restored_publisher_cannot_sign(tmp_path):
    home = tmp_path / "home"
    cli(home, "feed", "create", "tid", "--origin", "ch.example/feeds/tid", "--access", "public")
    cli(home, "publish", "tid", str(write_batch(tmp_path / "a.csv", 20, "a")))
    cli(home, "backup", str(tmp_path / "bk"))
    cli(home, "publish", "tid", str(write_batch(tmp_path / "b.csv", 20, "b")))
    for suffix in ("-wal", "-shm"):
        (home / f"publisher.db{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "bk" / "publisher.db", home / "publisher.db")  # the runbook's step 2
    refused = cli(home, "publish", "tid", str(write_batch(tmp_path / "c.csv", 1, "c")), check=False)
    assert refused.returncode == 5  # the guard holds ...
    doctor = cli(home, "doctor", check=False)
    status = cli(home, "status", check=False)
    assert doctor.returncode != 0 and "feed recover" in doctor.stdout + doctor.stderr, doctor.stdout
    assert "feed recover" in status.stdout + status.stderr, status.stdout
