"""CLI for nodes and distribution: node status, tokens, audit, export, post.

Registered by ``cli.EXTENSION_MODULES``; ``federation serve --config`` calls
``serve_config`` here. Thin: every command calls ``node``, ``auth``,
``export`` or ``push``.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import click

from federation.store.tokens import DEFAULT_BURST, DEFAULT_RATE, ROLES
from federation.core.errors import FederationError, InputError, TransportError
from federation.core.freshness import REFRESH_INTERVAL
from federation.cli.logs import log_json_option
from federation.cli.progress import bar as progress_bar, progress_option
from federation.node.home import Home


def _node_home(home: Home, cfg) -> Home:
    return Home.resolve(str(cfg.home)) if cfg.home is not None else home


def serve_config(home: Home, config: str) -> None:
    from federation.node.config import load_config
    from federation.node.assembly import run_node
    cfg = load_config(config)
    run_node(cfg, _node_home(home, cfg), print_fn=click.echo)


@click.group("node")
def node_group():
    """Inspect a node declared by a TOML config (serve it with 'federation serve --config').

    \b
    Example:
      federation node check node.toml
      federation node status node.toml
    """


@node_group.command("check")
@click.argument("config", type=click.Path(dir_okay=False, exists=True))
def node_check(config):
    """Validate CONFIG and print what the node would publish, follow and relay.

    \b
    Example:
      federation node check node.toml
    """
    from federation.node.config import load_config, trusted_vkeys
    cfg = load_config(config)
    click.echo(f"listen {cfg.host}:{cfg.port}")
    for p in cfg.publish:
        click.echo(f"publish {p.name}: access {p.access or 'as stored with the feed'}, "
                   f"publishing API {'on' if p.api else 'off'}")
    from federation.core.freshness import short_max_age
    for f in cfg.follow:
        click.echo(f"follow  {f.name}: {f.origin}, {len(trusted_vkeys(f))} key(s), upstreams {', '.join(f.urls)}"
                   f"{', relayed (' + f.access + ')' if f.relay else ''}")
        short = short_max_age(f.max_age) if f.max_age is not None and f.trust is None else ""
        if short:
            click.echo(f"warning: [[follow]] {f.name} max_age: {short}", err=True)
    if cfg.platform is not None:
        click.echo(f"platform API: /lookup (PDQ threshold {cfg.platform.threshold}), /changes, /webhooks, /metrics; "
                   "platform tokens required")


async def _upstream_size(f) -> tuple[int | None, str | None]:
    from federation.net.fetcher import Fetcher
    from federation.node.assembly import upstream_headers
    from federation.core.note import MAX_NOTE_BYTES
    from federation.core.checkpoint import checkpoint_size
    try:
        async with Fetcher(list(f.urls), headers=upstream_headers(f)) as fetcher:
            return checkpoint_size(await fetcher.get("checkpoint", MAX_NOTE_BYTES)), None
    except FederationError as e:
        return None, f"{e.kind}: {e}"


@node_group.command("status")
@click.argument("config", type=click.Path(dir_okay=False, exists=True))
@click.option("--offline", is_flag=True, help="Do not ask upstreams for their size (no lag).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def node_status(home: Home, config, offline, as_json):
    """Every feed of the node: version, age, last error and lag behind its upstream.

    Lag is the number of log entries the first answering upstream has that
    this node has not applied (its checkpoint is read, not trusted: only a
    sync verifies it).

    \b
    Example:
      federation node status node.toml --json
    """
    from federation.store.mirror import Mirror
    from federation.node.config import load_config
    from federation.store.publisher import Publisher
    cfg = load_config(config)
    home = _node_home(home, cfg).require()
    now = int(time.time())
    out = []
    if cfg.publish and home.publisher_db.exists():
        pub = Publisher(home.publisher_db)
        for p in cfg.publish:
            try:
                f = pub.feed(p.name)
                out.append(dict(feed=p.name, role="publish", version=f.version, size=f.size, count=f.count,
                                age=now - f.updated, last_error=None, lag=0))
            except InputError as e:
                out.append(dict(feed=p.name, role="publish", last_error=str(e)))
    if cfg.follow:
        from federation.core.readiness import assess
        mirror = Mirror(home.mirror_db) if home.mirror_db.exists() else None
        for f in cfg.follow:
            try:
                if mirror is None:
                    raise InputError("no mirror database yet")
                m = mirror.get(f.name)
            except InputError:
                out.append(dict(feed=f.name, role="follow", version=0, size=0, ready=False,
                                problem="never_synced", last_error="never synced"))
                continue
            basis = assess(m, now)
            row = dict(feed=f.name, role="relay" if f.relay else "follow", version=m.version,
                       size=m.applied_size, count=m.count, age=(now - m.updated) if m.updated else None,
                       ready=basis.ready, problem=basis.problem, verified_age=basis.age, max_age=m.max_age,
                       last_sync=m.last_sync, last_error=m.last_error, lag=None)
            if not offline:
                up, err = asyncio.run(_upstream_size(f))
                row["upstream_size"], row["upstream_error"] = up, err
                row["lag"] = None if up is None else max(0, up - m.applied_size)
            out.append(row)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for r in out:
        age = f"{r['age']}s ago" if r.get("age") is not None else "never"
        lag = "" if r.get("lag") is None else f", lag {r['lag']} entries"
        err = f", last error: {r['last_error']}" if r.get("last_error") else ""
        ready = "" if "ready" not in r else ", ready" if r["ready"] else f", NOT READY ({r['problem']})"
        click.echo(f"{r['role']:8} {r['feed']}: version {r.get('version', '?')}, size {r.get('size', '?')}, "
                   f"updated {age}{lag}{ready}{err}")


@click.group("token")
def token_group():
    """Bearer tokens for members (read) and publishers (publishing API).

    \b
    Example:
      federation token issue platform-a --feed tid --feed internal
    """


def _store(home: Home):
    from federation.store.tokens import TokenStore
    return TokenStore(home.auth_db)


@token_group.command("issue")
@click.argument("member")
@click.option("--feed", "feeds", multiple=True, required=True, help="Feed the token may use; repeat; '*' for all.")
@click.option("--role", type=click.Choice(list(ROLES)), default="member", show_default=True,
              help="member: read; publisher: read and POST batches; platform: the platform API "
                   "(lookup, changes) of a node with [platform] in its config, or 'platform serve --auth'.")
@click.option("--rate", type=float, default=DEFAULT_RATE, show_default=True, help="Requests per second (sustained).")
@click.option("--burst", type=int, default=DEFAULT_BURST, show_default=True, help="Requests allowed in a burst.")
@click.pass_obj
def token_issue(home: Home, member, feeds, role, rate, burst):
    """Issue a token for MEMBER; the secret is printed once and stored only hashed.

    \b
    Example:
      federation token issue platform-a --feed tid
      federation token issue ingest --feed internal --role publisher
    """
    t, secret = _store(home).issue(member, role, list(feeds), rate, burst)
    click.echo(f"token {t.id} for {t.member} ({t.role}; feeds {', '.join(t.feeds)})")
    click.echo(secret)


@token_group.command("list")
@click.pass_obj
def token_list(home: Home):
    """List tokens (ids, members, scopes; never secrets).

    \b
    Example:
      federation token list
    """
    if not home.require().auth_db.exists():
        return
    for t in _store(home).all():
        state = f"revoked {t.revoked}" if t.revoked else "valid"
        click.echo(f"{t.id}\t{t.member}\t{t.role}\t{','.join(t.feeds)}\t{t.rate:g}/s burst {t.burst}\t{state}")


@token_group.command("revoke")
@click.argument("token_id")
@click.pass_obj
def token_revoke(home: Home, token_id):
    """Revoke a token by id; it is refused (401) from the next request on.

    \b
    Example:
      federation token revoke k3j9x0a1b2c3
    """
    t = _store(home).revoke(token_id)
    click.echo(f"revoked {t.id} ({t.member})")


@click.command("audit")
@click.option("--feed", help="Only this feed.")
@click.option("--limit", default=100, show_default=True, help="Newest N records.")
@click.pass_obj
def audit(home: Home, feed, limit):
    """Show the audit log: who published what, which member fetched which version.

    \b
    Example:
      federation audit --feed tid --limit 20
    """
    if not home.require().auth_db.exists():
        return
    for r in _store(home).audit(feed, limit):
        click.echo(json.dumps(r))


@click.command("export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.argument("names", nargs=-1)
@click.option("--mirror", "from_mirror", is_flag=True, help="Export followed feeds from the mirror (a static relay).")
@click.option("--config", "config", type=click.Path(dir_okay=False, exists=True),
              help="With --mirror: the node config whose [[follow]] access declares each followed feed's "
                   "access (and whose home is used). Without it, followed feeds count as members-only.")
@click.option("--include-members-only", is_flag=True,
              help="Also write members-only feeds, in the clear. Only for a directory that is itself "
                   "served to members alone.")
@click.option("--watch", is_flag=True, help="Keep exporting whenever the database changes.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between checks with --watch.")
@click.option("--refresh-interval", type=click.FloatRange(min=0), default=REFRESH_INTERVAL, show_default=True,
              help="With --watch, for published feeds whose key file is here (recorded with the feed, else "
                   "HOME/private/NAME.key): re-stamp the checkpoint this often so mirrors of the static copy "
                   "see the feed is alive; 0 turns it off.")
@log_json_option
@progress_option
@click.pass_obj
def export(home: Home, out, names, from_mirror, config, include_members_only, watch, interval,
           refresh_interval=REFRESH_INTERVAL, progress=None):
    """Write feeds as static files under OUT/NAME/ (checkpoint last), for any web host.

    OUT/NAME/ then holds what the server serves under /feeds/NAME/: tiles,
    snapshot/, trust/ and the checkpoint; bundles the feed pruned are
    removed. Incremental and atomic: run it after each publish, or with
    --watch. A static host has no access control, so members-only feeds are
    left out (named: refused, exit 2) unless --include-members-only. With
    --watch, published feeds whose key is here are re-stamped at start and
    every --refresh-interval seconds, so mirrors of the copy do not see them
    stale. A full disk or an unwritable OUT is one error line (exit 4). On a
    terminal (or with --progress) a bar shows each feed's tiles and bundles.

    \b
    Example:
      federation export /var/www/html/feeds
      federation export /srv/static/feeds tid --watch
      federation export --mirror /srv/relay/feeds --config relay.toml
    """
    from federation.net.export import export_feed, remove_export_leftovers, split_by_access
    declared: dict[str, str] = {}
    if config is not None:
        if not from_mirror:
            raise InputError("--config declares followed feeds' access: use it with --mirror (a published "
                             "feed's access is stored with it: 'federation feed set-access')")
        from federation.node.assembly import recorded_token_envs
        from federation.node.config import load_config, with_recorded_tokens
        cfg = load_config(config)
        home = _node_home(home, cfg)
        cfg = with_recorded_tokens(cfg, recorded_token_envs(home))  # fetched with a token: never exported public
        declared = {f.name: f.access for f in cfg.follow}
    db = home.mirror_db if from_mirror else home.publisher_db
    if not db.exists():
        raise InputError(f"{db} does not exist")
    _check_export_dir(out)
    why = "access unknown without --config, so members-only" if from_mirror and config is None else "members-only"
    reported: set[str] = set()
    cleaned: set[str] = set()
    refresh_signers: dict | None = None
    refreshed_at: float | None = None  # None: not yet, so the first round re-stamps whatever the uptime
    while True:
        todo, withheld = split_by_access(db, list(names), declared, include_members_only)
        if watch and not from_mirror and refresh_interval > 0 and (
                refreshed_at is None or time.monotonic() - refreshed_at >= refresh_interval):
            refresh_signers = _refresh_exported(home, todo, refresh_signers)
            refreshed_at = time.monotonic()
        if names and withheld:
            raise InputError(f"feed(s) {', '.join(withheld)}: {why}; a static directory has no access control, "
                             "so nothing was exported. Pass --include-members-only only if OUT is served to "
                             "members alone.")
        left = [n for n in withheld if (out / n).exists()]
        for name in sorted(set(withheld) - reported):
            reported.add(name)
            click.echo(f"{name}: not exported: {why} (--include-members-only to write it in the clear)"
                       + (f"; an earlier export of it is still in {out / name}: delete it" if name in left else ""),
                       err=True)
        for name in todo:
            if name not in cleaned:  # once per start: what a killed export left there
                remove_export_leftovers(out / name)
                cleaned.add(name)
            b = progress_bar(f"export {name}", progress, unit=" files")
            try:
                r = export_feed(db, name, out / name, access=declared.get(name),
                                include_members_only=include_members_only, progress=_advance(b))
            finally:
                b.close()  # before the summary, which must not be drawn over the bar
            if r.written or r.checkpoint_changed or r.removed or not watch:
                click.echo(f"{name}: size {r.size}, {r.written} files written, {r.skipped} unchanged"
                           f"{f', {r.removed} pruned bundles removed' if r.removed else ''}"
                           f"{', checkpoint updated' if r.checkpoint_changed else ''}")
                if r.access == "members":
                    click.echo(f"{name}: MEMBERS-ONLY feed written in the clear to {out / name}/ "
                               "(checkpoint, tile/, snapshot/, trust/): serve it to members alone", err=True)
        if not watch:
            if left:  # a members-only list sits in a public directory: say so with the exit code
                raise InputError(f"{', '.join(str(out / n) for n in left)}: members-only feed(s) from an earlier "
                                 "export are still in the export directory; delete them")
            return
        time.sleep(interval)


def _advance(b):
    """``export_feed``'s ``progress(done, total)`` onto a tqdm bar."""
    def advance(done: int, total: int) -> None:
        if b.total != total:
            b.reset(total=total)
        b.update(done - b.n)
    return advance


