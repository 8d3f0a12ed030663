"""Command line: a thin layer over the library (click).

Exit codes: 0 success; 1 verification failure (the mirror kept its last
verified version), or "no match" for ``lookup``; 2 bad input or usage;
3 transport failure; 4 storage; 5 unavailable (fail closed: the mirror
cannot stand behind an answer -- missing, never synced, failed or stale).
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import sqlite3
import sys
from pathlib import Path

import click

from federation import __version__
from federation.core.batch import parse_hash, read_batch
from federation.core.errors import FederationError, InputError, StorageError, TransportError, UnavailableError, VerificationError
from federation.core.freshness import DEFAULT_MAX_AGE, MIN_MAX_AGE_REFRESHES, REFRESH_INTERVAL, short_max_age
from federation.cli.logs import LOG_JSON, log_json_option, setup as setup_logging
from federation.cli.progress import SyncBar, bar as progress_bar, file_size, progress_option, read_with_progress
from federation.node.home import Home
from federation.node.keys import load_signer, write_new_key
from federation.store.db import storage_error

log = logging.getLogger("federation")

EXIT = {VerificationError: 1, InputError: 2, TransportError: 3, StorageError: 4, UnavailableError: 5}


def _fail(e: FederationError) -> None:
    code = next((c for cls, c in EXIT.items() if isinstance(e, cls)), 1)
    click.echo(f"error ({e.kind}): {e}", err=True)
    sys.exit(code)


# A write that fails for want of space, or on a failing or read-only disk.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS})


def local_failure(e: BaseException) -> StorageError | None:
    """``e``, a SQLite or OS error that escaped a command, as a ``StorageError``
    when this machine's disk or database is to blame (else None: a bug,
    shown with its traceback). A last line of defence: the stores raise
    ``StorageError`` themselves (``store.db.write_txn``)."""
    if isinstance(e, sqlite3.Error):
        return storage_error(e)
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
        where = f" {e.filename}" if e.filename else ""
        return StorageError(f"cannot write{where}: {e.strerror or e}; check the free space and the health of the disk")
    return None


class Group(click.Group):
    """Turns FederationError (and a full or failing disk: ``local_failure``)
    into one clear line and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FederationError as e:
            _fail(e)
        except (sqlite3.Error, OSError) as e:
            mapped = local_failure(e)
            if mapped is None:
                raise
            _fail(mapped)


@click.group(cls=Group)
@click.option("--home", envvar="FEDERATION_HOME", type=click.Path(file_okay=False),
              help="Node directory (default ~/.federation, or $FEDERATION_HOME).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.version_option(__version__)
@click.pass_context
def cli(ctx, home, verbose):
    """Signed, verifiable hash-list feeds: publish, serve, mirror.

    \b
    Example:
      federation demo
    """
    setup_logging(verbose)
    ctx.obj = Home.resolve(home)


# ---- publisher ------------------------------------------------------------------

@cli.group()
def feed():
    """Create and list the feeds this node publishes, and set who may read them.

    \b
    Example:
      federation feed create tid --origin clearinghouse.example/feeds/tid
    """


@feed.command("create")
@click.argument("name")
@click.option("--origin", help="Checkpoint origin and key name (default localhost/feeds/NAME). "
              "Use your public URL prefix without scheme.")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the new private key (default HOME/private/NAME.key, mode 0600). Its path "
                   "is recorded with the feed, so publish, serve and refresh find it.")
@click.option("--access", type=click.Choice(["public", "members"]), default="members", show_default=True,
              help="Who may read the feed: anyone, or holders of a member token scoped to it. "
                   "Stored with the feed; 'serve' and 'export' never make it more open.")
@click.pass_obj
def feed_create(home: Home, name, origin, key_path, access="members"):
    """Create feed NAME with a new Ed25519 log key and print its vkey.

    \b
    Example:
      federation feed create ncii --origin clearinghouse.example/feeds/ncii
      federation feed create tid --origin clearinghouse.example/feeds/tid --access public
    """
    from federation.store.publisher import Publisher, check_access
    check_access(access)  # before a key file is written
    origin = origin or f"localhost/feeds/{name}"
    key_path = key_path or home.key_path(name)
    signer = write_new_key(key_path, origin)
    pub = Publisher(home.publisher_db)
    try:
        pub.create_feed(name, origin, signer, access, key_file=home.key_record(name, key_path))
    except InputError:
        key_path.unlink()
        raise
    click.echo(f"created feed {name}\norigin: {origin}\nvkey:   {signer.vkey}\nkey:    {key_path} (keep it secret)\n"
               f"access: {access}")


