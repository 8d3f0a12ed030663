"""The platform API: lookup, change stream, webhooks, metrics, over a mirror.

``PlatformAPI`` is the one set of parts every assembly installs: a node's
``[platform]`` table (``node.assembly.build_app``, whose followers are its
sync loop and whose tokens are its own) and ``federation platform serve``
(``PlatformNode`` below, kept for a mirror synced by ``federation sync`` or
its own ``--sync-interval`` loop). Either way ``record_sync`` and
``changed`` are what a sync loop calls, so sync durations and failures by
kind appear in ``/metrics`` and webhooks are woken as soon as a version is
applied.

Files in the node home: ``mirror.db`` (the mirror, written only by sync)
and ``platform.db`` (consumer cursors, webhooks: ``store.platform``). Every
route reads the mirror through its own read-only connection.

Access: without ``auth_db`` the API is open (listen on loopback). With it
(``platform serve --auth``), ``platform.auth.PlatformAuth`` requires a
platform bearer token from that ``store.tokens.TokenStore`` on every route
but ``/healthz``. Its middleware sits inside the metrics middleware, so refused
requests (401/403/429) are counted too.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from aiohttp import web

from federation.platform.changes import STREAM, changes_extension
from federation.store.platform import PlatformStore
from federation.core.errors import FederationError
from federation.store.tokens import TokenStore
from federation.platform.lookup import lookup_extension
from federation.platform.metrics import Metrics
from federation.store.mirror import Mirror
from federation.platform.pdq_index import DEFAULT_THRESHOLD
from federation.platform.auth import PlatformAuth
from federation.net.errors import ERROR_FORMATS, JSON, answer_json
from federation.net.server import create_app
from federation.sync.orchestrator import sync_once

log = logging.getLogger("federation.platform")


class PlatformAPI:
    """The platform API's parts over ``mirror_path`` and ``platform_path``.

    ``extensions(count_requests)`` are ``server.create_app`` extensions:
    ``/lookup``, the change stream and webhook deliveries, ``/metrics``
    (with request counting unless the assembly puts ``metrics.middleware``
    outside its auth itself, so refusals are counted too).
    """

    def __init__(self, mirror_path: Path | str, platform_path: Path | str, threshold: int = DEFAULT_THRESHOLD,
                 **deliverer_options):
        self.mirror_path, self.platform_path = Path(mirror_path), Path(platform_path)
        Mirror(self.mirror_path).close()          # create the schema if new
        PlatformStore(self.platform_path).close()  # idem
        self.threshold = threshold
        self.deliverer_options = deliverer_options
        self.metrics = Metrics()
        self.app: web.Application | None = None

    def extensions(self, count_requests: bool = True) -> list:
        def bind(app: web.Application) -> None:
            self.app = app
            app[STREAM]["deliverer"].on_attempt = self.metrics.record_webhook
            answer_json(app, "/metrics")  # its refusals too: the API answers JSON (docs/openapi.yaml)

        return [lookup_extension(self.mirror_path, self.threshold),
                changes_extension(self.mirror_path, self.platform_path, **self.deliverer_options),
                self.metrics.extension(self.mirror_path, self.platform_path, count_requests=count_requests),
                bind]

    @property
    def deliverer(self):
        return self.app[STREAM]["deliverer"]

    def record_sync(self, feed: str, seconds: float, error: FederationError | None) -> None:
        """A sync loop's round of ``feed`` ended (``error`` None: it succeeded)."""
        self.metrics.record_sync(feed, seconds, error)

    def changed(self) -> None:
        """A version was applied: wake the webhook deliveries."""
        if self.app is not None:
            self.deliverer.notify()


class PlatformNode:
    """``federation platform serve``: the platform API alone over a home's
    mirror, open or behind platform tokens (``auth_db``), with its own sync
    loop every ``sync_interval`` seconds if given. A node that also follows
    its feeds serves the same API from ``[platform]`` (``node.assembly``)."""

    def __init__(self, mirror_path: Path | str, platform_path: Path | str, threshold: int = DEFAULT_THRESHOLD,
                 sync_interval: float | None = None, sources: list | None = None,
                 auth_db: Path | str | None = None, extensions: list | None = None, **deliverer_options):
        self.mirror_path, self.platform_path = Path(mirror_path), Path(platform_path)
        self.sync_interval = sync_interval
        self.api = PlatformAPI(mirror_path, platform_path, threshold, **deliverer_options)
        self.metrics = self.api.metrics
        self.app = create_app(sources or [], extensions=[
            *self.api.extensions(), *(extensions or [])])  # e.g. the status page (node.status)
        # The platform API's refusals (401/403/429) are JSON on every path,
        # its read-side routes included (docs/openapi.yaml).
        self.app[ERROR_FORMATS].access = JSON
        self.auth: PlatformAuth | None = None
        if auth_db is not None:
            self.auth = PlatformAuth(TokenStore(auth_db))
            # Appended after the extensions' middlewares: inside metrics, so refusals are counted.
            self.app.middlewares.append(self.auth.middleware)
            self.app.cleanup_ctx.append(self._close_auth)
        if sync_interval is not None:
            self.app.cleanup_ctx.append(self._sync_task)

    @property
    def deliverer(self):
        return self.api.deliverer

    async def sync_all(self, mirror: Mirror) -> list:
        """One sync of every followed feed; failures are logged and counted, not raised."""
        results = []
        for f in mirror.all():
            start = time.monotonic()
            try:
                r = await sync_once(mirror, f.name)
            except FederationError as e:
                self.api.record_sync(f.name, time.monotonic() - start, e)  # sync_once logged it
                results.append(e)
                continue
            self.api.record_sync(f.name, time.monotonic() - start, None)
            if r.changed:  # sync_once logged the outcome
                self.api.changed()
            results.append(r)
        return results

    async def _close_auth(self, app: web.Application):
        yield
        self.auth.store.close()

    async def _sync_task(self, app: web.Application):
        mirror = Mirror(self.mirror_path)

        async def loop():
            while True:
                try:
                    await self.sync_all(mirror)
                except Exception:  # noqa: BLE001 -- a follower loop never dies; the next round retries
                    log.exception("sync round failed unexpectedly; retrying in %s s", self.sync_interval)
                await asyncio.sleep(self.sync_interval)

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        mirror.close()
