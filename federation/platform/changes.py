"""Change stream of a mirror node: consumer cursors over HTTP, and webhooks.

The stream is the mirror's ``changes`` table: one row per applied add,
relabel or withdraw, numbered by ``seq``. Each event carries its provenance
(feed, origin, version, case, labels, reason) and ``seq`` is its id.

Invariants:

* Order and completeness. The mirror writes a version's changes in the same
  transaction as its head, and SQLite has one writer, so ``seq`` values
  become visible in increasing order with no gaps appearing later: a reader
  that has seen ``seq = n`` has seen every change up to ``n``. Reading
  ``seq > cursor`` in order therefore never skips a change.
* At-least-once, never lost. A consumer's or webhook's cursor lives in
  SQLite (``platform.db``, ``store.platform``) and only moves forward *after* the consumer
  acknowledged (HTTP ``ack``) or the webhook endpoint answered 2xx. A crash
  at any point re-delivers from the old cursor; nothing is skipped, so a
  withdrawal always arrives (possibly twice: deduplicate on ``seq``).
* Stable idempotency keys. A webhook batch is fixed (``inflight``) before
  its first attempt, and every retry resends exactly that range with the
  same ``Idempotency-Key``.

Webhook requests follow Standard Webhooks (``core.webhook_signature``):
``webhook-id`` (the batch's idempotency key, stable across retries),
``webhook-timestamp`` (unix time of the attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256>`` over ``id.timestamp.body`` keyed with the
``whsec_`` secret's bytes); see docs/PROTOCOL.md section 13.

With ``platform serve --auth`` (``platform_auth``), pages are filtered to
the caller's feed scope in SQL, so ``next`` still moves past the changes of
other feeds and a scoped consumer never rescans them. A consumer records
the scope of the token that first used it; only tokens covering that scope
may read or acknowledge it, and its pages are that scope's changes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from federation.store.activeset import split_labels
from federation.core.bounded import json_loads, parse_uint
from federation.store.db import connect
from federation.store.mirror import change_rows, changes_head
from federation.store.platform import PlatformStore
from federation.net.errors import answer_json
from federation.net.httpserver import read_body
from federation.core.errors import ForbiddenError, InputError
from federation.core import retry
from federation.core.webhook_signature import sign_headers
from federation.platform.auth import scope_of

log = logging.getLogger("federation.changes")

MAX_PAGE = 1000
MAX_ANSWER_BYTES = 4096  # of a webhook receiver's answer, read for the error report; the rest is never read
MAX_ACK_BYTES = 64 * 1024  # as the server's client_max_size for other JSON bodies
IDEMPOTENCY_HEADER = "Idempotency-Key"  # kept beside webhook-id, which carries the same key

# ---- reading the stream (through the mirror store's queries) --------------------

def read_changes(mirror: sqlite3.Connection, after: int, limit: int = MAX_PAGE, feed: str | None = None,
                 upto: int | None = None, feeds: frozenset[str] | None = None) -> list[dict]:
    """Changes with ``after < seq [<= upto]``, oldest first, with provenance
    (only of ``feed``, and of the feeds in ``feeds``, when given)."""
    if type(after) is not int or after < 0:
        raise InputError(f"cursor {after!r} must be an integer >= 0")
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit {limit!r} must be 1..{MAX_PAGE}")
    rows = change_rows(mirror, after, limit, feed, upto, feeds)
    return [dict(seq=s, feed=n, origin=o, version=v, action=a, type=t, hash=val.hex(), case=c,
                 labels=list(split_labels(lab)), reason=r, time=tm)
            for s, n, o, v, a, t, val, c, lab, r, tm in rows]


def head(mirror: sqlite3.Connection) -> int:
    return changes_head(mirror)


# ---- webhook delivery (the I/O shell) ------------------------------------------------

class Deliverer:
    """Delivers each webhook's changes in order, retrying forever with backoff.

    One worker task per webhook, so a slow or hanging receiver delays only
    its own deliveries. ``run`` supervises them: it re-reads the webhooks
    table every ``poll`` seconds (or on ``notify``), starts a worker for a
    new webhook without a restart, and cancels the worker of a removed one.
    Bounds: each worker has at most one request in flight, and ``timeout``
    bounds the whole exchange (connect, send, response headers and at most
    ``MAX_ANSWER_BYTES`` of the answer, kept for the error report). Redirects
    are never followed: a batch is delivered to the configured URL or not at
    all, and a 3xx is a failed attempt. ``notify()`` wakes every worker early
    (an in-process sync calls it after applying a version); otherwise they
    poll. All state is in SQLite, so cancelling a worker anywhere only
    re-delivers its batch (same idempotency key).
    """

    def __init__(self, store: PlatformStore, mirror: sqlite3.Connection, poll: float = 1.0,
                 retry_base: float = 1.0, retry_cap: float = 300.0, batch: int = 100, timeout: float = 10.0):
        self.store, self.mirror = store, mirror
        self.poll, self.retry_base, self.retry_cap, self.batch = poll, retry_base, retry_cap, batch
        self.timeout = timeout
        self._wake = asyncio.Event()  # the supervisor's
        # Keyed by (name, url, secret): a webhook removed and added again under
        # its name (a receiver that moved) is another receiver, with a worker,
        # backoff and bookkeeping of its own.
        self._workers: dict[tuple[str, str, str], tuple[asyncio.Task, asyncio.Event]] = {}
        self._stopping: set[asyncio.Task] = set()  # cancelled workers of removed webhooks
        self._next_try: dict[tuple[str, str, str], float] = {}
        self.on_attempt = None  # metrics hook: f(webhook_name, ok: bool)

    def notify(self) -> None:
        self._wake.set()
        for _, wake in self._workers.values():
            wake.set()

    def workers(self) -> set[str]:
        """Names of the webhooks that have a running worker."""
        return {ident[0] for ident, (task, _) in self._workers.items() if not task.done()}

    async def run(self) -> None:
        # No connection-pool limit: a pool shared by all workers would make
        # healthy receivers queue behind hanging ones. One connection per
        # worker at most, each bounded by the timeout.
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": "federation-webhook"}) as s:
            try:
                while True:
                    try:
                        self._reconcile(s)
                    except Exception:  # keep supervising: the next round re-reads the table
                        log.exception("webhook supervisor round failed")
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.poll)
                    except asyncio.TimeoutError:
                        pass
                    self._wake.clear()
            finally:
                tasks = [task for task, _ in self._workers.values()] + list(self._stopping)
                self._workers.clear()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _reconcile(self, session: aiohttp.ClientSession) -> None:
        current = {(h.name, h.url, h.secret) for h in self.store.webhooks()}
        for ident, (task, _) in list(self._workers.items()):
            if ident not in current or task.done():
                task.cancel()  # removed (or replaced): its worker ends, its request is dropped
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)
                del self._workers[ident]
                self._next_try.pop(ident, None)
        for ident in sorted(current - self._workers.keys()):
            wake = asyncio.Event()
            task = asyncio.create_task(self._work(session, ident, wake), name=f"webhook {ident[0]}")
            self._workers[ident] = (task, wake)

    async def _work(self, session: aiohttp.ClientSession, ident: tuple[str, str, str], wake: asyncio.Event) -> None:
        """One webhook's worker: deliver batches until none is left, then wait."""
        name = ident[0]
        while True:
            wake.clear()  # before reading: a notify during delivery is not lost
            try:
                while await self.deliver_one(session, name, ident):
                    pass
            except InputError:
                return  # removed while we were delivering
            except Exception:  # keep delivering: state is in SQLite, the next round retries
                log.exception("webhook %s: delivery round failed", name)
            due = self._next_try.get(ident)
            if due is not None:  # backing off: a notify does not cut it short
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                continue
            try:
                await asyncio.wait_for(wake.wait(), self.poll)
            except asyncio.TimeoutError:
                pass

    async def deliver_one(self, session: aiohttp.ClientSession, name: str,
                          ident: tuple[str, str, str] | None = None) -> bool:
        """Try the webhook's next batch once. True if a batch was acknowledged.
        With ``ident`` (name, url, secret), only while the webhook is still that
        receiver (``InputError`` once it was removed or replaced)."""
        hook = self.store.webhook(name)
        if ident is not None and (hook.name, hook.url, hook.secret) != ident:
            raise InputError(f"webhook {name!r} was replaced")
        ident = (hook.name, hook.url, hook.secret)
        if hook.inflight_last is None:
            changes = read_changes(self.mirror, hook.cursor, self.batch, hook.feed)
            if not changes:
                return False
            self.store.fix_batch(name, changes[0]["seq"], changes[-1]["seq"])
            hook = self.store.webhook(name)
        changes = read_changes(self.mirror, hook.cursor, MAX_PAGE, hook.feed, upto=hook.inflight_last)
        body = json.dumps({"webhook": name, "cursor": hook.inflight_last, "changes": changes},
                          separators=(",", ":")).encode()
        key = f"{name}:{hook.inflight_first}-{hook.inflight_last}"
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key,
                   **sign_headers(hook.secret, key, int(time.time()), body)}
        status, error = await self._post(session, hook.url, body, headers)
        ok = error is None
        if self.on_attempt:
            self.on_attempt(name, ok)
        if ok:
            self.store.delivered(name, hook.inflight_last, len(changes), status, hook.url)
            self._next_try.pop(ident, None)
            return True
        self.store.failed(name, status, error, hook.url)
        wait = retry.delay(hook.attempts + 1, self.retry_base, self.retry_cap)  # attempts: failures before this one
        self._next_try[ident] = time.monotonic() + wait
        log.warning("webhook %s: delivery of seq %s-%s failed (%s); retry in %.1fs",
                    name, hook.inflight_first, hook.inflight_last, error, wait)
        return False

    async def _post(self, session: aiohttp.ClientSession, url: str, body: bytes,
                    headers: dict) -> tuple[int | None, str | None]:
        """POST one batch: (status, None) on 2xx, else (status or None, why)."""
        status = None
        try:
            async with asyncio.timeout(self.timeout):
                # allow_redirects=False: aiohttp follows redirects by default,
                # which would turn a delivery into a GET elsewhere (302) or
                # re-POST body, signature and key to another host (307), and
                # count that host's 2xx as delivered.
                async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                    status = resp.status
                    answer = await read_prefix(resp.content, MAX_ANSWER_BYTES)
                    if not resp.content.at_eof():
                        resp.close()  # drop the connection rather than drain an unbounded answer
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            why = "no answer within %gs" % self.timeout if isinstance(e, asyncio.TimeoutError) else \
                f"{type(e).__name__}: {e}"
            return status, why if status is None else f"HTTP {status}, then {why}"
        if 200 <= status < 300:
            return status, None
        if 300 <= status < 400:
            return status, (f"HTTP {status}: redirect to {resp.headers.get('Location', '(none)')[:200]} not "
                            "followed (a webhook is delivered only to its configured URL)")
        text = answer.decode("utf-8", "replace").strip()
        return status, f"HTTP {status}" + (f": {text[:200]}" if text else "")


