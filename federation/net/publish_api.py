"""The publishing API: ``POST /feeds/NAME/batches/BATCH_ID`` publishes a batch.

The body is a batch exactly as ``federation publish`` reads it: JSONL
(``application/x-ndjson``, the default) or CSV (``text/csv``). The whole
batch becomes one signed version.

Idempotency: ``BATCH_ID`` is chosen by the client (``[A-Za-z0-9._:-]{1,128}``).
It is recorded in the publisher store's ``api_batches`` *inside* the
publish transaction (``Publisher.publish(in_txn=Publisher.batch_recorder(...))``),
so a batch and its id commit together or not at all: a client that lost the
answer retries with the same id and gets the original result (``200``,
``"replayed": true``) instead of a second version. The same id with a
different body is ``409``.

Who may call it is decided by ``auth.AccessControl`` (a publisher token
scoped to the feed); here the request is size-limited, parsed and
published. Status codes: 201 published, 200 replayed, 400 malformed request,
404 not a feed this node signs, 409 batch id reused, 413 too large, 415
unknown content type, 422 batch refused (bad line, empty, unknown
withdrawal), 503 storage busy; each refusal is raised as one of our errors
and answered as text by ``net.errors``.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import io
import re
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from federation.core.batch import read_batch
from federation.core.errors import (ConflictError, FederationError, InputError, NotFoundError, RefusedError,
                                    StorageError, UnsupportedError)
from federation.net.auth import CALLER
from federation.net.httpserver import read_body
from federation.core.note import Signer
from federation.core.checkpoint import checkpoint_size
from federation.net.longpoll import WATCH
from federation.store.publisher import Publisher

log = logging.getLogger("federation.publish_api")

BATCH_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # full match: no trailing newline
MAX_BATCH_BYTES = 8 * 1024 * 1024
FORMATS = {"application/x-ndjson": "jsonl", "application/jsonl": "jsonl", "application/json": "jsonl",
           "text/csv": "csv", "": "jsonl", "application/octet-stream": "jsonl"}
ROUTE = "/feeds/{name}/batches/{batch_id}"


AfterPublish = Callable[[str], Awaitable[object]]  # feed name -> a cosigning round's outcome (or None)


class PublishAPI:
    """Publishes batches for the feeds in ``signers`` (name -> injected signer).

    ``after_publish(name)`` (injected: ``node.cosigning.cosign_configured``)
    runs after a publish whose version is held for cosignatures, *outside*
    the publish lock and on its own connection: a slow witness of one feed
    delays only that answer, never another request's publish.
    """

    def __init__(self, publisher_db: Path | str, signers: dict[str, Signer], max_bytes: int = MAX_BATCH_BYTES,
                 on_publish: Callable[[str], None] | None = None, audit=None,
                 after_publish: AfterPublish | None = None):
        self.publisher = Publisher(publisher_db)
        self.after_publish = after_publish
        self.publisher.open_batch_log()
        self.signers = dict(signers)
        self.max_bytes = max_bytes
        self.on_publish = on_publish
        self.audit = audit  # store.tokens.TokenStore or None
        self.lock = asyncio.Lock()  # one publish at a time per node; SQLite would serialise anyway

    def install(self, app: web.Application) -> None:
        app.router.add_post(ROUTE, self.handle)

        async def close(app):
            yield
            self.publisher.close()

        app.cleanup_ctx.append(close)

    def _previous(self, name: str, batch_id: str):
        return self.publisher.batch(name, batch_id)

    async def handle(self, request: web.Request) -> web.Response:
        name, batch_id = request.match_info["name"], request.match_info["batch_id"]
        if not BATCH_ID_RE.fullmatch(batch_id):
            raise InputError("batch id must match [A-Za-z0-9._:-]{1,128}")
        signer = self.signers.get(name)
        if signer is None:
            raise NotFoundError("this node does not publish that feed")
        fmt = FORMATS.get(request.content_type)
        if fmt is None:
            raise UnsupportedError("send application/x-ndjson or text/csv")
        body = await read_body(request, self.max_bytes)  # 413 over the limit, 408 if trickled
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("batch is not UTF-8") from None
        digest = hashlib.sha256(body).digest()
        token = request.get(CALLER)
        async with self.lock:
            prev = self._previous(name, batch_id)
            if prev is not None:
                return self._replay(name, batch_id, digest, prev)
            try:
                ops = list(read_batch(io.StringIO(text, newline=""), fmt))
            except InputError as e:
                raise RefusedError(f"batch refused: {e}") from None

            record = self.publisher.batch_recorder(name, batch_id, digest, token.id if token else None)

            try:
                r = await asyncio.to_thread(self.publisher.publish, name, ops, signer, in_txn=record)
            except InputError as e:
                raise RefusedError(f"batch refused: {e}") from None
            except (StorageError, sqlite3.OperationalError) as e:  # e.g. "database is locked"
                raise StorageError(f"try again: {e}") from None
        served = True
        if r.pending:
            # Cosigning configured: serve the version only with its cosignatures
            # (as `federation publish` does); else the next `cosign run` will.
            # Outside the lock, on the round's own connection (see the class).
            served = False
            if self.after_publish is not None:
                try:
                    out = await self.after_publish(name)
                    served = out is None or getattr(out, "status", None) in ("promoted", "changed")
                except FederationError as e:
                    log.warning("feed %s version %d committed, cosigning failed: %s", name, r.version, e)
        if self.audit is not None:
            self.audit.record("publish", name, token, r.size, f"batch {batch_id} version {r.version}")
        watch = request.app.get(WATCH)
        if watch is not None:
            watch.notify(name)  # wake this node's long-pollers at once
        if self.on_publish is not None:
            self.on_publish(name)
        return web.json_response(dict(feed=name, batch=batch_id, version=r.version, size=r.size, adds=r.adds,
                                      withdrawals=r.withdrawals, no_effect=r.no_effect, count=r.count,
                                      replayed=False, served=served), status=201)

    def _replay(self, name: str, batch_id: str, digest: bytes, prev) -> web.Response:
        if prev[0] != digest:
            raise ConflictError(f"batch id {batch_id} was already used for a different batch")
        # ``served`` as the first answer meant it, but as of now: a version
        # held for cosignatures may have been served since.
        served = checkpoint_size(self.publisher.feed(name).checkpoint) >= prev[2]
        return web.json_response(dict(feed=name, batch=batch_id, version=prev[1], size=prev[2], replayed=True,
                                      served=served))

