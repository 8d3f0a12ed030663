"""CLI of the platform side: ``federation platform ...`` and ``federation doctor``.

A thin layer over ``platform_node``, ``lookup``, ``changes_api`` and
``doctor``. Registered through ``cli.EXTENSION_MODULES``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import click

from federation.core.errors import InputError
from federation.cli.logs import log_json_option
from federation.node.home import Home
from federation.platform.pdq_index import DEFAULT_THRESHOLD
from federation.store.tokens import DEFAULT_BURST, DEFAULT_RATE


def read_video_hash(path: str) -> str:
    """A vPDQ text file (or '-': standard input), bounded before it is parsed."""
    from federation.core.vpdq import MAX_QUERY_FRAMES
    limit = MAX_QUERY_FRAMES * 128
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"cannot read the vpdq hash file {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise InputError(f"{path}: over {limit} bytes, more than a query's {MAX_QUERY_FRAMES} frames")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None


@click.group()
def platform():
    """Serve and consume a mirror: lookup API, change stream, webhooks, metrics.

    \b
    Example:
      federation platform serve --port 8081 --sync-interval 30
    """


@platform.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8081, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--threshold", default=DEFAULT_THRESHOLD, show_default=True, type=int,
              help="Default PDQ near-match threshold (Hamming distance) of the lookup API.")
@click.option("--sync-interval", type=float, default=None,
              help="Also sync every followed feed every N seconds in this process.")
@log_json_option
@click.option("--auth", "use_auth", is_flag=True,
              help="Require a platform bearer token (HOME/auth.db) on every route but /healthz.")
@click.option("--insecure-no-auth", is_flag=True,
              help="Allow a non-loopback --host without --auth: anyone who reaches the port reads every hash "
                   "of the mirror. Only behind your own authenticating proxy.")
@click.pass_obj
def serve(home: Home, host, port, threshold, sync_interval, use_auth, insecure_no_auth=False):
    """Serve the mirror's lookup API, change stream, webhooks and /metrics.

    Routes: /lookup, /changes, /consumers/NAME/changes, /consumers/NAME/ack,
    /webhooks, /metrics (see docs/openapi.yaml). Without --auth there is no
    authentication, so a --host that is not a loopback address is refused
    (exit 2) unless --insecure-no-auth says an authenticating proxy is in
    front. With --auth, callers send a token from 'federation platform
    token issue'.

    \b
    Example:
      federation platform serve --port 8081 --sync-interval 30 --log-json
      federation platform serve --host 0.0.0.0 --auth
    """
    from federation.net.httpserver import run_app
    from federation.platform.node import PlatformNode
    from federation.node.status import install_platform_status
    if not use_auth and not is_loopback(host):
        if not insecure_no_auth:
            raise InputError(f"--host {host} is not a loopback address, and without --auth anyone who reaches it "
                             "reads every hash of the mirror in the clear: add --auth (tokens from 'federation "
                             "platform token issue'), or --insecure-no-auth behind your own authenticating proxy")
        logging.getLogger("federation.platform").warning(
            "serving the platform API on %s without authentication (--insecure-no-auth): every hash of the mirror "
            "is readable by anyone who reaches it", host)
    status = install_platform_status("federation platform node", home.mirror_db, home.platform_db, use_auth)
    node = PlatformNode(home.mirror_db, home.platform_db, threshold, sync_interval,
                        auth_db=home.auth_db if use_auth else None, extensions=[status])
    run_app(node.app, host, port,
            on_start=lambda url: logging.getLogger("federation.platform").info(
                "serving the platform API of %s on %s/ (%s)", home.mirror_db, url,
                "platform tokens required" if use_auth else "no authentication"))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` included); a
    name that is not an address is not (it may resolve anywhere)."""
    import ipaddress
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # not an address: a host name, which may resolve to any interface
        return False


