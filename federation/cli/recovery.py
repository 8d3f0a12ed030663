"""Commands for surviving a lost disk: ``backup`` and ``feed recover`` (docs/node.md, Disaster recovery)."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import click

from federation.core.errors import InputError
from federation.node.home import Home


@click.command("backup")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def backup(home: Home, out: Path):
    """Copy this node's databases into OUT (a new directory) while it runs.

    Each database is copied consistently (SQLite's online backup API: a
    publish committing meanwhile is wholly in the copy or wholly absent),
    with OUT/manifest.json listing each feed's size, version and checkpoint.
    Private keys are NOT included: back HOME/private up separately, offline.
    Never restore HOME/state (it stops an older copy from forking a feed).

    \b
    Example:
      federation backup /mnt/backups/federation-$(date +%F)
    """
    from federation.node.backup import backup_home
    b = backup_home(home.require(), out)
    for name, f in sorted(b.manifest["files"].items()):
        click.echo(f"{b.out / name}\t{f['bytes']} bytes\tsha256 {f['sha256']}")
    for f in b.manifest["published"]:
        click.echo(f"published {f['name']}: version {f['version']}, tree size {f['size']}")
    for f in b.manifest["followed"]:
        click.echo(f"followed {f['name']}: version {f['version']}, tree size {f['size']}")
    click.echo(f"manifest: {b.out / 'manifest.json'}")
    click.echo(f"reminder: private keys are not in this backup; back up {home.private_dir} (and any key file "
               "recorded with 'feed create --key') separately, offline", err=True)


@click.command("recover")
@click.argument("name")
@click.option("--from", "url", required=True,
              help="tlog-tiles prefix of a copy of the feed's served log: a relay, a static export or a "
                   "member's node, e.g. https://relay.example/feeds/tid/")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The feed's log key file (default: the one recorded with the feed, else "
                   "HOME/private/NAME.key). Only its public half is used to verify the log.")
@click.option("--vkey", help="Verify with this public key instead (name+id+key) when the private key is lost; "
                             "then run 'federation feed rotate-key NAME --old-key-lost'.")
@click.option("--access", type=click.Choice(["public", "members"]), default="members", show_default=True,
              help="Who may read the feed, if the database no longer has it (an existing feed keeps its own).")
@click.option("--token-env", default="FEDERATION_TOKEN", show_default=True,
              help="Environment variable holding a member token, for a members-only copy.")
@click.option("--abandon-witnessed", is_flag=True,
              help="Give up a checkpoint that was sent to witnesses but never served, when no copy holds it: "
                   "the witnesses that cosigned it will see the next checkpoint as a fork.")
@click.pass_obj
def feed_recover(home: Home, name, url, key_path=None, vkey=None, access="members", token_env="FEDERATION_TOKEN",
                 abandon_witnessed=False):
    """Rebuild published feed NAME from a copy of its served log.

    Verifies every byte of the copy against the feed's own key, as a mirror
    does, and requires it to extend what this node served before; then
    rebuilds entries, tiles, active set, digest and versions. The feed then
    continues the same log with the same key. Run it with the node stopped.

    \b
    Example:
      federation feed recover tid --from https://relay.example/feeds/tid/
      federation feed recover tid --from https://relay.example/feeds/tid/ --vkey 'ch.example/feeds/tid+1a2b3c4d+AW...'
    """
    from federation.core.note import parse_vkey
    from federation.node.keys import load_signer
    from federation.node.recover import recover_feed
    from federation.store.db import connect
    from federation.store.publisher import feed_key_files
    if key_path is not None and vkey is not None:
        raise InputError("give --key or --vkey, not both")
    key_file = None
    if vkey is not None:
        key = parse_vkey(vkey)
    else:
        recorded = None
        if key_path is None and home.publisher_db.exists():
            conn = connect(home.publisher_db, readonly=True)
            try:
                recorded = feed_key_files(conn).get(name)
            finally:
                conn.close()
        path = key_path or home.feed_key(name, recorded)
        key = load_signer(path).verifier
        key_file = home.key_record(name, path)
    token = os.environ.get(token_env)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    db = home.ensure().publisher_db
    r = asyncio.run(recover_feed(db, name, url, key, access, key_file, headers, abandon_witnessed=abandon_witnessed))
    from federation.store.publisher import Publisher
    pub = Publisher(db)
    try:
        problem = pub.signing_problem(name)
    finally:
        pub.close()
    if problem:
        click.echo(f"warning: {name} still cannot sign: {problem}", err=True)
    if not r.changed:
        click.echo(f"{name}: the database already holds version {r.version} (tree size {r.size}) that {url} serves; "
                   "nothing to recover")
        return
    click.echo(f"recovered {name} from {url}: version {r.old_version} -> {r.version}, tree size {r.old_size} -> "
               f"{r.size}, {r.count} active hashes; the next publish continues the same log")


def register(cli: click.Group) -> None:
    cli.add_command(backup)
    cli.commands["feed"].add_command(feed_recover)