def _check_export_dir(out: Path) -> None:
    """``InputError`` if ``out`` cannot be a directory: it, or its nearest
    existing ancestor, is something else (a regular file)."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{out} cannot be the export directory: {existing} is not a directory")


def _refresh_exported(home: Home, names: list[str], signers: dict | None) -> dict:
    """Re-stamp the checkpoints of the published feeds ``names`` whose key
    loads (loaded once, and the feeds without one reported once)."""
    from federation.store.publisher import Publisher
    from federation.node.refresh import load_refresh_signers, refresh_feeds
    if signers is None:
        signers, missing = load_refresh_signers(home, names)
        for m in missing:
            click.echo(f"{m.feed}: checkpoint not refreshed ({m.problem}); mirrors of the export will see it "
                       "stale unless 'federation feed refresh' runs where the key is", err=True)
    pub = Publisher(home.publisher_db)
    try:
        for r in refresh_feeds(pub, {n: s for n, s in signers.items() if n in names}):
            if r.problem:
                click.echo(f"{r.feed}: checkpoint not refreshed: {r.problem}", err=True)
    finally:
        pub.close()
    return signers


async def _post(url: str, body: bytes, content_type: str, token: str | None) -> tuple[int, str]:
    import aiohttp
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
            async with s.post(url, data=body, headers=headers) as resp:
                return resp.status, await resp.text()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        raise TransportError(f"POST {url}: {type(e).__name__}: {e}") from e


@click.command("post-batch")
@click.argument("url")
@click.argument("batch", type=click.File("rb"))
@click.option("--batch-id", help="Idempotency key (default: a new UUID; reuse it when retrying).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Default: from the file extension.")
@click.option("--token-env", default="FEDERATION_TOKEN", show_default=True,
              help="Environment variable holding the publisher token.")
def post_batch(url, batch, batch_id, fmt, token_env):
    """POST BATCH to a node's publishing API at URL (the feed prefix).

    \b
    Example:
      FEDERATION_TOKEN=fedtok_... federation post-batch http://node:8080/feeds/internal/ batch.csv \\
        --batch-id 2024-06-01-a
    """
    import os
    fmt = fmt or ("csv" if batch.name.endswith(".csv") else "jsonl")
    batch_id = batch_id or str(uuid.uuid4())
    target = url.rstrip("/") + "/batches/" + batch_id
    status, text = asyncio.run(_post(target, batch.read(), "text/csv" if fmt == "csv" else "application/x-ndjson",
                                     os.environ.get(token_env)))
    click.echo(text.strip())
    if status not in (200, 201):
        click.echo(f"error: HTTP {status} (batch id {batch_id})", err=True)
        sys.exit(3 if status >= 500 else 2)


def register(cli: click.Group) -> None:
    for cmd in (node_group, token_group, audit, export, post_batch):
        cli.add_command(cmd)