@platform.command("lookup")
@click.argument("hash_type")
@click.argument("values", nargs=-1, required=True)
@click.option("--threshold", type=int, default=DEFAULT_THRESHOLD, show_default=True,
              help="PDQ: report hashes within this Hamming distance (0 = exact); vpdq: the frame distance.")
@click.option("--query-percent", type=float, help="vpdq: share of the query's frames that must match (default 80).")
@click.option("--target-percent", type=float, help="vpdq: share of the listed video's frames that must match "
                                                   "(default 0).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one JSON object per value).")
@click.option("--feed", "feeds", multiple=True, help="Answer from this followed feed only (repeatable; default all).")
@click.option("--allow-stale", is_flag=True,
              help="Answer even from feeds that are stale or whose last sync failed verification (the answer "
                   "says so). Never from a missing or never-synced mirror.")
@click.pass_obj
def lookup_cmd(home: Home, hash_type, values, threshold, query_percent, target_percent, as_json, feeds,
               allow_stale):
    """Look up hashes in the mirror, PDQ by near-match, videos (vpdq) by vPDQ:
    exit 0 if any matched, 1 if none, 2 if none matched and a value was bad,
    5 if the mirror cannot stand behind an answer.

    HASH_TYPE is md5, sha1, sha256, photodna (exact match), pdq (every
    active PDQ hash within --threshold bits; 'federation lookup' is exact
    only) or vpdq. Each match shows feed, case, labels, the version that
    added it and, for PDQ, the Hamming distance; for vpdq, the share of the
    query's frames and of the listed video's frames that matched. For vpdq
    each VALUE is a file holding the video's vPDQ text (what 'federation
    hash --vpdq' writes), or '-' for standard input. A bad VALUE is reported
    on its own line ("error ...") and the others are still answered. Fails
    closed like 'federation lookup' (exit 5, nothing created) and says what
    each answer is based on.

    \b
    Example:
      federation platform lookup pdq f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22
      federation platform lookup pdq HEX --threshold 20 --json
      federation platform lookup md5 9e107d9d372bb6826bd81d3542a419d6 d41d8cd98f00b204e9800998ecf8427e
      federation hash upload.mp4 --vpdq upload.vpdq && federation platform lookup vpdq upload.vpdq
    """
    from federation.core.errors import UnavailableError
    from federation.platform.lookup import Lookup, batch_answers, parse_batch
    from federation.store.mirror import Mirror
    if hash_type.lower() == "vpdq":
        extra = {k: v for k, v in (("query_percent", query_percent), ("target_percent", target_percent))
                 if v is not None}
        raw = [{"type": "vpdq", "hash": read_video_hash(v), "threshold": threshold, **extra} for v in values]
    else:
        raw = [{"type": hash_type, "hash": v, **({"threshold": threshold} if hash_type.lower() == "pdq" else {})}
               for v in values]
    parsed = parse_batch(raw)
    bad = [q for q in parsed if isinstance(q, dict)]
    if len(bad) == len(parsed):  # nothing to look up: a usage error, as for one bad value
        raise InputError("; ".join(q["error"] for q in bad))
    Mirror.existing(home.require().mirror_db).close()  # exists (and its schema is current)
    lk = Lookup(home.mirror_db, threshold)
    try:
        try:
            bases = lk.bases(frozenset(feeds) if feeds else None, allow_stale)
        except UnavailableError as e:
            if as_json:
                click.echo(json.dumps({"error": str(e), "kind": e.kind, "feeds": [b.to_json() for b in e.problems]}))
            raise
        results = batch_answers(lk, parsed, frozenset(b.feed for b in bases))
    finally:
        lk.close()
    for r in results:
        if "error" in r:
            click.echo(json.dumps({**r, "hash": values[r["index"]][:200]}) if as_json else
                       f"error {values[r['index']][:200]}: {r['error']}")
            continue
        if as_json:
            click.echo(json.dumps({**r, "based_on": [b.to_json() for b in bases]}))
            continue
        for m in r["matches"]:
            if r["type"] == "vpdq":
                click.echo(f"MATCH vpdq {r['hash']} -> feed={m['feed']} case={m['case']} "
                           f"labels={','.join(m['labels'])} version={m['added_version']} video={m['video']} "
                           f"query={m['query_match_percent']}% target={m['target_match_percent']}%")
                continue
            dist = f" distance={m['distance']}" if r["type"] == "pdq" else ""
            click.echo(f"MATCH {r['type']} {r['hash']} -> feed={m['feed']} case={m['case']} "
                       f"labels={','.join(m['labels'])} version={m['added_version']}{dist}"
                       + (f" matched={m['hash']}" if m["hash"] != r["hash"] else ""))
        if not r["matches"]:
            click.echo(f"no match {r['type']} {r['hash']}")
    if not as_json:
        for b in bases:
            click.echo(f"based on {b.describe()}")
    sys.exit(0 if any(r.get("matched") for r in results) else 2 if bad else 1)