@feed.command("set-access")
@click.argument("name")
@click.argument("access", type=click.Choice(["public", "members"]))
@click.pass_obj
def feed_set_access(home: Home, name, access):
    """Change who may read feed NAME: public (anyone) or members (member tokens).

    Servers read it on every request, so the change takes effect at once.
    Static exports made while the feed was public stay public: remove them.

    \b
    Example:
      federation feed set-access ncii members
    """
    from federation.store.publisher import Publisher
    f = Publisher(home.publisher_db).set_access(name, access)
    click.echo(f"feed {f.name}: access {f.access}")
    if access == "members":
        click.echo(f"note: copies exported while {name} was public (federation export) are not withdrawn "
                   f"by this; delete their {name}/ directory from every static host", err=True)


@feed.command("list")
@click.pass_obj
def feed_list(home: Home):
    """List published feeds with their access, version, size and vkey.

    \b
    Example:
      federation feed list
    """
    from federation.store.publisher import Publisher
    if not home.require().publisher_db.exists():
        return
    for f in Publisher(home.publisher_db).feeds():
        click.echo(f"{f.name}\t{f.access}\tversion {f.version}\tsize {f.size}\t{f.count} active\t{f.vkey}")


@feed.command("refresh")
@click.argument("names", nargs=-1)
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The log key file of the one feed named (default: the key file the feed is signed with, "
                   "as recorded by 'feed create --key' or 'feed rotate-key', else HOME/private/NAME.key).")
@click.pass_obj
def feed_refresh(home: Home, names, key_path=None):
    """Re-stamp the served checkpoint of published feeds (all by default) with
    the log's own timestamp, so mirrors see the feed is alive while nothing
    is published. Run it hourly from cron or a systemd timer when no
    'federation serve' (which refreshes by itself) runs where the keys are;
    mirrors report a feed 'stale' after their maximum age (default a day).

    Exits 2 if a feed could not be refreshed (e.g. its key is missing).

    \b
    Example:
      federation feed refresh
      federation feed refresh tid ncii
      federation feed refresh tid --key /mnt/offline/tid.key
    """
    from federation.store.publisher import Publisher
    from federation.node.refresh import load_refresh_signers, refresh_feeds
    if not home.require().publisher_db.exists():
        raise UnavailableError(f"no publisher database at {home.publisher_db}: this node publishes no feed")
    pub = Publisher(home.publisher_db)
    try:
        names = list(names) or [f.name for f in pub.feeds()]
        for n in names:
            pub.feed(n)  # InputError for a feed that does not exist
        if key_path is not None and len(names) != 1:
            raise InputError("--key is one feed's key: name that feed (federation feed refresh NAME --key FILE)")
        signers, results = load_refresh_signers(home, names, {names[0]: key_path} if key_path else None)
        results += refresh_feeds(pub, signers)
    finally:
        pub.close()
    for r in sorted(results, key=lambda r: r.feed):
        if r.problem:
            click.echo(f"{r.feed}: not refreshed: {r.problem}", err=True)
        else:
            click.echo(f"{r.feed}: checkpoint of size {r.size} re-stamped")
    if any(r.problem for r in results):
        sys.exit(2)


@cli.command()
@click.argument("name")
@click.argument("batch", type=click.File("rb"), required=False)  # decoded line by line: errors name the line
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]),
              help="Batch format (default: from the file extension).")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file (default: the one recorded with the feed by 'feed create --key' or "
                   "'feed rotate-key', else HOME/private/NAME.key).")
@click.option("--allow-unknown-withdrawals", is_flag=True,
              help="Publish withdrawals that match no active hash (normally refused as likely typos).")
@click.option("--full-list", "full_list", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Instead of a batch: a whole export (NCMEC XML, StopNCII JSON, HMA CSV) that the feed must "
                   "equal. Publishes only the difference: adds, relabels, and withdrawals of what is gone.")
