"""Prometheus metrics of a node (``GET /metrics``, prometheus-client).

Two kinds of figures:

* Read at scrape time from the mirror (and platform) database through the
  stores' query functions, so they are right even when another process
  runs ``federation sync``: per feed version, applied and verified log
  size, lag in entries, active hash count, last sync time, whether the last
  sync failed; the change stream head; per webhook cursor and backlog.
* Counted in this process: HTTP requests by route and status, sync
  durations and failures by kind (verification kinds: signature, rollback,
  fork, digest, malformed, stale; and transport, storage), webhook attempts.

Each ``Metrics`` has its own registry, so tests and several apps in one
process never share counters. Route labels are route templates
(``/feeds/{name}/checkpoint``), never raw paths, to bound cardinality.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from federation.store.db import connect
from federation.core.checkpoint import parse_checkpoint_body
from federation.core.note import parse_note
from federation.store.mirror import changes_head, sync_status
from federation.store.platform import webhook_cursors
from federation.core.errors import FederationError, VerificationError

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class MirrorCollector:
    """Gauges computed from the mirror (and platform) databases on each scrape."""

    def __init__(self, mirror: sqlite3.Connection, platform: sqlite3.Connection | None = None):
        self.mirror, self.platform = mirror, platform

    def describe(self):
        return []  # computed at collect time; no fixed description

    def collect(self):
        g = {name: GaugeMetricFamily(f"federation_feed_{name}", doc, labels=["feed"]) for name, doc in [
            ("version", "Last applied version of the followed feed."),
            ("size", "Applied log size (entries)."),
            ("verified_size", "Size of the newest verified checkpoint."),
            ("lag_entries", "Entries verified but not yet applied."),
            ("active_hashes", "Active hash records of the feed in the mirror."),
            ("last_sync_timestamp_seconds", "Unix time of the last sync attempt."),
            ("last_sync_failed", "1 if the last sync attempt failed."),
            ("updated_timestamp_seconds", "Unix time the last version was applied."),
        ]}
        rows = sync_status(self.mirror)
        for name, version, size, vcp, count, last_sync, failed, updated in rows:
            verified = parse_checkpoint_body(parse_note(vcp).text).size if vcp else 0
            g["version"].add_metric([name], version)
            g["size"].add_metric([name], size)
            g["verified_size"].add_metric([name], verified)
            g["lag_entries"].add_metric([name], max(0, verified - size))
            g["active_hashes"].add_metric([name], count)
            if last_sync is not None:
                g["last_sync_timestamp_seconds"].add_metric([name], last_sync)
                # The sync as a whole, not evidence about an upstream that
                # failed while a later one served (``last_error`` keeps that).
                g["last_sync_failed"].add_metric([name], 1 if failed else 0)
            if updated is not None:
                g["updated_timestamp_seconds"].add_metric([name], updated)
        yield from g.values()
        head = changes_head(self.mirror)
        h = GaugeMetricFamily("federation_changes_head", "Newest change stream sequence number.")
        h.add_metric([], head)
        yield h
        if self.platform is not None:
            cur = GaugeMetricFamily("federation_webhook_cursor", "Last acknowledged seq per webhook.",
                                    labels=["webhook"])
            backlog = GaugeMetricFamily("federation_webhook_backlog", "Changes not yet acknowledged per webhook.",
                                        labels=["webhook"])
            for name, cursor in webhook_cursors(self.platform):
                cur.add_metric([name], cursor)
                backlog.add_metric([name], max(0, head - cursor))
            yield cur
            yield backlog


class Metrics:
    """Counters of one node process, and the ``/metrics`` route."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("federation_http_requests", "HTTP requests served.",
                                ["method", "route", "status"], registry=self.registry)
        self.sync_seconds = Histogram("federation_sync_duration_seconds", "Duration of one feed sync.",
                                      ["feed"], registry=self.registry,
                                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
        self.sync_failures = Counter("federation_sync_failures", "Failed syncs by error kind.",
                                     ["feed", "kind"], registry=self.registry)
        self.verification_failures = Counter(
            "federation_verification_failures", "Syncs refused because upstream data failed verification, by kind.",
            ["feed", "kind"], registry=self.registry)
        self.webhook_attempts = Counter("federation_webhook_attempts", "Webhook delivery attempts.",
                                        ["webhook", "result"], registry=self.registry)

    def record_sync(self, feed: str, seconds: float, error: FederationError | None) -> None:
        self.sync_seconds.labels(feed).observe(seconds)
        if error is not None:
            self.sync_failures.labels(feed, error.kind).inc()
            if isinstance(error, VerificationError):
                self.verification_failures.labels(feed, error.kind).inc()

    def record_webhook(self, name: str, ok: bool) -> None:
        self.webhook_attempts.labels(name, "ok" if ok else "failed").inc()

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        # Label values must come from a fixed set: a client can send any
        # method token, and each new label value is a new time series.
        method = request.method if request.method in _METHODS else "other"
        try:
            resp = await handler(request)
        except web.HTTPException as e:
            self.requests.labels(method, route, str(e.status)).inc()
            raise
        except FederationError as e:  # answered outside, by net.errors, with this status
            self.requests.labels(method, route, str(e.http_status)).inc()
            raise
        except Exception:
            self.requests.labels(method, route, "500").inc()
            raise
        self.requests.labels(method, route, str(resp.status)).inc()
        return resp

    def extension(self, mirror_path: Path | str | None = None, platform_path: Path | str | None = None,
                  count_requests: bool = True):
        """An ``install(app)``: ``GET /metrics``, and request counting unless
        the caller places ``self.middleware`` itself (``count_requests=False``)."""
        def install(app: web.Application) -> None:
            if mirror_path is not None:
                mirror = connect(mirror_path, readonly=True)
                platform = connect(platform_path, readonly=True) if platform_path is not None else None
                collector = MirrorCollector(mirror, platform)
                self.registry.register(collector)

                async def close(app: web.Application):
                    yield
                    self.registry.unregister(collector)
                    mirror.close()
                    if platform is not None:
                        platform.close()

                app.cleanup_ctx.append(close)
            if count_requests:
                app.middlewares.append(self.middleware)

            async def get_metrics(request: web.Request) -> web.Response:
                body = generate_latest(self.registry)
                return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

            app.router.add_get("/metrics", get_metrics)
        return install