@platform.command("changes")
@click.option("--consumer", help="Read from this consumer's stored cursor and advance it after printing.")
@click.option("--after", type=int, help="Read changes after this sequence number (no stored cursor).")
@click.option("--feed", help="Only changes of this followed feed.")
@click.option("--limit", default=100, show_default=True, help="At most this many changes.")
@click.option("--no-ack", is_flag=True, help="With --consumer: print without advancing the cursor.")
@click.pass_obj
def changes_cmd(home: Home, consumer, after, feed, limit, no_ack):
    """Print applied changes (add, relabel, withdraw) as JSON lines, oldest first.

    With --consumer the cursor is stored in HOME/platform.db and advanced
    only after every line was written, so a crash re-prints rather than
    skips (at-least-once; deduplicate on "seq").

    \b
    Example:
      federation platform changes --consumer moderation --limit 500
      federation platform changes --after 0 --feed tid
    """
    from federation.platform.changes import head, read_changes
    from federation.store.platform import PlatformStore
    from federation.store.db import connect
    from federation.store.mirror import Mirror
    if (consumer is None) == (after is None):
        raise InputError("give exactly one of --consumer NAME or --after SEQ")
    Mirror.existing(home.require().mirror_db).close()
    mirror = connect(home.mirror_db, readonly=True)
    store = PlatformStore(home.platform_db) if consumer else None
    start = store.cursor(consumer) if store else after
    # A consumer's stream is its own feeds' changes (those of the token that created it).
    scope = store.claim(consumer, None) if store else None
    rows = read_changes(mirror, start, limit, feed, feeds=scope)
    for row in rows:
        click.echo(json.dumps(row))
    sys.stdout.flush()
    if store and rows and not no_ack:
        store.ack(consumer, rows[-1]["seq"], head(mirror))


@platform.group()
def webhook():
    """Register webhooks that receive the change stream (Standard Webhooks signed, retried).

    \b
    Example:
      federation platform webhook add moderation https://platform.example/hooks/hashes
    """


@webhook.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--feed", help="Only this followed feed's changes (default: all).")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="File holding the Standard Webhooks secret, whsec_<base64> (default: generate one and print it).")
@click.option("--from-now", is_flag=True, help="Start at the newest change instead of the beginning.")
@click.pass_obj
def webhook_add(home: Home, name, url, feed, secret_file, from_now):
    """Deliver every change to URL as signed JSON POSTs, until it answers 2xx.

    \b
    Example:
      federation platform webhook add moderation https://platform.example/hooks/hashes --feed tid
    """
    from federation.platform.changes import head
    from federation.store.platform import PlatformStore
    from federation.store.db import connect
    from federation.store.mirror import Mirror
    Mirror(home.mirror_db).close()
    start = head(connect(home.mirror_db, readonly=True)) if from_now else 0
    secret = secret_file.read_text().strip() if secret_file else None
    hook = PlatformStore(home.platform_db).add_webhook(name, url, secret, feed, start)
    click.echo(f"webhook {hook.name} -> {hook.url} from seq {hook.cursor}")
    if secret is None:
        click.echo(f"secret: {hook.secret}  (give it to the receiver; it verifies webhook-signature,"
                   " e.g. standardwebhooks.Webhook(secret).verify(body, headers))")


