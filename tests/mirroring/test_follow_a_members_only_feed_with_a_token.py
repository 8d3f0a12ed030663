"""``federation follow --token-env VAR``: a members-only feed mirrored with a
member token read from the environment at each sync (issue 14).

Without a token, or with one the upstream refuses, ``sync`` reports its
own error kind (``auth``) saying what to fix, not a bare "transport".
The mirror stores the variable's name, never the token.
"""
from __future__ import annotations

import sqlite3

from support.processes import cli_run, free_port, start_server

HASH = "ab" * 16


def _clearinghouse(tmp_path):
    """A clearinghouse process serving members-only ``ncii``; (server, home, vkey, token)."""
    home = tmp_path / "clearinghouse"
    out = cli_run(home, "feed", "create", "ncii", "--origin", "clearinghouse.example/feeds/ncii").stdout
    vkey = next(line.split()[1] for line in out.splitlines() if line.startswith("vkey:"))
    (tmp_path / "b.csv").write_text(f"op,type,hash,case\nadd,md5,{HASH},c-1\n")
    cli_run(home, "publish", "ncii", str(tmp_path / "b.csv"))
    token = cli_run(home, "token", "issue", "platform-a", "--feed", "ncii").stdout.split()[-1]
    port = free_port()
    server = start_server(home, "serve", "--port", str(port), port=port, log=tmp_path / "clearinghouse.log")
    return server, home, vkey, token


def test_follow_with_token_env_mirrors_a_members_only_feed(tmp_path):
    server, _, vkey, token = _clearinghouse(tmp_path)
    try:
        platform = tmp_path / "platform"
        cli_run(platform, "follow", "ncii", "--url", f"{server.url}/feeds/ncii/", "--origin",
                "clearinghouse.example/feeds/ncii", "--vkey", vkey, "--token-env", "NCII_TOKEN")
        # Unset: a usage error naming the variable, before any request.
        r = cli_run(platform, "sync", env={"NCII_TOKEN": ""}, check=False)
        assert r.returncode == 2 and "$NCII_TOKEN" in r.stderr and "not set" in r.stderr, r.stderr
        # Refused: its own kind, saying the token was refused.
        r = cli_run(platform, "sync", env={"NCII_TOKEN": "fedtok_not-a-token"}, check=False)
        assert r.returncode == 3 and "error (auth)" in r.stderr and "refused the member token" in r.stderr, r.stderr
        r = cli_run(platform, "sync", env={"NCII_TOKEN": token})
        assert "version 0 -> 1" in r.stdout
        r = cli_run(platform, "lookup", "md5", HASH, env={"NCII_TOKEN": token})
        assert "ncii" in r.stdout
        # Only the variable's name is kept.
        with sqlite3.connect(platform / "mirror.db") as db:
            assert db.execute("SELECT token_env FROM follows").fetchall() == [("NCII_TOKEN",)]
        assert token.encode() not in (platform / "mirror.db").read_bytes()
    finally:
        server.stop()


def test_a_members_only_feed_followed_without_a_token_says_how_to_fix_it(tmp_path):
    server, _, vkey, _ = _clearinghouse(tmp_path)
    try:
        platform = tmp_path / "platform"
        cli_run(platform, "follow", "ncii", "--url", f"{server.url}/feeds/ncii/", "--origin",
                "clearinghouse.example/feeds/ncii", "--vkey", vkey)
        r = cli_run(platform, "sync", check=False)
        assert r.returncode == 3, r.stderr
        assert "error (auth)" in r.stderr and "members only" in r.stderr and "--token-env" in r.stderr, r.stderr
        r = cli_run(platform, "status", "--json", check=False)
        assert '"auth' in r.stdout, r.stdout  # the recorded outcome names the kind too
    finally:
        server.stop()


def test_a_damaged_members_only_feed_heals_with_its_token(tmp_path):
    """The heal's rebuild (sync/heal.py) follows the feed like the mirror
    did, token variable included: without it the rebuild is refused (401)
    and a members-only feed would stay closed for good."""
    server, _, vkey, token = _clearinghouse(tmp_path)
    try:
        platform = tmp_path / "platform"
        env = {"NCII_TOKEN": token}
        cli_run(platform, "follow", "ncii", "--url", f"{server.url}/feeds/ncii/", "--origin",
                "clearinghouse.example/feeds/ncii", "--vkey", vkey, "--token-env", "NCII_TOKEN")
        cli_run(platform, "sync", env=env)
        with sqlite3.connect(platform / "mirror.db") as db:
            assert db.execute(f"DELETE FROM hashes WHERE value=x'{HASH}'").rowcount == 1
        assert cli_run(platform, "verify", env=env, check=False).returncode == 1
        assert cli_run(platform, "lookup", "md5", HASH, env=env, check=False).returncode == 5
        r = cli_run(platform, "sync", env=env)
        assert "healed" in r.stdout, (r.stdout, r.stderr)
        assert cli_run(platform, "lookup", "md5", HASH, env=env).returncode == 0
    finally:
        server.stop()
