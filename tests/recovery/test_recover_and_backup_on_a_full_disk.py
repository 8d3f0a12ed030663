"""``feed recover`` and ``backup`` on a full disk: one storage error (exit 4)
naming the file being written and saying to check the free space; nothing
half-written is left to be mistaken for a result."""
from __future__ import annotations

import pytest

from support.disk import acli, assert_clean_storage_failure, batch, cli

pytestmark = pytest.mark.timeout(120)


async def test_recover_on_a_full_disk_names_the_database_and_the_free_space(node, tmp_path):
    await acli(node.pub, "publish", "tid", str(batch(tmp_path / "a.csv", 3000, "a")))
    for suffix in ("", "-wal", "-shm"):
        (node.pub / f"publisher.db{suffix}").unlink(missing_ok=True)
    p = await acli(node.pub, "feed", "recover", "tid", "--from", node.url, "--access", "public",
                   max_file_bytes=64 * 1024, check=False)
    assert_clean_storage_failure(p)
    assert "publisher.db" in p.stderr and "free space" in p.stderr, p.stderr
    r = await acli(node.pub, "feed", "recover", "tid", "--from", node.url, "--access", "public")
    assert "recovered tid" in r.stdout, r.stdout


def test_backup_on_a_full_disk_names_the_copy_and_the_free_space(tmp_path):
    home = tmp_path / "home"
    cli(home, "feed", "create", "tid", "--origin", "ch.example/feeds/tid", "--access", "public")
    cli(home, "publish", "tid", str(batch(tmp_path / "a.csv", 3000, "a")))
    out = tmp_path / "backup"
    p = cli(home, "backup", str(out), max_file_bytes=64 * 1024, check=False)
    assert_clean_storage_failure(p)
    assert str(out / "publisher.db") in p.stderr and "free space" in p.stderr, p.stderr
    assert list(out.iterdir()) == []
    assert cli(home, "backup", str(out)).returncode == 0
