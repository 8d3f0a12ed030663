"""CLI of list imports: ``federation import`` and ``federation publish FEED --full-list FILE``.

Thin: ``core.imports`` reads the file as claims, ``store.fulllist`` resolves
and diffs them on disk, ``Publisher.publish`` publishes the delta. Every
run prints its summary first; ``--dry-run`` stops there. Registered through
``cli.EXTENSION_MODULES`` (``publish_full_list`` is called by ``publish``).
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from federation.core.errors import InputError, StorageError
from federation.core.imports import FORMATS, ReadStats, detect_format
from federation.node.home import Home

FORMAT_HELP = ("ncmec (hash-sharing XML), stopncii (hash records, JSON or JSON Lines) or hma (threatexchange / HMA "
               "dataset CSV). Default: from the extension (.xml, .json/.jsonl, .csv).")


def _open(path: Path):
    try:
        return path.open("rb")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e}") from None


def _diff(home: Home, feed: str | None, path: Path, fmt: str | None, labels, case, mode: str, reason: str,
          scratch_dir: Path | None):
    from federation.core.imports.formats import read_claims
    from federation.store.fulllist import ListDiff
    fmt = fmt or detect_format(path.name)
    stats = ReadStats()
    d = ListDiff(home.publisher_db if feed else None, feed, mode, scratch_dir, reason)
    try:
        with _open(path) as stream:
            d.load(read_claims(stream, str(path), fmt, labels, stats, case, whole=mode == "full"))
        d.summary.skipped = dict(stats.skipped)
        if feed:
            d.diff()
    except BaseException:
        d.close()
        raise
    return d, fmt


def _publish(home: Home, feed: str, d, key_path: Path | None) -> None:
    from federation.node.keys import load_signer
    from federation.store.publisher import Publisher
    pub = Publisher(home.publisher_db)
    try:
        signer = load_signer(key_path or home.feed_key(feed, pub.feed(feed).key_file))
        r = pub.publish(feed, d.ops(), signer, in_txn=d.check_version)
    finally:
        pub.close()
    click.echo(f"published {feed} version {r.version}: {r.adds} adds, {r.withdrawals} withdrawals; "
               f"tree size {r.old_size} -> {r.size}; {r.count} active hashes")
    if r.pending:
        from federation.cli.trust import cosign_after_publish
        cosign_after_publish(home, feed, r.version)


def publish_full_list(home: Home, feed: str, path: Path, fmt: str | None, labels, case, dry_run: bool, reason: str,
                      max_withdrawals: float, key_path: Path | None, scratch_dir: Path | None) -> None:
    """``federation publish FEED --full-list FILE``: publish the difference."""
    d, fmt = _diff(home, feed, path, fmt, labels, case, "full", reason, scratch_dir)
    with d:
        s = d.summary
        click.echo(f"full list {path} ({fmt}): {s.describe()}")
        if s.active and s.withdrawals > s.active * max_withdrawals / 100:
            raise InputError(f"the list would withdraw {s.withdrawals} of the {s.active} active records "
                             f"({100 * s.withdrawals / s.active:.1f}%), over --max-withdrawals {max_withdrawals:g}%: "
                             "a truncated export looks like this. Nothing was published; if the list is complete, "
                             "run again with a higher --max-withdrawals")
        if dry_run:
            click.echo("dry run: nothing published")
            return
        if s.empty:
            click.echo(f"{feed} already matches the list: nothing to publish")
            return
        _publish(home, feed, d, key_path)


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), help=FORMAT_HELP)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the file as a batch (JSONL: adds, and withdrawals of what it says is gone).")
@click.option("--publish", "feed", metavar="FEED",
              help="Publish the file's adds and withdrawals to FEED as one version (only what changes it).")
@click.option("--label", "labels", multiple=True, help="A label for every record (repeatable), e.g. csam.")
@click.option("--case", help="HMA CSV only: every record's case (default: the collaboration's name).")
@click.option("--reason", type=click.Choice(["other", "submitter_request", "hash_error", "legal", "duplicate"]),
              default="other", show_default=True, help="Reason of the withdrawals.")
@click.option("--dry-run", is_flag=True, help="With --publish: print the summary only.")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="With --publish: the feed's key file (default: the one recorded with the feed).")
@click.option("--scratch-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the on-disk sort goes (default: next to the publisher database, or the current "
                   "directory with --out). Needs about twice the file's records in space.")
@click.pass_obj
def import_cmd(home: Home, file, fmt, out, feed, labels, case, reason, dry_run, key_path, scratch_dir):
    """Read a list a clearinghouse holds -- NCMEC hash-sharing XML, StopNCII
    hash records, an HMA / threatexchange dataset CSV -- as a delta: write it
    as a batch (--out), or publish what it adds and withdraws (--publish).
    A whole export that should *replace* a feed is 'publish FEED --full-list'.

    Within the file the newest statement about an entry wins (NCMEC entries
    are not in time order; a later StopNCII record of a hash replaces an
    earlier one). A malformed file is refused with its line or element and
    field, and then nothing is written or published.

    \b
    Example:
      federation import ncmec-export.xml --publish tid --label csam --dry-run
      federation import stopncii.jsonl --out batch.jsonl
      threatexchange dataset -P --csv > bank.csv && federation import bank.csv --publish internal
    """
    if (out is None) == (feed is None):
        raise InputError("give exactly one of --out BATCH or --publish FEED")
    if out is not None:
        d, fmt = _diff(home, None, file, fmt, labels, case, "delta", reason, scratch_dir or out.parent)
        with d:
            n = _write_batch(d, out)
        click.echo(f"{file} ({fmt}): {d.summary.claims} entries read ({d.summary.superseded} superseded); "
                   f"wrote {n} operations to {out}")
        return
    d, fmt = _diff(home, feed, file, fmt, labels, case, "delta", reason, scratch_dir)
    with d:
        click.echo(f"import {file} ({fmt}): {d.summary.describe()}")
        if dry_run:
            click.echo("dry run: nothing published")
        elif d.summary.empty:
            click.echo(f"{feed} already holds everything the file says: nothing to publish")
        else:
            _publish(home, feed, d, key_path)


def _write_batch(d, out: Path) -> int:
    """The resolved file as a JSONL batch, written to a temporary name and renamed."""
    tmp = out.with_name(out.name + ".part")
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for op in d.resolved():
                rec = {"op": op.op}
                if op.value is not None:
                    rec.update(type=op.hash_type, hash=op.value.hex())
                if op.case is not None:
                    rec["case"] = op.case
                if op.op == "add":
                    rec["labels"] = list(op.labels)
                else:
                    rec["reason"] = op.reason
                f.write(json.dumps(rec) + "\n")
                n += 1
        tmp.replace(out)
    except OSError as e:  # e.g. a full disk: the batch is not half written under its name
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {out}: {e}") from None
    return n


def register(cli: click.Group) -> None:
    cli.add_command(import_cmd)