@click.option("--list-format", type=click.Choice(["ncmec", "stopncii", "hma"]),
              help="With --full-list: its format (default: from the extension: .xml, .json/.jsonl, .csv).")
@click.option("--label", "labels", multiple=True, help="With --full-list: a label for every record (repeatable).")
@click.option("--case", help="With --full-list of an HMA CSV: every record's case (default: the collaboration).")
@click.option("--dry-run", is_flag=True, help="With --full-list: print the difference, publish nothing.")
@click.option("--reason", type=click.Choice(["other", "submitter_request", "hash_error", "legal", "duplicate"]),
              default="other", show_default=True, help="With --full-list: the reason of its withdrawals.")
@click.option("--max-withdrawals", type=click.FloatRange(0, 100), default=25.0, show_default=True,
              help="With --full-list: refuse (exit 2) a list that would withdraw more than this percentage of the "
                   "active records -- what a truncated export looks like.")
@click.option("--scratch-dir", type=click.Path(file_okay=False, path_type=Path),
              help="With --full-list: where the on-disk sort goes (default: next to the publisher database).")
@progress_option
@click.pass_obj
def publish(home: Home, name, batch, fmt, key_path, allow_unknown_withdrawals, full_list=None, list_format=None,
            labels=(), case=None, dry_run=False, reason="other", max_withdrawals=25.0, scratch_dir=None, progress=None):
    """Publish BATCH (CSV or JSONL, '-' for stdin) as the next version of NAME,
    or, with --full-list FILE, the difference between the feed and FILE.

    The whole batch is one version, sealed and signed in one transaction:
    on any error nothing is published. A full list is read and checked whole,
    sorted on disk and merged with the feed's active set (memory does not
    grow with either); its summary is printed before anything is published.
    On a terminal (or with --progress) a bar shows how much of the batch file
    was read.

    \b
    CSV header: op,type,hash,case,labels,reason
    Example:
      federation publish tid batch.csv
      echo '{"op":"withdraw","case":"c-17","reason":"submitter_request"}' | federation publish tid - --format jsonl
      federation publish tid --full-list export.xml --label csam --dry-run
    """
    if full_list is not None:
        if batch is not None or fmt or allow_unknown_withdrawals:
            raise InputError("--full-list replaces BATCH (and --format, --allow-unknown-withdrawals): give one")
        from federation.cli.imports import publish_full_list
        return publish_full_list(home, name, full_list, list_format, labels, case, dry_run, reason,
                                 max_withdrawals, key_path, scratch_dir)
    if batch is None:
        raise InputError("give a BATCH file ('-' for stdin), or --full-list FILE")
    if list_format or labels or case or dry_run:
        raise InputError("--list-format, --label, --case and --dry-run go with --full-list")
    from federation.store.publisher import Publisher
    fmt = fmt or ("jsonl" if batch.name.endswith((".jsonl", ".ndjson")) else "csv")
    pub = Publisher(home.publisher_db)
    signer = load_signer(key_path or home.feed_key(name, pub.feed(name).key_file))
    b = progress_bar(f"publish {name}", progress, total=file_size(batch), unit="B")
    try:
        r = pub.publish(name, read_batch(read_with_progress(batch, b), fmt), signer,
                        allow_unknown_withdrawals=allow_unknown_withdrawals)
    finally:
        b.close()  # before the summary, which must not be drawn over the bar
    click.echo(f"published {name} version {r.version}: {r.adds} adds, {r.withdrawals} withdrawals"
               f" ({r.no_effect} without effect); tree size {r.old_size} -> {r.size}; {r.count} active hashes")
    if r.pending:  # cosigning configured: served only once cosigned (docs/trust.md)
        from federation.cli.trust import cosign_after_publish
        cosign_after_publish(home, name, r.version)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--config", "config", type=click.Path(dir_okay=False, exists=True),
              help="Node config (TOML): serve, follow, relay and accept publishes as it declares "
                   "(see docs/node.md); --host/--port are then taken from its [node] listen.")
