"""CLI of feedback: ``federation feedback report|report-batch|status|list|review``.

A platform reports (``report``, ``report-batch``) and reads back its own
reports (``status``) over HTTP with its member token; the clearinghouse
aggregates (``list``) and reviews (``review``) them in its own home. Thin:
``net.feedback_client``, ``store.feedback`` and ``node.feedback`` do the work.
Registered through ``cli.EXTENSION_MODULES``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import click

from federation.core.errors import InputError, UnavailableError, UpstreamRateLimitedError
from federation.core.feedback import KINDS, MAX_REPORTS, STATES, parse_item, parse_report, parse_since, read_reports
from federation.node.home import Home

TOKEN_ENV = "FEDERATION_TOKEN"
_URL_HELP = ("Required: the feed's URL on its publisher's own node (its tlog-tiles prefix, e.g. "
             "http://ch.example:8080/feeds/tid/). The member token is sent there only, never to a relay.")
_TOKEN_HELP = ("Environment variable holding the member token the publisher issued for FEED "
               f"(default: the one FEED was followed with, 'follow --token-env', else {TOKEN_ENV}).")


@click.group()
def feedback():
    """Report back on a feed's hashes, and review the reports into withdrawals.

    \b
    Example:
      federation feedback report tid md5 9e107d9d372bb6826bd81d3542a419d6 false_positive --note "a stock photo"
      federation feedback list tid --kind false_positive
      federation feedback review tid --withdraw md5:9e107d9d372bb6826bd81d3542a419d6
    """


def _client(home: Home, feed: str, url: str | None, token_env: str | None):
    """The feedback client of FEED's publisher, with the member token.

    Only the URL given with ``--url`` is used, never the URLs the mirror
    follows FEED from: those may be relays (or any mirror re-serving the
    feed), and the token is the publisher's grant to this member -- a relay
    that saw it could report, and read this member's reports, as it. A
    refused token is never retried elsewhere for the same reason.
    ``token_env`` None: the variable the feed was followed with
    (``follow --token-env``), else ``FEDERATION_TOKEN``.
    """
    from federation.net.feedback_client import FeedbackClient
    follow = _follow(home, feed)
    if not url:
        where = f" (followed from {', '.join(follow.urls)})" if follow is not None else ""
        raise InputError(f"give FEED's URL on its publisher's own node with --url{where}: feedback and the member "
                         "token go to the publisher only, never to a relay or another upstream")
    if token_env is None:
        token_env = follow.token_env if follow is not None and follow.token_env else TOKEN_ENV
    return FeedbackClient(url, os.environ.get(token_env), token_hint=f"${token_env}")


def _follow(home: Home, feed: str):
    """How this home's mirror follows ``feed``, or None."""
    from federation.store.mirror import Mirror
    if not home.mirror_db.exists():
        return None
    mirror = Mirror.existing(home.mirror_db)
    try:
        return mirror.get(feed)
    except InputError:
        return None
    finally:
        mirror.close()


def _report_line(r: dict) -> str:
    what = f"{r['type']}:{r['hash']}" if r.get("hash") else f"case:{r['case']}"
    if r.get("hash") and r.get("case"):
        what += f"@{r['case']}"
    state = r["state"] + (f" by version {r['resolved_version']}" if r.get("resolved_version") else "")
    return f"{r['id']}\t{r['kind']}\t{what}\t{state}" + ("\t(replay)" if r.get("replayed") else "")


@feedback.command("report")
@click.argument("feed")
@click.argument("hash_type")
@click.argument("value")
@click.argument("kind", type=click.Choice(KINDS))
@click.option("--case", "case", help="Only within this case of the feed (a hash report).")
@click.option("--note", default="", help="A short note for the clearinghouse (at most 1000 characters).")
@click.option("--label", "labels", multiple=True, help="A label (repeatable).")
@click.option("--id", "report_id", help="The report's idempotency key (default: derived from its content, so "
              "sending the same report again is a replay).")
