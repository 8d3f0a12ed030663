"""Lookup API of a mirror node: exact and PDQ near-match, with provenance.

Routes (installed with ``create_app(..., extensions=[lookup_extension(path)])``):

* ``GET /lookup/{type}/{hash}[?threshold=T]`` -- one hash. md5, sha1,
  sha256 and photodna match exactly; pdq matches every active PDQ hash
  within Hamming distance ``T`` (default 31, the PDQ standard; 0 = exact).
* ``vpdq`` (a video: its frames as text, vpdq's ``frame,quality,pdq_hex,
  timestamp`` lines or python-threatexchange's JSON list) matches by vPDQ's
  algorithm (``video_index``); ``threshold`` is the frame distance, and
  ``quality``, ``query_percent``, ``target_percent`` may be given (POST).
* ``POST /lookup`` with ``{"queries": [{"type", "hash", "threshold"?}, ...]}``
  -- up to ``MAX_BATCH`` queries, answered in order. A bad query does not
  fail the batch: its place in ``results`` is ``{"index", "error", "kind":
  "input"}`` (``batch_answers``) and the others are answered; only a body
  that is not such a list (or too long) is a 400.

Fail closed (``readiness``): before answering, every feed in the caller's
scope (or named with ``?feed=NAME``, repeatable) must be ready -- synced,
its last sync verified, and its newest verified timestamp within its
maximum age -- or the answer is ``503`` with ``{"error", "kind":
"unavailable", "feeds": [...]}`` naming each problem. ``?allow_stale=true``
answers from stale and failed feeds anyway. Every answer carries
``based_on``: per feed, the applied version, tree size and the age of the
newest verified timestamp.

Every match carries its provenance: feed name and origin, case id, labels,
the version that added it, and for PDQ the distance. Answers only ever come
from the mirror's active rows (``hashes``), read through a read-only
connection, so a withdrawn hash is never reported once its withdrawal was
applied. ``parse_query`` and ``answer`` are the pure core; the handlers
only move JSON.

With ``platform serve --auth`` (``platform_auth``), a caller whose token is
scoped to some feeds gets answers filtered to those feeds' records: a match
in another feed is left out, exactly as if it did not exist. A feed of its
scope that this node does not follow is ``503`` naming it (``not_followed``):
an answer from the others cannot stand for it.

Off the event loop: a lookup (the readiness check and the answer: SQLite
reads, index refreshes and searches, a video's comparison) runs in the
node's one lookup thread (``LOOKUP_THREAD``), so a slow one never stalls
``/healthz``, the other routes, the sync loop or the default executor's
threads; lookups wait for each other there, as they share one connection
and one index (``Lookup.serve`` holds the lock around both).
"""
from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from federation.store.activeset import split_labels
from federation.core.batch import is_segment_text, parse_hash
from federation.core.bounded import json_loads, parse_uint
from federation.store.db import connect
from federation.core.errors import InputError, UnavailableError
from federation.net.errors import answer_json
from federation.net.httpserver import read_body
from federation.store.mirror import follow_ids, lookup_rows, origins as follow_origins, read_follows
from federation.platform.pdq_file import index_path
from federation.platform.pdq_index import DEFAULT_THRESHOLD, PdqIndex, check_threshold
from federation.platform.video_index import VideoIndex, VideoQuery, video_query
from federation.core.vpdq import video_id
from federation.platform.auth import scope_of
from federation.core.readiness import Basis, assess, require

MAX_BATCH = 1000
NOT_FOLLOWED = "not_followed"  # a Basis problem: a feed of the token's scope this node does not follow
MAX_BODY = MAX_BATCH * 400  # a PhotoDNA query is ~330 bytes of JSON


@dataclass(frozen=True)
class Query:
    hash_type: str
    value: bytes
    threshold: int | None  # None: exact match (non-PDQ types)
    video: VideoQuery | None = None  # a vpdq query (value: its video id)


VIDEO_FIELDS = ("quality", "query_percent", "target_percent")


