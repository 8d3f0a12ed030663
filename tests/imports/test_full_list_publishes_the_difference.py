"""'federation publish tid --full-list export.xml' turns a daily full export into a delta feed.

Issue 13, "Done when" bullet 3, through the real CLI and a real server on
loopback: day 1's NCMEC export is published whole; day 2's changed export
publishes exactly the difference, and the platform's mirror sees exactly that
difference in its change stream (``federation changes``). Fixtures:
``data/ncmec_day1.xml`` and ``data/ncmec_day2.xml`` (their comments list
what changes).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
MD5_A, MD5_C, MD5_E = "a" * 32, "c" * 32, "e" * 32
SHA1_A = "a1" * 20
PDQ_A = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
PDQ_D = "0f" * 32


def run(home, *args, check=True, timeout=60):
    env = dict(os.environ, FEDERATION_HOME=str(home))
    p = subprocess.run([sys.executable, "-m", "federation", *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"federation {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """A clearinghouse (feed tid, public) served by 'federation serve' on loopback."""
    pub_home = tmp_path / "clearinghouse"
    out = run(pub_home, "feed", "create", "tid", "--origin", "127.0.0.1/feeds/tid", "--access", "public").stdout
    vkey = next(line.split()[1] for line in out.splitlines() if line.startswith("vkey:"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "federation", "serve", "--port", str(port)],
                              env=dict(os.environ, FEDERATION_HOME=str(pub_home)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("server did not start")
        yield pub_home, vkey, url
    finally:
        server.terminate()
        server.wait(timeout=10)


def changes(home, after: int) -> list[dict]:
    return [json.loads(line) for line in run(home, "changes", "tid", "--after", str(after), "--limit", "1000")
            .stdout.splitlines()]


def keyed(chs: list[dict]) -> set[tuple]:
    return {(c["action"], c["type"], c["hash"], c["case"]) for c in chs}


def test_second_export_publishes_exactly_the_difference(served, tmp_path):
    pub_home, vkey, url = served
    platform = tmp_path / "platform"
    run(platform, "follow", "tid", "--url", url + "/feeds/tid/", "--origin", "127.0.0.1/feeds/tid", "--vkey", vkey)

    day1 = run(pub_home, "publish", "tid", "--full-list", str(DATA / "ncmec_day1.xml"), "--label", "csam").stdout
    assert "8 adds, 0 relabels, 0 withdrawals, 0 unchanged" in day1 and "version 1" in day1
    assert "version 0 -> 1" in run(platform, "sync").stdout
    first = changes(platform, 0)
    assert len(first) == 8 and {c["action"] for c in first} == {"add"}
    # The awkward cases resolved as the newest statement says.
    cases = {(c["type"], c["hash"], c["case"]) for c in first}
    assert ("md5", MD5_A, "ncmec-42-img-a") in cases and ("md5", MD5_A, "ncmec-43-img-a") in cases  # two cases
    assert ("md5", MD5_C, "ncmec-42-img-c") in cases           # re-added after an older deletion
    assert not any(c["case"] == "ncmec-42-img-b" for c in first)  # deleted after (newer than) its addition

    # The dry run of day 2 says what would change and publishes nothing.
    dry = run(pub_home, "publish", "tid", "--full-list", str(DATA / "ncmec_day2.xml"), "--label", "csam",
              "--dry-run").stdout
    assert "2 adds, 3 relabels, 2 withdrawals, 3 unchanged" in dry and "nothing published" in dry
    assert "version 1 -> " not in run(platform, "sync").stdout

    day2 = run(pub_home, "publish", "tid", "--full-list", str(DATA / "ncmec_day2.xml"), "--label", "csam").stdout
    assert "version 2: 5 adds, 2 withdrawals" in day2
    assert "version 1 -> 2" in run(platform, "sync").stdout
    second = changes(platform, first[-1]["seq"])
    assert keyed(second) == {
        ("add", "md5", MD5_E, "ncmec-42-img-d"), ("add", "pdq", PDQ_D, "ncmec-42-img-d"),
        # img-a reclassified A1 -> A2: its records are relabelled
        ("relabel", "md5", MD5_A, "ncmec-42-img-a"), ("relabel", "sha1", SHA1_A, "ncmec-42-img-a"),
        ("relabel", "pdq", PDQ_A, "ncmec-42-img-a"),
        ("withdraw", "md5", MD5_C, "ncmec-42-img-c"),       # gone from the export
        ("withdraw", "md5", MD5_A, "ncmec-43-img-a"),       # member 43 deleted its entry
    }
    assert len(second) == 7
    relabelled = [c for c in second if c["case"] == "ncmec-42-img-a"]
    assert all(sorted(c["labels"]) == ["a2", "csam"] for c in relabelled), relabelled

    # md5 aaaa... still matches through member 42's case; img-c no longer matches.
    hit = json.loads(run(platform, "lookup", "md5", MD5_A, "--json").stdout)
    assert [m["case"] for m in hit["matches"]] == ["ncmec-42-img-a"]
    assert run(platform, "lookup", "md5", MD5_C, check=False).returncode == 1

    # The same export again: nothing to publish, no new version.
    again = run(pub_home, "publish", "tid", "--full-list", str(DATA / "ncmec_day2.xml"), "--label", "csam").stdout
    assert "nothing to publish" in again
    assert "version 2 -> " not in run(platform, "sync").stdout