@click.option("--url", help=_URL_HELP)
@click.option("--token-env", metavar="VAR", help=_TOKEN_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def report(home: Home, feed, hash_type, value, kind, case, note, labels, report_id, url, token_env, as_json):
    """Report KIND (seen, actioned, false_positive, disputed) about one hash of
    FEED -- or, with HASH_TYPE 'case', about the whole case VALUE -- to the
    feed's publisher. Exit 2 if it refuses the report or the token.

    \b
    Example:
      FEDERATION_TOKEN=fedtok_... federation feedback report tid md5 9e107d9d372bb6826bd81d3542a419d6 \\
        false_positive --note "matched a stock photo"
      federation feedback report tid case c-17 disputed --note "the subject disputes it"
    """
    if hash_type.lower() == "case":
        if case:
            raise InputError("a case report names its case as VALUE; do not also pass --case")
        obj = {"case": value}
    else:
        obj = {"type": hash_type, "hash": value, **({"case": case} if case else {})}
    r = parse_report({**obj, "kind": kind, "note": note, "labels": list(labels),
                      **({"id": report_id} if report_id else {})}, "report", need_id=False)
    answer = _client(home, feed, url, token_env).report([r])
    _print_reports(answer["reports"], as_json)


@feedback.command("report-batch")
@click.argument("feed")
@click.argument("file", type=click.File("rb"))
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Default: from the file extension.")
@click.option("--url", help=_URL_HELP)
@click.option("--token-env", metavar="VAR", help=_TOKEN_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def report_batch(home: Home, feed, file, fmt, url, token_env, as_json):
    """Report every line of FILE ('-' for stdin) to FEED's publisher, in
    requests of up to 1000 reports, each all or nothing.

    The file is checked whole before anything is sent (a bad line anywhere:
    nothing is sent), then streamed: memory stays bounded by one request.
    Past the publisher's rate (429) the request waits the answer's
    Retry-After (at most 300 seconds a time) and is sent again;
    a report sent again is a replay, so rerunning a batch is safe.

    CSV header: id,kind,type,hash,case,note,labels (id optional; a case
    report leaves type and hash empty). JSONL: one such object a line.

    \b
    Example:
      federation feedback report-batch tid seen.csv --url https://ch.example/feeds/tid/
    """
    fmt = fmt or ("jsonl" if file.name.endswith((".jsonl", ".ndjson")) else "csv")
    client = _client(home, feed, url, token_env)
    with _seekable(file) as f:
        if not any(True for _ in read_reports(f, fmt)):  # every line checked, none kept
            raise InputError(f"{file.name}: no reports")
        f.seek(0)
        if as_json:
            click.echo('{"reports": [', nl=False)
        first = True
        for chunk in _chunks(read_reports(f, fmt), MAX_REPORTS):
            for r in _send(client, chunk):
                if as_json:
                    click.echo(("" if first else ",\n") + json.dumps(r), nl=False)
                else:
                    click.echo(_report_line(r))
                first = False
        if as_json:
            click.echo("]}")


MAX_RATE_WAIT = 300  # seconds: a publisher asking for a longer wait is answered by giving up (exit 3)
MAX_RATE_TRIES = 20  # 429s in a row for one request before giving up


def _send(client, chunk: list) -> list[dict]:
    """One request of reports, sent again after each 429's Retry-After (bounded)."""
    for _ in range(MAX_RATE_TRIES):
        try:
            return client.report(chunk)["reports"]
        except UpstreamRateLimitedError as e:
            if e.retry_after > MAX_RATE_WAIT:
                raise UpstreamRateLimitedError(f"{e}; the publisher asks for a wait of {e.retry_after} s, over "
                                               f"{MAX_RATE_WAIT} s: run the batch again later (the reports "
                                               "already taken are replays then)", e.retry_after) from None
            click.echo(f"rate-limited by the publisher: sending {len(chunk)} reports again in {e.retry_after} s",
                       err=True)
            time.sleep(e.retry_after)
    raise UpstreamRateLimitedError(f"still rate-limited after {MAX_RATE_TRIES} tries; run the batch again later "
                                   "(the reports already taken are replays then)", 1)


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextlib.contextmanager
def _seekable(file):
    """``file``, or for a pipe (stdin) a copy spooled to a temporary file, so
    it can be read twice: once to check, once to send."""
    try:
        if file.seekable():
            yield file
            return
    except OSError:
        pass
    with tempfile.TemporaryFile() as copy:
        shutil.copyfileobj(file, copy)
        copy.seek(0)
        yield copy


def _print_reports(reports: list[dict], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"reports": reports}, indent=2))
        return
    for r in reports:
        click.echo(_report_line(r))