def parse_query(obj, default_threshold: int = DEFAULT_THRESHOLD) -> Query:
    """Validate one JSON query object; raises ``InputError``."""
    if not isinstance(obj, dict):
        raise InputError("each query must be a JSON object with 'type' and 'hash'")
    unknown = set(obj) - {"type", "hash", "threshold", *VIDEO_FIELDS}
    if unknown:
        raise InputError(f"unknown query field(s) {sorted(unknown)}")
    hash_type, text = obj.get("type"), obj.get("hash")
    if not isinstance(hash_type, str) or not isinstance(text, str):
        raise InputError("query 'type' and 'hash' must be strings")
    hash_type = hash_type.strip().lower()
    if hash_type == "vpdq" and is_segment_text(text):
        # One stored segment in hex (as the change stream shows it): an exact
        # lookup of that record, as for md5 (the threatexchange adapter's use).
        if obj.get("threshold") not in (None, 0) or set(obj) & set(VIDEO_FIELDS):
            raise InputError("a vpdq segment in hex is looked up exactly: no threshold or percentages")
        return Query(hash_type, parse_hash(hash_type, text), None)
    if hash_type == "vpdq":
        vq = video_query(text, obj.get("threshold"), *(obj.get(k) for k in VIDEO_FIELDS))
        return Query(hash_type, video_id(vq.frames), vq.distance, vq)
    if set(obj) & set(VIDEO_FIELDS):
        raise InputError(f"{', '.join(VIDEO_FIELDS)} apply to vpdq only")
    value = parse_hash(hash_type, text)
    threshold = obj.get("threshold")
    if hash_type != "pdq":
        if threshold not in (None, 0):
            raise InputError(f"threshold applies to pdq only, not {hash_type}")
        return Query(hash_type, value, None)
    return Query(hash_type, value, check_threshold(default_threshold if threshold is None else threshold))


