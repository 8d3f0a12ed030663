"""CLI for snapshots, pruning and bootstrap (``federation snapshot ...``,
``federation prune``, ``federation bootstrap``). Thin: the work is in
``store.snapshots`` and ``sync.bootstrap``."""
from __future__ import annotations

import asyncio

import click

from federation.node.home import Home


@click.group()
def snapshot():
    """Write and list snapshots of published feeds (for fast mirror bootstrap).

    \b
    Example:
      federation snapshot write tid
      federation snapshot list tid
    """


@snapshot.command("write")
@click.argument("name")
@click.option("--no-compress", is_flag=True, help="Write plain msgpack instead of zstd.")
@click.pass_obj
def snapshot_write(home: Home, name, no_compress):
    """Write the active set of feed NAME at its current version as a snapshot.

    The file is content-addressed (named by its SHA-256) and listed in
    /feeds/NAME/snapshot/index once complete. Shows a progress bar on a
    terminal, log lines otherwise.

    \b
    Example:
      federation snapshot write tid
    """
    from federation.store.snapshots import write_snapshot
    ref = write_snapshot(home.publisher_db, name, compress=not no_compress)
    click.echo(f"snapshot of {name} version {ref.version} (tree size {ref.size}, {ref.count} hashes,"
               f" {ref.bytes} bytes): {ref.sha256}")


@snapshot.command("list")
@click.argument("name")
@click.pass_obj
def snapshot_list(home: Home, name):
    """List the snapshots of feed NAME and its minimum index.

    \b
    Example:
      federation snapshot list tid
    """
    from federation.core.errors import UnavailableError
    from federation.store.db import connect
    from federation.store.snapshots import list_snapshots, minimum_index
    from federation.store.publisher import Publisher
    if not home.require().publisher_db.exists():  # read-only: a typo'd --home creates nothing
        raise UnavailableError(f"no publisher database at {home.publisher_db}: this node publishes no feed")
    feed = Publisher(home.publisher_db).feed(name)
    conn = connect(home.publisher_db, readonly=True)
    for r in list_snapshots(conn, feed.id):
        click.echo(f"version {r.version}\tsize {r.size}\t{r.count} hashes\t{r.bytes} bytes\t{r.sha256}")
    click.echo(f"minimum index {minimum_index(conn, feed.id)}")


@click.command()
@click.argument("name")
@click.option("--minimum-index", "minimum", type=int,
              help="Prune bundles ending at or below this index (default: the newest snapshot's size).")
@click.option("--retain", "retain_days", type=float,
              help="Keep the log for this many days: prune only up to the newest snapshot at least this old.")
@click.pass_obj
def prune(home: Home, name, minimum, retain_days):
    """Stop serving, and delete, entry bundles of NAME that a snapshot covers.

    Bundles whose end index is at most the minimum index answer 410 Gone;
    hash tiles stay. Mirrors behind the minimum re-bootstrap from a snapshot.

    \b
    Example:
      federation prune tid --retain 30
    """
    from federation.store.snapshots import prune as do_prune
    retention = None if retain_days is None else int(retain_days * 86400)
    m = do_prune(home.publisher_db, name, minimum, retention)
    click.echo(f"{name}: minimum index {m}; entry bundles below it are no longer served")


@click.command()
@click.argument("name")
@click.option("--workers", type=int, help="Processes for LtHash work (default: one per core).")
@click.pass_obj
def bootstrap(home: Home, name, workers):
    """Load the newest snapshot of followed feed NAME, verified against the log.

    'federation sync' does this by itself for a fresh mirror and for one
    behind the upstream's pruned range; this command forces it.

    \b
    Example:
      federation bootstrap tid
    """
    from federation.sync.bootstrap import bootstrap_feed
    from federation.net.fetcher import Fetcher
    from federation.store.mirror import Mirror

    async def run():
        mirror = Mirror.existing(home.require().mirror_db)  # a typo'd --home creates nothing (as 'sync')
        f = mirror.get(name)
        async with Fetcher(list(f.urls)) as fetcher:
            return await bootstrap_feed(mirror, name, fetcher, workers=workers)

    r = asyncio.run(run())
    if r is None:
        click.echo(f"{name}: already at the signed checkpoint")
    else:
        click.echo(f"{name}: bootstrapped to version {r.version} (size {r.size}, {r.count} hashes)"
                   f" from snapshot {r.snapshot[:16]} in {r.seconds:.1f} s")


def register(cli) -> None:
    cli.add_command(snapshot)
    cli.add_command(prune)
    cli.add_command(bootstrap)
