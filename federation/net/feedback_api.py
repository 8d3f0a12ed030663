"""The feedback API on a publisher's node: members report on a feed's hashes.

Routes (JSON in and out, errors as ``{"error", "kind"}``):

* ``POST /feeds/NAME/feedback`` -- body ``{"reports": [REPORT, ...]}`` (1 to
  ``MAX_REPORTS``; ``core.feedback`` says what a report is). All or nothing:
  a bad report (422) or an id reused for other content (409) records none.
  ``201`` if any report was new, ``200`` if every one was a replay; each
  report is answered as stored, with its state.
* ``GET /feeds/NAME/feedback[?since=UNIX&limit=N]`` -- the caller's own
  reports (its member's), oldest first, with their state and, once a review
  withdrew what they were about, the resolving version.
* ``GET /feeds/NAME/feedback/REPORT_ID`` -- one of the caller's own reports.

Who may call: ``auth.AccessControl`` requires, on every feedback path, a
valid token that may read the feed (a member's token, as issued to the
platform, or a publisher's), whatever the feed's access; its answers are
never cacheable. Here: the feed must be one this node publishes (404),
reports not stored before (replays are free) cost one token each from a
per-member bucket (``rate``/``burst``: 429 with ``Retry-After`` past it, on
top of the token's own request rate),
and every report received -- replays too -- is appended to the audit log
(``store.tokens``) after it is stored.

What is signed: nothing here. Reports are authenticated (the token) and
kept by the publisher; what travels signed is the withdrawal that a review
publishes into the feed (``node.feedback``), and a report's
``resolved_version`` names that version of the log.
"""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from aiohttp import web

from federation.core.bounded import json_loads, parse_uint
from federation.core.errors import InputError, NotFoundError, RateLimitedError, RefusedError, StorageError
from federation.core.feedback import MAX_REPORTS, REPORT_ID_RE, parse_reports
from federation.net.auth import CALLER, RateLimiter
from federation.net.errors import answer_json
from federation.net.httpserver import read_body
from federation.store.db import connect
from federation.store.feedback import FeedbackStore
from federation.store.publisher import feed_id
from federation.store.tokens import TokenStore

MAX_BODY_BYTES = 2 * 1024 * 1024  # MAX_REPORTS reports with notes of 1000 characters fit
REPORT_RATE = 10.0                # reports per second per member, sustained
REPORT_BURST = MAX_REPORTS        # one full batch at once
MAX_LIST = 1000
ROUTES = ("/feeds/{name}/feedback", "/feeds/{name}/feedback/{report_id}")


class FeedbackAPI:
    """Takes feedback for the feeds of ``publisher_db`` (only ``names`` when given)."""

    def __init__(self, publisher_db: Path | str, audit: TokenStore | None, names: list[str] | None = None,
                 rate: float = REPORT_RATE, burst: int = REPORT_BURST, limiter: RateLimiter | None = None):
        self.db = Path(publisher_db)
        self.store = FeedbackStore(self.db)  # creates the table if new
        self.reader = connect(self.db, readonly=True)
        self.only = None if names is None else set(names)
        self.audit = audit
        self.rate, self.burst = rate, burst
        self.limiter = limiter or RateLimiter()
        self.lock = asyncio.Lock()  # one connection, used from worker threads one at a time

    def install(self, app: web.Application) -> None:
        app.router.add_post(ROUTES[0], self.post)
        app.router.add_get(ROUTES[0], self.list_mine)
        app.router.add_get(ROUTES[1], self.get_one)
        answer_json(app, *ROUTES)

        async def close(app):
            yield
            self.store.close()
            self.reader.close()

        app.cleanup_ctx.append(close)

    def _feed(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if (self.only is not None and name not in self.only) or feed_id(self.reader, name) is None:
            raise NotFoundError("this node does not publish that feed")
        return name

    async def _run(self, fn, *args):
        async with self.lock:
            try:
                return await asyncio.to_thread(fn, *args)
            except sqlite3.Error as e:  # e.g. "database is locked" past the busy timeout
                raise StorageError(f"try again: {e}") from None

    async def post(self, request: web.Request) -> web.Response:
        feed = self._feed(request)
        token = request[CALLER]
        body = await read_body(request, MAX_BODY_BYTES)
        try:
            reports = parse_reports(json_loads(body, "feedback", max_bytes=MAX_BODY_BYTES, error=InputError))
        except InputError as e:
            raise RefusedError(f"feedback refused, nothing recorded: {e}") from None
        # Replays are not charged: a batch sent again after a failure part-way
        # (or a 429) costs only what is new, so a rerun is not refused in turn.
        new = len(reports) - await self._run(self.store.known, feed, token.member, [r.id for r in reports])
        wait = self.limiter.allow("feedback:" + token.member, self.rate, self.burst, cost=new) if new > 0 else 0
        if wait > 0:
            raise RateLimitedError(f"over {self.rate:g} reports a second for this member; nothing recorded",
                                   retry_after=max(1, int(wait + 0.999)))
        stored = await self._run(self.store.record, feed, token.member, token.id, reports)
        if self.audit is not None:
            await self._run(self.audit.record_many, "feedback", feed, token,
                            [f"report {s.id} {s.kind} {s.target.describe()}{' (replay)' if s.replayed else ''}"
                             for s in stored])
        new = sum(not s.replayed for s in stored)
        answer = {"feed": feed, "recorded": new, "replayed": len(stored) - new,
                  "reports": [dict(s.to_json(), replayed=s.replayed) for s in stored]}
        if new:
            return web.json_response(answer, status=201)
        return web.json_response(answer)

    async def list_mine(self, request: web.Request) -> web.Response:
        feed = self._feed(request)
        since = parse_uint(request.query.get("since", "0"), "since")
        limit = parse_uint(request.query.get("limit", "100"), "limit", MAX_LIST)
        rows = await self._run(self.store.mine, feed, request[CALLER].member, since, limit)
        return web.json_response({"feed": feed, "reports": [r.to_json() for r in rows]})

    async def get_one(self, request: web.Request) -> web.Response:
        feed = self._feed(request)
        rid = request.match_info["report_id"]
        if not REPORT_ID_RE.fullmatch(rid):
            raise InputError(f"report id must match {REPORT_ID_RE.pattern}")
        row = await self._run(self.store.one, feed, request[CALLER].member, rid)
        if row is None:
            raise NotFoundError(f"you have no report {rid} on feed {feed}")
        return web.json_response({"feed": feed, "report": row.to_json()})