@webhook.command("list")
@click.pass_obj
def webhook_list(home: Home):
    """Show webhooks with their cursor, pending batch and last error.

    \b
    Example:
      federation platform webhook list
    """
    from federation.store.platform import PlatformStore
    if not home.require().platform_db.exists():
        return
    for h in PlatformStore(home.platform_db).webhooks():
        click.echo(json.dumps(h.public()))


@webhook.command("remove")
@click.argument("name")
@click.pass_obj
def webhook_remove(home: Home, name):
    """Stop delivering to webhook NAME and forget its cursor.

    \b
    Example:
      federation platform webhook remove moderation
    """
    from federation.store.platform import PlatformStore
    PlatformStore(home.platform_db).remove_webhook(name)
    click.echo(f"removed webhook {name}")


@platform.group()
def token():
    """Platform API tokens: a node's [platform], or 'platform serve --auth' (list, revoke: 'federation token').

    \b
    Example:
      federation platform token issue moderation
    """


@token.command("issue")
@click.argument("holder")
@click.option("--feed", "feeds", multiple=True, default=["*"], show_default=True,
              help="Feed whose records the token may see (repeat; '*' = all, needed for /webhooks and /metrics).")
@click.option("--rate", default=DEFAULT_RATE, show_default=True, help="Requests per second (token bucket).")
@click.option("--burst", default=DEFAULT_BURST, show_default=True, help="Bucket size.")
@click.pass_obj
def token_issue(home: Home, holder, feeds, rate, burst):
    """Issue a platform token for HOLDER; the secret is printed once.

    The token may query the lookup API and the change stream of this
    home's platform node, filtered to its feeds; it cannot read feeds.

    \b
    Example:
      federation platform token issue moderation
      federation platform token issue trust-safety --feed tid --rate 50
    """
    from federation.store.tokens import TokenStore
    from federation.platform.auth import ROLE
    store = TokenStore(home.auth_db)
    try:
        t, secret = store.issue(holder, ROLE, list(feeds), rate, burst)
    finally:
        store.close()
    click.echo(f"token {t.id} for {t.member} ({t.role}; feeds {', '.join(t.feeds)})")
    click.echo(f"secret (shown once): {secret}")


@click.command()
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              help="Also check this node config (TOML): keys, trust files, tokens, upstreams.")
@click.option("--no-network", is_flag=True, help="Skip the upstream reachability checks.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for each upstream.")
@click.pass_obj
def doctor(home: Home, config, no_network, timeout):
    """Check config, trust keys, key file permissions and upstream reachability.

    With --config, the node config is parsed like 'federation serve
    --config' does, and the home it names is checked. Exits 1 if any check
    failed; changes nothing.

    \b
    Example:
      federation doctor
      federation doctor --no-network
      federation doctor --config node.toml --timeout 5
    """
    from federation.node.doctor import FAIL, load_node_config, run_doctor
    checks, cfg = [], None
    if config is not None:
        cfg, parsed = load_node_config(config)
        checks.append(parsed)
        if cfg is not None and cfg.home is not None:
            home = Home(Path(cfg.home))  # not resolve(): the doctor creates nothing
    checks += asyncio.run(run_doctor(home, network=not no_network, timeout=timeout, config=cfg))
    for c in checks:
        click.echo(f"{c.status.upper():4} {c.what}: {c.detail}")
    sys.exit(1 if any(c.status == FAIL for c in checks) else 0)


def register(cli: click.Group) -> None:
    cli.add_command(platform)
    cli.add_command(doctor)