@click.option("--refresh-interval", type=click.FloatRange(min=0), default=REFRESH_INTERVAL, show_default=True,
              help="Seconds between re-stamps of each served checkpoint whose key file is here (keeps quiet "
                   "feeds fresh for mirrors); 0 turns it off. With --config: [node] refresh_interval.")
@log_json_option
@click.pass_obj
def serve(home: Home, host, port, config=None, refresh_interval=REFRESH_INTERVAL):
    """Serve the published feeds read-only over HTTP (C2SP tlog-tiles).

    Feeds appear under http://HOST:PORT/feeds/NAME/ (checkpoint, tile/...).
    While it runs, it re-stamps each feed's checkpoint every
    --refresh-interval seconds with the log key it is signed with (the key
    file recorded by 'feed create --key' or 'feed rotate-key', else
    HOME/private/NAME.key), so mirrors can tell a quiet feed from a frozen
    one (a feed whose key is not here is logged; refresh it with 'federation
    feed refresh' where the key is).
    Members-only feeds (feed create --access) need a member token from
    'federation token issue'; without one they answer like a feed that
    does not exist.

    \b
    Example:
      federation serve --port 8080
      federation serve --config node.toml
    """
    if config is not None:
        from federation.cli.node import serve_config
        return serve_config(home, config)
    from federation.net.httpserver import run_app
    from federation.node.assembly import build_publisher_app
    from federation.store.publisher import Publisher
    from federation.node.refresh import load_refresh_signers
    pub = Publisher(home.publisher_db)  # create the schema if new
    signers, missing = load_refresh_signers(home, [f.name for f in pub.feeds()])
    pub.close()
    for m in missing:
        log.warning("feed %s: its checkpoint will not be refreshed by this server (%s)", m.feed, m.problem)
    run_app(build_publisher_app(home, signers, refresh_interval), host, port, access_log=True,
            on_start=lambda url: click.echo(f"serving {home.publisher_db} on {url}/feeds/"))


# ---- mirror ---------------------------------------------------------------------

@cli.command()
@click.argument("name")
@click.option("--url", "urls", multiple=True, required=True,
              help="tlog-tiles prefix of the feed, e.g. http://host:8080/feeds/tid/ (repeat for fallbacks).")
@click.option("--origin", help="The feed's checkpoint origin (required without --trust).")
@click.option("--vkey", "vkeys", multiple=True, help="Trusted log key (name+id+key); repeatable (required without --trust).")
@click.option("--trust", "trust_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Trust file (keys/NAME.trust): origin, log keys, witness quorum, max staleness, rotations.")
@click.option("--max-age", "max_age", type=click.IntRange(1, 366 * 86400), default=None,
              help=f"Seconds after the newest verified timestamp (the publisher's, refreshed hourly) that "
                   f"lookups still trust this feed; past it sync reports 'stale' and lookups fail closed "
                   f"(default {DEFAULT_MAX_AGE}, or the trust file's max_staleness_seconds). Make it a few "
                   f"times the publisher's refresh interval (at least {MIN_MAX_AGE_REFRESHES} x "
                   f"{REFRESH_INTERVAL} s by default), or one late refresh fails every lookup.")
@click.option("--token-env", "token_env", metavar="VAR",
              help="Members-only feed: every sync sends the member token held in environment variable VAR "
                   "(from the publisher's 'federation token issue'). Only the name VAR is stored.")
@click.pass_obj
def follow(home: Home, name, urls, origin, vkeys, trust_file=None, max_age=None, token_env=None):
    """Start following a feed into this node's mirror as NAME.

    A members-only feed needs a member token: pass --token-env VAR and set
    VAR wherever 'federation sync' runs. Without it the upstream refuses
    (sync reports "error (auth)").

    \b
    Example:
      federation follow tid --url http://127.0.0.1:8080/feeds/tid/ --trust keys/tid.trust
      federation follow tid --url http://127.0.0.1:8080/feeds/tid/ \\
        --origin localhost/feeds/tid --vkey 'localhost/feeds/tid+1a2b3c4d+AW...' --max-age 21600
      federation follow ncii --url https://clearinghouse.example/feeds/ncii/ --trust keys/ncii.trust \\
        --token-env NCII_TOKEN
    """
    if trust_file is not None:
        if origin or vkeys:
            raise InputError("--trust gives the origin and keys; do not also pass --origin or --vkey")
        from federation.cli.trust import follow_trusted
        return follow_trusted(home, name, trust_file, list(urls), max_age, token_env)
    if not origin or not vkeys:
        raise InputError("--origin and --vkey are required without --trust")
    from federation.store.mirror import Mirror
    f = Mirror(home.mirror_db).follow(name, origin, list(vkeys), list(urls), max_age or DEFAULT_MAX_AGE,
                                      token_env=token_env)
    click.echo(f"following {f.name} ({f.origin}) from {', '.join(f.urls)}; stale after {f.max_age} s "
               "without a fresh signed timestamp"
               + (f"; member token read from ${f.token_env} at each sync" if f.token_env else ""))
    short = short_max_age(f.max_age)
    if short:
        click.echo(f"warning: {short}", err=True)