async def read_prefix(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """At most ``limit`` bytes from the start of a response body."""
    chunks, got = [], 0
    while got < limit:
        chunk = await stream.read(limit - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# ---- HTTP routes ------------------------------------------------------------------------

STREAM = web.AppKey("platform_stream", dict)


def _int_param(request: web.Request, name: str, default: int) -> int:
    """A decimal query parameter in 0..2**63-1 (SQLite's range): a 5000-digit
    or 23-digit cursor is a 400 naming it, not an OverflowError."""
    text = request.query.get(name)
    if text is None:
        return default
    return parse_uint(text, name)


async def get_changes(request: web.Request) -> web.Response:
    st = request.app[STREAM]
    after = _int_param(request, "after", 0)
    limit = _int_param(request, "limit", 100)
    rows = read_changes(st["mirror"], after, limit, request.query.get("feed"), feeds=scope_of(request))
    return web.json_response({"changes": rows, "next": rows[-1]["seq"] if rows else after,
                              "head": head(st["mirror"])})


def _consumer_scope(request: web.Request) -> frozenset[str] | None:
    """The feeds of the consumer named in the path, which must be exactly the
    caller's token's (else 403): a token scoped to other feeds may neither
    read nor move this consumer's cursor, and a wider one is not silently
    narrowed to it."""
    name = request.match_info["name"]
    mine = scope_of(request)
    scope = request.app[STREAM]["store"].claim(name, mine)
    # The same scope, not merely a covering one: a consumer claimed by a
    # narrower token would otherwise silently narrow a wider caller's stream
    # (and its acks would skip the other feeds' changes, withdrawals included).
    if mine != scope:
        def feeds(s):
            return "every feed" if s is None else ", ".join(sorted(s))
        raise ForbiddenError(f"consumer {name!r} belongs to a token scoped to {feeds(scope)}; this token is "
                             f"scoped to {feeds(mine)}: use a consumer name of its own")
    return scope


async def get_consumer_changes(request: web.Request) -> web.Response:
    st = request.app[STREAM]
    scope = _consumer_scope(request)
    cursor = st["store"].cursor(request.match_info["name"])
    limit = _int_param(request, "limit", 100)
    rows = read_changes(st["mirror"], cursor, limit, request.query.get("feed"), feeds=scope)
    return web.json_response({"consumer": request.match_info["name"], "cursor": cursor, "changes": rows,
                              "next": rows[-1]["seq"] if rows else cursor, "head": head(st["mirror"])})


async def post_consumer_ack(request: web.Request) -> web.Response:
    st = request.app[STREAM]
    raw = await read_body(request, MAX_ACK_BYTES)
    body = json_loads(raw, 'body must be JSON {"cursor": SEQ}', max_bytes=MAX_ACK_BYTES, error=InputError)
    if not isinstance(body, dict) or "cursor" not in body:
        raise InputError('body must be JSON: {"cursor": SEQ}')
    _consumer_scope(request)
    cursor = st["store"].ack(request.match_info["name"], body["cursor"], head(st["mirror"]))
    return web.json_response({"consumer": request.match_info["name"], "cursor": cursor})


async def get_webhooks(request: web.Request) -> web.Response:
    return web.json_response({"webhooks": [h.public() for h in request.app[STREAM]["store"].webhooks()]})


def changes_extension(mirror_path: Path | str, platform_path: Path | str, deliver: bool = True,
                      **deliverer_options):
    """An ``install(app)`` adding the change stream routes and the webhook task."""
    def install(app: web.Application) -> None:
        mirror = connect(mirror_path, readonly=True)
        store = PlatformStore(platform_path)
        deliverer = Deliverer(store, mirror, **deliverer_options)
        app[STREAM] = {"mirror": mirror, "store": store, "deliverer": deliverer}
        app.router.add_get("/changes", get_changes)
        app.router.add_get("/consumers/{name}/changes", get_consumer_changes)
        app.router.add_post("/consumers/{name}/ack", post_consumer_ack)
        app.router.add_get("/webhooks", get_webhooks)
        answer_json(app, "/changes", "/consumers/{name}/changes", "/consumers/{name}/ack", "/webhooks")

        async def lifecycle(app: web.Application):
            task = asyncio.create_task(deliverer.run()) if deliver else None
            yield
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            store.close()
            mirror.close()

        app.cleanup_ctx.append(lifecycle)
    return install
