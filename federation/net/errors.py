"""The one map from our errors to HTTP answers: an aiohttp middleware.

Handlers and middlewares of every app raise a ``FederationError``; none
builds an error answer itself. ``server.create_app`` installs ``middleware``
first, so it is the outermost and also sees what access control raises
before any route. The status is the error class's ``http_status``
(``core.errors``); the body is in the format of the API that answers, as
docs/openapi.yaml documents it:

* ``TEXT`` (the tlog read side, long-poll, snapshots, trust files, the
  publishing API): ``text/plain; charset=utf-8``, the message and a newline.
* ``JSON`` (the platform API): ``{"error": message, "kind": kind}``, and for
  an ``UnavailableError`` also ``feeds``, what each feed in the way stands on.
* tlog-witness, for any ``WitnessRefusal``: ``text/plain``, the message and a
  newline; a ``WitnessConflict`` naming the latest cosigned size answers
  that size as ``text/x.tlog.size`` (c2sp.org/tlog-witness).

Which of TEXT and JSON: the route's, as the extension that added it declared
it (``answer_json``; TEXT otherwise). An ``AuthError`` is the refusal of the
app's access layer, which decides before routing (so also on a path no route
matches): on a route that declared its format it takes that format (a node
serving feeds and the platform API refuses each in its own), elsewhere the
app's ``ErrorFormats.access``.

Headers: ``WWW-Authenticate: Bearer realm=...`` with an ``AuthError`` that
names a realm (the 401s), ``Retry-After`` with a ``RateLimitedError``. A 408
or 413 closes the connection: the rest of that body was never read.

Anything else passes through: aiohttp's own HTTP exceptions (404 for a path
no route matches, 405) as aiohttp answers them, and any other exception is a
bug of ours, which aiohttp logs with its traceback and answers 500.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiohttp import web

from federation.core.errors import (SIZE_CONTENT_TYPE, AuthError, FederationError, RateLimitedError,
                                    RequestTimeoutError, TooLargeError, UnavailableError, WitnessConflict,
                                    WitnessRefusal)

log = logging.getLogger("federation.http")

TEXT = "text"
JSON = "json"


@dataclass
class ErrorFormats:
    """An app's error body formats: ``access`` for its access layer's refusals
    and unmatched paths, ``routes`` (canonical route -> format) for the rest."""

    access: str = TEXT
    routes: dict[str, str] = field(default_factory=dict)


ERROR_FORMATS = web.AppKey("error_formats", ErrorFormats)


def answer_json(app: web.Application, *routes: str) -> None:
    """Errors raised on these routes (canonical paths) are answered in JSON."""
    for route in routes:
        app[ERROR_FORMATS].routes[route] = JSON


def _format(request: web.Request, e: FederationError) -> str:
    formats = request.app.get(ERROR_FORMATS) or ErrorFormats()
    resource = request.match_info.route.resource
    if resource is None:
        return formats.access
    # A refusal on a route that declared its format (the platform API's, on
    # a node that also serves feeds) is in that format; else the access layer's.
    return formats.routes.get(resource.canonical, formats.access if isinstance(e, AuthError) else TEXT)


def answer(request: web.Request, e: FederationError) -> web.Response:
    """The HTTP answer to ``e`` raised while serving ``request``."""
    status = e.http_status
    if status >= 500:
        log.warning("%s %s: %d (%s): %s", request.method, request.path, status, e.kind, e)
    if isinstance(e, WitnessRefusal):
        if isinstance(e, WitnessConflict) and e.size is not None:
            resp = web.Response(status=status, body=f"{e.size}\n".encode(), content_type=SIZE_CONTENT_TYPE)
        else:
            resp = web.Response(status=status, body=f"{e}\n".encode(), content_type="text/plain")
    elif _format(request, e) == JSON:
        body = {"error": str(e), "kind": e.kind}
        if isinstance(e, UnavailableError):
            body["feeds"] = [p.to_json() for p in e.problems]
        resp = web.json_response(body, status=status)
    else:
        resp = web.Response(status=status, text=f"{e}\n")
    if isinstance(e, AuthError) and e.realm:
        resp.headers["WWW-Authenticate"] = f'Bearer realm="{e.realm}"'
    if isinstance(e, RateLimitedError):
        resp.headers["Retry-After"] = str(e.retry_after)
    if isinstance(e, (TooLargeError, RequestTimeoutError)):
        resp.force_close()  # the rest of the body is unread: close rather than linger over it
    return resp


@web.middleware
async def middleware(request: web.Request, handler):
    """Answer every ``FederationError`` raised inside with ``answer``."""
    try:
        return await handler(request)
    except FederationError as e:
        return answer(request, e)