async def _sync_all(home: Home, names: list[str], watch: bool, interval: float, progress: bool | None) -> int:
    from federation.store.mirror import Mirror
    from federation.sync.orchestrator import sync_once
    mirror = Mirror.existing(home.require().mirror_db)  # a typo'd --home creates nothing
    names = names or [f.name for f in mirror.all()]
    if not names:
        raise UnavailableError(f"the mirror at {mirror.path} follows no feed (see 'federation follow')")
    worst = 0
    while True:
        for name in names:
            bar = SyncBar(name, progress)
            try:
                r = await sync_once(mirror, name, progress=bar)
            except FederationError as e:
                bar.close()  # first: the error line must not be drawn over the bar
                click.echo(f"{name}: error ({e.kind}): {e}", err=True)
                worst = worst or next((c for cls, c in EXIT.items() if isinstance(e, cls)), 1)
                continue
            finally:
                bar.close()
            msg = (f"{name}: version {r.old_version} -> {r.version}, size {r.old_size} -> {r.size}"
                   if r.changed else f"{name}: up to date at version {r.version} (size {r.size})")
            if r.healed:
                msg = (f"{name}: healed: the damaged mirror was rebuilt from its upstreams, now at version "
                       f"{r.version} (size {r.size}, was version {r.old_version})")
            click.echo(msg)
        if not watch:
            return worst
        await asyncio.sleep(interval)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--watch", is_flag=True, help="Keep syncing every --interval seconds.")