@feedback.command("status")
@click.argument("feed")
@click.argument("report_id", required=False)
@click.option("--since", help="Only reports received since: unix seconds, an ISO date or time, or an age (7d).")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--url", help=_URL_HELP)
@click.option("--token-env", metavar="VAR", help=_TOKEN_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(home: Home, feed, report_id, since, limit, url, token_env, as_json):
    """Your own reports on FEED (or the one REPORT_ID) and their state: open,
    rejected, or withdrawn by a version of the feed (which your mirror's
    change stream shows once it synced it).

    \b
    Example:
      federation feedback status tid --since 7d
      federation feedback status tid r-0f3a... --json
    """
    if report_id:
        reports = [_client(home, feed, url, token_env).one(report_id)]
    else:
        start = parse_since(since, int(time.time())) if since else 0
        reports = _client(home, feed, url, token_env).mine(start, limit)
    _print_reports(reports, as_json)


def _publisher_feedback(home: Home):
    from federation.store.feedback import FeedbackStore
    from federation.store.publisher import Publisher
    if not home.require().publisher_db.exists():
        raise UnavailableError(f"no publisher database at {home.publisher_db}: this node publishes no feed")
    Publisher(home.publisher_db).close()  # migrate before reading
    return FeedbackStore(home.publisher_db)


@feedback.command("list")
@click.argument("feed")
@click.option("--kind", type=click.Choice(KINDS), help="Only reports of this kind.")
@click.option("--state", type=click.Choice(STATES), help="Only reports in this state.")
@click.option("--since", help="Only reports received since: unix seconds, an ISO date or time, or an age (7d).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Most targets shown.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_cmd(home: Home, feed, kind, state, since, limit, as_json):
    """The clearinghouse's view of the reports on FEED: per hash, hash in a
    case, or case, the counts per kind, how many are still open, and which
    members reported (shown here only: members never see each other).

    \b
    Example:
      federation feedback list tid --kind false_positive --state open
      federation feedback list tid --since 7d --json
    """
    store = _publisher_feedback(home)
    try:
        start = parse_since(since, int(time.time())) if since else 0
        rows = store.summary(feed, kind, start, state, limit)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"feed": feed, "targets": [r.to_json() for r in rows]}, indent=2))
        return
    for r in rows:
        counts = ", ".join(f"{k} {n}" for k, n in sorted(r.counts.items()))
        click.echo(f"{r.target.describe()}\t{counts}\topen {r.open}\tmembers {','.join(r.members)}")
    if not rows:
        click.echo(f"no reports on {feed}" + (" matching the filters" if kind or state or since else ""))


@feedback.command("review")
@click.argument("feed")
@click.option("--withdraw", "--accept", "withdraw", multiple=True, metavar="ITEM",
              help="Accept the reports about ITEM and withdraw it: TYPE:HASH (every case), TYPE:HASH@CASE, or "
                   "case:CASE. Repeatable; all withdrawals are one published version.")
@click.option("--reject", multiple=True, metavar="ITEM",
              help="Close the open reports about ITEM as rejected; the records stay. Repeatable.")
@click.option("--reason", type=click.Choice(["hash_error", "submitter_request", "legal", "duplicate", "other"]),
              default="hash_error", show_default=True, help="The withdrawals' reason, as mirrors see it.")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file (default: the one recorded with the feed, else HOME/private/FEED.key).")
@click.pass_obj
def review(home: Home, feed, withdraw, reject, reason, key_path):
    """Decide on the open reports of FEED: withdraw (accept) or reject per item.

    The withdrawals are published as the next version of FEED -- signed,
    sealed and mirrored like any publish -- and every open report they
    answer records that version, in the same transaction. Nothing is
    published or closed if any item answers no open report.

    \b
    Example:
      federation feedback review tid --withdraw md5:9e107d9d372bb6826bd81d3542a419d6
      federation feedback review tid --withdraw case:c-17 --reason submitter_request --reject sha1:ab12...
    """
    from federation.node.feedback import review as run_review
    from federation.node.keys import load_signer
    from federation.store.publisher import Publisher
    items_w = [parse_item(i) for i in withdraw]
    items_r = [parse_item(i) for i in reject]
    signer = None
    if items_w:
        _publisher_feedback(home).close()
        pub = Publisher(home.publisher_db)
        try:
            signer = load_signer(key_path or home.feed_key(feed, pub.feed(feed).key_file))
        finally:
            pub.close()
    r = run_review(home, feed, items_w, items_r, signer, reason)
    if r.published is not None:
        p = r.published
        click.echo(f"published {feed} version {p.version}: {p.withdrawals} withdrawals "
                   f"({', '.join(t.describe() for t in r.withdrawn)}); {r.resolved} reports resolved by it; "
                   f"{p.count} active hashes")
    if r.rejected:
        click.echo(f"rejected {', '.join(t.describe() for t in r.rejected)}: {r.closed} reports closed")
    if r.published is not None and r.published.pending:
        from federation.cli.trust import cosign_after_publish
        cosign_after_publish(home, feed, r.published.version)


def register(cli: click.Group) -> None:
    cli.add_command(feedback)

