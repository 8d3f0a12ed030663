"""Running our aiohttp apps, bounded against slow and malformed clients.

Every server this package runs -- ``serve``, ``serve --config``, ``platform
serve``, ``witness serve`` -- goes through ``run_app`` (tests and the demo
through ``start``), which adds what aiohttp does not do by itself:

* **Head deadline.** A connection must deliver its first request head
  (request line and headers) within ``Limits.head_timeout`` seconds of
  connecting, or it is closed: a slowloris client sending one header byte a
  second holds a socket for that long, not forever. Later requests on a
  keep-alive connection are bounded by aiohttp's keep-alive timer, which we
  set to ``Limits.idle_timeout``: a connection with no complete request that
  long after its last response is closed.
* **Body deadline.** Handlers read bodies with ``read_body``: at most
  ``limit`` bytes, within ``body_timeout`` plus the time the body takes at
  ``body_min_rate`` bytes a second; past it, ``408`` -- and the connection
  is closed after at most ``linger`` seconds more of draining (``net.errors``
  answers these, as every error of ours, in the route's format).
* **Quiet refusals.** A request line or header over aiohttp's limits (8190
  bytes each), or a request that does not parse, is answered ``400`` and
  logged as *one* line naming the peer and the kind of problem: no
  traceback, and none of the request's bytes, in the log or in the answer (a
  bearer token can be in them). Errors in our own handlers keep their
  tracebacks: those are bugs.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from federation.core.errors import RequestTimeoutError, TooLargeError

log = logging.getLogger("federation.http")

_PROBLEMS = {  # aiohttp's parser errors, by class name (their messages may quote the request)
    "LineTooLong": "request line or header field over the size limit",
    "BadStatusLine": "malformed request line",
    "BadHttpMethod": "malformed request method",
    "InvalidHeader": "malformed header",
    "InvalidURLError": "malformed URL",
    "ContentLengthError": "body shorter than its Content-Length",
    "TransferEncodingError": "malformed chunked body",
}


@dataclass(frozen=True)
class Limits:
    """Time and size limits of one server (docs/node.md)."""

    head_timeout: float = 10.0   # seconds from connect to a complete first request head
    idle_timeout: float = 15.0   # keep-alive: seconds after a response for the next request head
    body_timeout: float = 30.0   # seconds for a request body, plus its size at body_min_rate
    body_min_rate: float = 64 * 1024  # bytes per second a large body must sustain
    linger: float = 2.0          # seconds to drain an unread body after answering (aiohttp: 10)
    max_line: int = 8190         # request line (aiohttp's default, stated here)
    max_field: int = 8190        # one header field


DEFAULT_LIMITS = Limits()
SHUTDOWN_TIMEOUT = 1.0  # seconds aiohttp waits for handlers in flight at shutdown (then cancels them)
LIMITS = web.AppKey("http_limits", Limits)


# ---- request bodies ------------------------------------------------------------------

async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body: at most ``limit`` bytes (else ``TooLargeError``,
    413), read within the app's body deadline (else ``RequestTimeoutError``,
    408); ``net.errors`` answers both in the route's format and closes the
    connection. The deadline scales with the size announced (or ``limit``),
    so a large honest upload has time and a trickled one does not hold the
    handler."""
    announced = request.content_length
    if announced is not None and announced > limit:
        raise TooLargeError(f"body of {announced} bytes is over the {limit}-byte limit")
    limits = request.app.get(LIMITS, DEFAULT_LIMITS)
    deadline = limits.body_timeout + min(limit, announced if announced is not None else limit) / limits.body_min_rate
    body = bytearray()
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.content.iter_chunked(65536):
                body += chunk
                if len(body) > limit:
                    raise TooLargeError(f"body is over the {limit}-byte limit")
    except TimeoutError:
        log.info("request body from %s not complete within %.0f s: 408", request.remote, deadline)
        raise RequestTimeoutError(f"request body not complete within {deadline:.0f} s") from None
    return bytes(body)


# ---- connections ---------------------------------------------------------------------