@click.option("--interval", default=30.0, show_default=True, help="Seconds between syncs with --watch.")
@log_json_option
@progress_option
@click.pass_obj
def sync(home: Home, names, watch, interval, progress=None):
    """Fetch, verify and apply new versions of followed feeds (all by default).

    Exits 1 if any feed failed verification (that feed keeps its last
    verified version), 3 on transport failure. On a terminal (or with
    --progress) a bar shows the entries applied out of the new
    checkpoint's size, with a percentage.

    \b
    Example:
      federation sync tid
      federation sync --watch --interval 10
    """
    if not (watch or click.get_current_context().meta.get(LOG_JSON) or log.isEnabledFor(logging.DEBUG)):
        # One-shot, for a person: the lines below are the outcome; the
        # outcome log line (for --watch and --log-json) would say it twice.
        logging.getLogger("federation.sync.outcome").setLevel(logging.ERROR)
    code = asyncio.run(_sync_all(home, list(names), watch, interval, progress))
    sys.exit(code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(home: Home, as_json):
    """Show every followed and published feed: version, size, count, freshness, last error.

    For followed feeds, ``ready`` says whether lookups answer from the feed
    (fail closed: never synced, last sync failed verification, or older than
    its maximum age), and ``pending`` is the number of entries verified but
    not yet applied (a sync in progress or interrupted). Lag behind a live
    upstream: ``federation node status CONFIG``. Exits 5 if the home does not
    exist (``federation doctor`` fails when a feed is not ready).

    \b
    Example:
      federation status --json
    """
    from federation.store.mirror import Mirror
    from federation.store.publisher import Publisher, signing_problems
    from federation.core.readiness import assess
    import time
    home.require()
    now = int(time.time())
    out = {"published": [], "followed": []}
    if home.publisher_db.exists():
        pub = Publisher(home.publisher_db)
        # A restored older database refuses every signing until 'feed recover': say so here.
        cannot = signing_problems(pub.conn, pub.path)
        for f in pub.feeds():
            out["published"].append(dict(name=f.name, origin=f.origin, version=f.version, size=f.size,
                                         count=f.count, updated=f.updated, age=now - f.updated, vkey=f.vkey,
                                         pending=f.pending_checkpoint is not None, access=f.access,
                                         cannot_sign=cannot.get(f.name)))
    if home.mirror_db.exists():
        for f in Mirror(home.mirror_db).all():
            v = f.verified()
            basis = assess(f, now)
            out["followed"].append(dict(name=f.name, origin=f.origin, version=f.version, size=f.applied_size,
                                        verified_size=v.size if v else 0,
                                        pending=(v.size if v else 0) - f.applied_size, count=f.count,
                                        updated=f.updated, age=(now - f.updated) if f.updated else None,
                                        verified_at=f.fresh_time, fresh_age=basis.age, max_age=f.max_age,
                                        ready=basis.ready, problem=basis.problem,
                                        last_sync=f.last_sync, last_error=f.last_error, urls=list(f.urls)))
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for f in out["published"]:
        pending = " (committed, awaiting cosignatures: not served yet)" if f["pending"] else ""
        click.echo(f"published {f['name']} ({f['access']}): version {f['version']}{pending}, size {f['size']}, "
                   f"{f['count']} active, updated {f['age']}s ago")
        if f["cannot_sign"]:
            click.echo(f"  CANNOT SIGN: {f['cannot_sign']}")
    from federation.core.freshness import describe_age
    for f in out["followed"]:
        age = f"updated {f['age']}s ago" if f["age"] is not None else "never synced"
        pending = f", {f['pending']} entries verified but not applied" if f["pending"] else ""
        ready = ("ready" if f["ready"] else f"NOT READY ({f['problem']})") + \
            f", verified current {describe_age(f['fresh_age'])} (max age {f['max_age']} s)"
        err = f"  last error: {f['last_error']}" if f["last_error"] else ""
        click.echo(f"followed  {f['name']}: version {f['version']}, size {f['size']}, {f['count']} active, "
                   f"{age}{pending}; {ready}{err}")
    if not out["published"] and not out["followed"]:
        click.echo(f"{home.root}: this node neither publishes nor follows a feed")


@cli.command()
@click.argument("hash_type")
@click.argument("value")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--feed", "feeds", multiple=True, help="Answer from this followed feed only (repeatable; default all).")
@click.option("--allow-stale", is_flag=True,
              help="Answer even from feeds that are stale or whose last sync failed verification "
                   "(the answer says so). Never from a missing or never-synced mirror.")
@click.pass_obj
def lookup(home: Home, hash_type, value, as_json, feeds, allow_stale):
    """Look up one hash in the mirror: exit 0 if active, 1 if not, 5 if the
    mirror cannot stand behind an answer.

    HASH_TYPE is one of md5, sha1, sha256, pdq or photodna; VALUE is hex
    (PhotoDNA also base64 or 144 comma-separated bytes). This lookup is
    exact, PDQ included: for PDQ near-matches within a Hamming distance
    (and several values at once) use 'federation platform lookup pdq'.

    Fails closed (exit 5, nothing created) when the home or mirror does not
    exist, no feed is followed, or a feed never synced, failed verification
    on its last sync, or is older than its maximum age. Every answer says
    what it is based on: per feed, version, tree size and the age of the
    newest verified timestamp.

    \b
    Example:
      federation lookup md5 9e107d9d372bb6826bd81d3542a419d6
      federation lookup md5 9e107d9d372bb6826bd81d3542a419d6 --json --feed tid
    """
    from federation.store.mirror import Mirror
    raw = parse_hash(hash_type, value)
    mirror = Mirror.existing(home.require().mirror_db)
    try:
        try:
            bases = _lookup_bases(mirror, list(feeds), allow_stale)
        except UnavailableError as e:
            if as_json:
                click.echo(json.dumps({"error": str(e), "kind": e.kind, "feeds": [b.to_json() for b in e.problems]}))
            raise
        names = {b.feed for b in bases}
        matches = [m for m in mirror.lookup(hash_type.lower(), raw) if m.feed in names]
    finally:
        mirror.close()
    if as_json:
        click.echo(json.dumps(dict(type=hash_type.lower(), hash=raw.hex(), matched=bool(matches),
                                   matches=[dict(feed=m.feed, type=m.hash_type, hash=m.value.hex(), case=m.case,
                                                 labels=list(m.labels), added_version=m.added_version)
                                            for m in matches],
                                   based_on=[b.to_json() for b in bases])))
    else:
        for m in matches:
            click.echo(f"MATCH feed={m.feed} case={m.case} labels={','.join(m.labels)} version={m.added_version}")
        if not matches:
            click.echo("no match")
        for b in bases:
            click.echo(f"based on {b.describe()}")
    sys.exit(0 if matches else 1)


def _lookup_bases(mirror, feeds: list[str], allow_stale: bool):
    """What a lookup from ``feeds`` (all when empty) stands on, or ``UnavailableError``."""
    import time
    from federation.core.readiness import assess, require
    now = int(time.time())
    follows = [mirror.get(n) for n in feeds] if feeds else mirror.all()
    return require([assess(f, now) for f in follows], allow_stale, f"the mirror at {mirror.path}")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--against", "against", metavar="URL",
              help="Another node's tlog-tiles prefix for the feed: prove our checkpoint consistent with its "
                   "one, or print both signed notes as evidence of a fork (exit 1).")