class Lookup:
    """Answers queries from a mirror database (read-only) and its PDQ index."""

    def __init__(self, mirror_path: Path | str, default_threshold: int = DEFAULT_THRESHOLD, keep_index: bool = False):
        """``keep_index``: save the PDQ index next to the mirror (``pdq_file.index_path``)
        after each full rebuild, as a serving node does; a one-shot lookup only
        reads a saved one."""
        self.conn: sqlite3.Connection = connect(mirror_path, readonly=True)
        self.default_threshold = check_threshold(default_threshold)
        self.index = PdqIndex(self.conn, index_path(mirror_path), save=keep_index)
        self.videos = VideoIndex(self.conn, self.index)  # its frames are in self.index
        self._lock = threading.Lock()  # one connection, one index: one lookup at a time through ``serve``

    def close(self) -> None:
        with self._lock:  # never under a lookup still running in its thread
            self.conn.close()

    def serve(self, queries: list[Query], feeds: frozenset[str] | None, allow_stale: bool,
              scope: frozenset[str] | None) -> tuple[list[Basis], list[dict]]:
        """A request's readiness check (``bases``) and answers, under the lock
        (for a thread: the HTTP handlers run this off the event loop)."""
        with self._lock:
            bases = self.bases(feeds, allow_stale, scope=scope)
            return bases, self.answer(queries, frozenset(b.feed for b in bases))

    def _origins(self) -> dict[str, str]:
        return follow_origins(self.conn)

    def bases(self, feeds: frozenset[str] | None = None, allow_stale: bool = False,
              now: int | None = None, scope: frozenset[str] | None = None) -> list[Basis]:
        """What an answer from ``feeds`` (every followed feed when None), within
        the caller's ``scope`` (a token's feeds; None: every feed), stands on;
        ``UnavailableError`` when the mirror cannot stand behind one.

        A feed the caller *named* that is not followed is its mistake
        (``InputError``, 400). One in the token's scope that is not followed
        fails closed (``UnavailableError``, 503, naming it): the token's holder
        expects answers from it, and a "no match" from the other feeds must
        not pass for one from it.
        """
        follows = read_follows(self.conn)
        followed = {f.name for f in follows}
        if feeds is not None:
            unknown = sorted(feeds - followed)
            if unknown:
                raise InputError(f"not following feed(s) {unknown}")
        if scope is not None:
            missing = sorted((scope if feeds is None else feeds & scope) - followed)
            if missing:
                problems = tuple(Basis(feed=n, origin="", version=0, size=0, fresh_time=None, max_age=0, age=None,
                                       problem=NOT_FOLLOWED, detail="this node does not follow it")
                                 for n in missing)
                raise UnavailableError(f"this node's mirror cannot stand behind an answer: it does not follow "
                                       f"feed(s) {', '.join(missing)} of this token's scope (follow them, or issue "
                                       "a token scoped to the feeds it follows)", problems)
            feeds = scope if feeds is None else feeds & scope
        if feeds is not None:
            follows = [f for f in follows if f.name in feeds]
        now = int(time.time()) if now is None else now
        return require([assess(f, now) for f in follows], allow_stale, "this node's mirror")

    def answer(self, queries: list[Query], feeds: frozenset[str] | None = None) -> list[dict]:
        """Answer queries in order (refreshing the PDQ index first); with
        ``feeds``, only records of those feeds are reported."""
        self.index.refresh()
        if any(q.video is not None for q in queries):
            self.videos.refresh()  # only when asked: image lookups pay nothing for videos
        origins, feed_ids = self._origins(), follow_ids(self.conn)
        # Near queries go to the index grouped by threshold (one index call per group).
        near: dict[int, list[int]] = {}
        for i, q in enumerate(queries):
            if q.threshold is not None and q.video is None:
                near.setdefault(q.threshold, []).append(i)
        near_results: dict[int, list] = {}
        for threshold, idxs in near.items():
            for i, found in zip(idxs, self.index.search([queries[i].value for i in idxs], threshold)):
                near_results[i] = found
        out = []
        for i, q in enumerate(queries):
            if q.video is not None:
                matches = [dict(feed=m.feed, origin=origins.get(m.feed), type="vpdq", video=m.video.hex(),
                                case=m.case, labels=list(m.labels), added_version=m.added_version, frames=m.frames,
                                query_match_percent=m.query_percent, target_match_percent=m.target_percent)
                           for m in self.videos.search(q.video, feed_ids)]
            elif q.threshold is None:
                rows = lookup_rows(self.conn, q.hash_type, q.value, feed_ids)
                matches = [dict(feed=f, origin=origins.get(f), type=q.hash_type, hash=q.value.hex(), case=c,
                                labels=list(split_labels(lab)), added_version=v, distance=0)
                           for f, c, lab, v in rows]
            else:
                matches = [dict(feed=m.feed, origin=origins.get(m.feed), type="pdq", hash=m.value.hex(),
                                case=m.case, labels=list(m.labels), added_version=m.added_version,
                                distance=m.distance) for m in near_results[i]]
            if feeds is not None:
                matches = [m for m in matches if m["feed"] in feeds]
            item = dict(type=q.hash_type, hash=q.value.hex(), matched=bool(matches), matches=matches)
            if q.threshold is not None:
                item["threshold"] = q.threshold
            if q.video is not None:  # "hash" is the query video's id (docs/PROTOCOL.md section 4, "vpdq")
                item.update(frames=len(q.video.frames), quality=q.video.quality,
                            query_percent=q.video.query_percent, target_percent=q.video.target_percent)
            out.append(item)
        return out


def parse_batch(objs: list, default_threshold: int = DEFAULT_THRESHOLD) -> list[Query | dict]:
    """Each query parsed, or in its place the error item that answers it
    (``{"index", "error", "kind": "input"}``), so one bad query in a batch
    is reported alone instead of failing the others."""
    out: list[Query | dict] = []
    for i, obj in enumerate(objs):
        try:
            out.append(parse_query(obj, default_threshold))
        except InputError as e:
            out.append(dict(index=i, error=f"query {i}: {e}", kind=e.kind))
    return out


def batch_answers(lookup: "Lookup", parsed: list[Query | dict], feeds: frozenset[str] | None) -> list[dict]:
    """Answers in query order: the good queries answered, the bad ones' error items in their places."""
    return in_order(parsed, lookup.answer([q for q in parsed if isinstance(q, Query)], feeds))