class _Handler(web.RequestHandler):
    """aiohttp's HTTP/1 protocol with a deadline on the first request head,
    and malformed requests refused without echoing or logging their bytes."""

    def __init__(self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, head_timeout: float, **kw):
        super().__init__(manager, loop=loop, **kw)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_tail = b""
        self._head_started = False
        self._peer = "?"

    def connection_made(self, transport) -> None:
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else str(peer)
        self._head_timer = asyncio.get_running_loop().call_later(self._head_timeout, self._head_expired)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._head_timer is not None:
            # The head ends at the first empty line ("\r\n\r\n", or a bare
            # "\n\n" that lenient parsers accept) after the request line;
            # empty lines before it do not count (RFC 9112 2.2: servers ignore
            # them), or "\r\n\r\n" first would disarm the deadline.
            seen = self._head_tail + data
            if not self._head_started:
                seen = seen.lstrip(b"\r\n")
                self._head_started = bool(seen)
            if b"\n\r\n" in seen or b"\n\n" in seen:
                self._head_timer.cancel()
                self._head_timer = None
            else:
                self._head_tail = seen[-2:]
        super().data_received(data)

    def connection_lost(self, exc) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_expired(self) -> None:
        self._head_timer = None
        log.info("closed a connection from %s: no complete request head within %.0f s", self._peer,
                 self._head_timeout)
        self.force_close()

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # The parser's message quotes the offending bytes (a header value can
        # hold a bearer token): name the kind of problem only.
        problem = _PROBLEMS.get(type(exc).__name__, "malformed request")
        log.warning("refused a request from %s: %s (HTTP %d)", self._peer, problem, status)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        resp = web.Response(status=status, text=f"{status} {HTTPStatus(status).phrase}: {problem}\n")
        resp.force_close()
        return resp


class _Site(web.BaseSite):
    """A TCP listener whose connections are ``_Handler``s."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, limits: Limits, access_log: bool):
        super().__init__(runner)
        self.host, self.requested_port, self.port = host, port, port
        self.limits, self.access_log = limits, access_log

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        kw = dict(keepalive_timeout=self.limits.idle_timeout, lingering_time=self.limits.linger,
                  max_line_size=self.limits.max_line,
                  max_field_size=self.limits.max_field, head_timeout=self.limits.head_timeout)
        if not self.access_log:
            kw["access_log"] = None
        self._server = await loop.create_server(lambda: _Handler(server, loop=loop, **kw), self.host,
                                                self.requested_port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]


async def start(app: web.Application, host: str = "127.0.0.1", port: int = 0, limits: Limits = DEFAULT_LIMITS,
                access_log: bool = False, handle_signals: bool = False) -> tuple[web.AppRunner, str]:
    """Start ``app`` on ``host:port`` (0: a free port); return (runner, base URL).
    ``await runner.cleanup()`` stops it."""
    app[LIMITS] = limits
    runner = web.AppRunner(app, handle_signals=handle_signals, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = _Site(runner, host, port, limits, access_log)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site.name


def run_app(app: web.Application, host: str, port: int, on_start: Callable[[str], None] | None = None,
            limits: Limits = DEFAULT_LIMITS, access_log: bool = True) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; ``on_start(base_url)`` runs once it listens.

    Shutdown is bounded (docs/node.md: a node stops within 2 s): the
    listener closes, ``on_shutdown`` answers held long-polls at once
    (``longpoll.release``), handlers still running get ``SHUTDOWN_TIMEOUT``
    seconds and are then cancelled, and ``cleanup_ctx`` cancels the
    background tasks (followers, webhook workers, refresh). A version being
    applied (one transaction in a worker thread) is finished before its
    follower's cancellation completes (``store.db.finish_in_thread``), so
    no connection is closed under a transaction. One log line says which
    signal stopped the node, one that it stopped.

    Every server a command runs writes an access log (logger
    ``aiohttp.access``, one line per request; with ``--log-json`` its fields
    are JSON fields, ``cli.logs``); tests that ``start`` servers in-process
    leave it off.
    """

    async def main() -> None:
        stop = asyncio.Event()
        received: list[str] = []
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            received.append(sig.name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        runner, url = await start(app, host, port, limits, access_log)
        began = time.monotonic()
        try:
            if on_start is not None:
                on_start(url)
            await stop.wait()
            log.info("received %s: stopping (listener closed, held requests answered, background tasks "
                     "cancelled)", received[0])
            began = time.monotonic()
        finally:
            await runner.cleanup()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        log.info("stopped in %.2f s", time.monotonic() - began)

    loop = asyncio.new_event_loop()
    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except KeyboardInterrupt:  # a second signal before the handlers were installed
        pass
    finally:
        if not task.done():  # interrupted: let main() clean the runner up
            task.cancel()
            with suppress(asyncio.CancelledError, KeyboardInterrupt):
                loop.run_until_complete(task)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