@click.pass_obj
def verify(home: Home, names, against=None):
    """Audit the mirror: recompute digest, count and Merkle root from its rows.

    A feed that fails is marked damaged: lookups fail closed (exit 5, HTTP
    503) until the next 'federation sync' rebuilds it from its upstreams.

    \b
    Example:
      federation verify tid
      federation verify tid --against http://other-member.example/feeds/tid/
    """
    if against is not None:
        from federation.cli.trust import verify_against_command
        return verify_against_command(home, list(names), against)
    from federation.store.mirror import Mirror
    mirror = Mirror.existing(home.require().mirror_db)
    bad = 0
    names = list(names) or [f.name for f in mirror.all()]
    if not names:
        raise UnavailableError(f"the mirror at {mirror.path} follows no feed: nothing to verify")
    for name in names:
        problems = mirror.audit(name)
        f = mirror.get(name)
        if problems:
            bad += 1
            for p in problems:
                click.echo(f"{name}: FAIL {p}")
            mirror.mark_damaged(name, problems)  # lookups fail closed until a sync heals it
            click.echo(f"{name}: marked damaged: lookups fail closed until 'federation sync' rebuilds it "
                       "from its upstreams")
        else:
            click.echo(f"{name}: ok (version {f.version}, size {f.applied_size}, {f.count} active; "
                       "digest and root recomputed from rows)")
    sys.exit(1 if bad else 0)


@cli.command()
@click.argument("name")
@click.option("--after", default=0, show_default=True, help="Return changes after this sequence number.")
@click.option("--limit", default=100, show_default=True)
@click.pass_obj
def changes(home: Home, name, after, limit):
    """Print applied changes of a followed feed as JSON lines, oldest first.

    \b
    Example:
      federation changes tid --after 0
    """
    from federation.store.mirror import Mirror
    for c in Mirror.existing(home.require().mirror_db).changes(name, after, limit):
        click.echo(json.dumps(c))


@cli.command()
@click.option("--home", "demo_home", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the demo's files here (default: a temporary directory).")
def demo(demo_home):
    """Run the whole story on loopback: publish, serve, mirror, withdraw.

    \b
    Example:
      federation demo
    """
    from federation.cli.demo import run_demo
    ok = asyncio.run(run_demo(demo_home))
    sys.exit(0 if ok else 1)


# Commands of other parts of the node live in their own modules; each
# module's register(cli) adds its commands. Add one line per module here.
EXTENSION_MODULES: list[str] = [
    "node",
    "trust",
    "platform",
    "scale",
    "media",
    "feedback",
    "imports",
    "recovery",
]


def _register_extensions() -> None:
    import importlib
    for name in EXTENSION_MODULES:
        importlib.import_module(f"federation.cli.{name}").register(cli)


_register_extensions()


def main() -> None:
    cli(prog_name="federation")