def in_order(parsed: list[Query | dict], answers: list[dict]) -> list[dict]:
    """The answers of ``parsed``'s queries, with its error items in their places."""
    it = iter(answers)
    return [next(it) if isinstance(q, Query) else q for q in parsed]


LOOKUP = web.AppKey("platform_lookup", Lookup)
LOOKUP_THREAD = web.AppKey("platform_lookup_thread", ThreadPoolExecutor)


def _flag(request: web.Request, key: str) -> bool:
    value = request.query.get(key, "false").lower()
    if value not in ("true", "1", "yes", "false", "0", "no"):
        raise InputError(f"{key} must be true or false")
    return value in ("true", "1", "yes")


async def _serve(request: web.Request, queries: list[Query]) -> tuple[list[Basis], list[dict]]:
    """``Lookup.serve`` in the lookup thread: the feeds this request may be
    answered from -- the caller's scope, narrowed by ``?feed=NAME``
    (repeatable) -- checked ready (fail closed: ``UnavailableError``, 503),
    and the answers from them."""
    named = request.query.getall("feed", [])
    work = functools.partial(request.app[LOOKUP].serve, queries, frozenset(named) if named else None,
                             _flag(request, "allow_stale"), scope_of(request))
    return await asyncio.get_running_loop().run_in_executor(request.app[LOOKUP_THREAD], work)


async def get_lookup(request: web.Request) -> web.Response:
    lk = request.app[LOOKUP]
    obj: dict = {"type": request.match_info["type"], "hash": request.match_info["hash"]}
    if "threshold" in request.query:
        obj["threshold"] = parse_uint(request.query["threshold"], "threshold")
    q = parse_query(obj, lk.default_threshold)
    bases, [item] = await _serve(request, [q])
    return web.json_response({**item, "based_on": [b.to_json() for b in bases]})


async def post_lookup(request: web.Request) -> web.Response:
    lk = request.app[LOOKUP]
    # Read the body ourselves: a full batch of PhotoDNA queries exceeds the
    # server's 64 KiB client_max_size, which is right for every other route.
    raw = await read_body(request, MAX_BODY)  # 413 over the limit, 408 if trickled
    # Bounded before parsing: deep nesting, 5000-digit numbers and 1e400
    # are a 400 naming the problem, not a RecursionError/ValueError (500).
    body = json_loads(raw, 'body must be JSON {"queries": [...]}', max_bytes=MAX_BODY, error=InputError)
    if not isinstance(body, dict) or not isinstance(body.get("queries"), list):
        raise InputError("body must be a JSON object with a 'queries' list")
    if len(body["queries"]) > MAX_BATCH:
        raise InputError(f"at most {MAX_BATCH} queries per request")
    parsed = parse_batch(body["queries"], lk.default_threshold)
    bases, answers = await _serve(request, [q for q in parsed if isinstance(q, Query)])
    results = in_order(parsed, answers)
    return web.json_response({"results": results, "based_on": [b.to_json() for b in bases]})


def lookup_extension(mirror_path: Path | str, default_threshold: int = DEFAULT_THRESHOLD):
    """An ``install(app)`` for ``server.create_app(extensions=...)``."""
    def install(app: web.Application) -> None:
        app[LOOKUP] = Lookup(mirror_path, default_threshold, keep_index=True)
        app[LOOKUP_THREAD] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookup")
        app.router.add_get("/lookup/{type}/{hash}", get_lookup)
        app.router.add_post("/lookup", post_lookup)
        answer_json(app, "/lookup/{type}/{hash}", "/lookup")

        async def close(app: web.Application):
            yield
            # In the lookup thread, after a lookup still running there (its
            # request may be gone): the connection is not closed under it.
            await asyncio.get_running_loop().run_in_executor(app[LOOKUP_THREAD], app[LOOKUP].close)
            app[LOOKUP_THREAD].shutdown(wait=False)

        app.cleanup_ctx.append(close)
    return install
