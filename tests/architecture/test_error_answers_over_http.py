"""The one map from our errors to HTTP answers (``net/errors.py``), on a real
app from ``server.create_app`` served on 127.0.0.1.

Each error class answers its ``http_status``; the body is the format of the
route (text, or JSON where the route's extension declared it), an
``AuthError`` takes the app's access format, a ``WitnessRefusal`` answers
as tlog-witness does; ``WWW-Authenticate`` and ``Retry-After`` go with the
errors that carry them. The routes' own documented answers are checked by
test_platform_openapi.py and the feature tests; this pins the map itself.
"""
from __future__ import annotations

import inspect
import json

import aiohttp
import pytest
from aiohttp import web

import federation.core.errors as E
from federation.net import errors
from federation.net.httpserver import read_body, start
from federation.net.server import create_app

pytestmark = pytest.mark.timeout(30)
TIMEOUT = aiohttp.ClientTimeout(total=10)


class _Problem:
    def to_json(self) -> dict:
        return {"feed": "tid", "problem": "never_synced"}


RAISED = {
    "input": E.InputError("bad cursor"),
    "malformed": E.MalformedError("does not parse"),
    "notfound": E.NotFoundError("no such feed"),
    "gone": E.GoneError("entry bundle pruned"),
    "conflict": E.ConflictError("batch id reused"),
    "refused": E.RefusedError("batch refused: line 1"),
    "unsupported": E.UnsupportedError("send text/csv"),
    "storage": E.StorageError("try again: database is locked"),
    "unavailable": E.UnavailableError("tid never synced", (_Problem(),)),
    "auth": E.AuthError("a valid bearer token is required", "federation"),
    "forbidden": E.ForbiddenError("this token may not read here"),
    "ratelimited": E.RateLimitedError("rate limit exceeded", retry_after=7),
    "conflict-size": E.WitnessConflict("old size 3 is not the latest cosigned size 7", 7),
    "conflict-race": E.WitnessConflict("a concurrent request cosigned first"),
    "untrusted": E.UntrustedCheckpoint("no trusted signature"),
    "bug": RuntimeError("a bug of ours"),
}


def _extension(app: web.Application) -> None:
    def raiser(key):
        async def handler(request: web.Request) -> web.Response:
            raise RAISED[key]
        return handler

    for key in RAISED:
        app.router.add_get(f"/text/{key}", raiser(key))
        app.router.add_get(f"/json/{key}", raiser(key))

    async def upload(request: web.Request) -> web.Response:
        return web.Response(body=await read_body(request, 10))

    app.router.add_post("/json/upload", upload)
    errors.answer_json(app, "/json/upload", *(f"/json/{key}" for key in RAISED))


@pytest.fixture
async def base():
    runner, url = await start(create_app([], extensions=[_extension]))
    yield url
    await runner.cleanup()


async def fetch(url: str, method: str = "GET", **kw):
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.request(method, url, **kw) as r:
            return r.status, r.headers, await r.read()


def test_every_error_class_has_an_http_status_and_a_kind():
    classes = [c for _, c in inspect.getmembers(E, inspect.isclass) if issubclass(c, E.FederationError)]
    assert len(classes) >= 25
    for c in classes:
        assert type(c.http_status) is int and 400 <= c.http_status <= 599, c
        assert isinstance(c.kind, str) and c.kind, c
    # The statuses HTTP needs, and kinds unchanged for exit codes and the platform's JSON bodies.
    assert {c.__name__: (c.http_status, c.kind) for c in classes}.items() >= {
        "InputError": (400, "input"), "UnavailableError": (503, "unavailable"), "AuthError": (401, "auth"),
        "ForbiddenError": (403, "auth"), "RateLimitedError": (429, "auth"), "NotFoundError": (404, "input"),
        "ConflictError": (409, "input"), "TooLargeError": (413, "input"), "RequestTimeoutError": (408, "input"),
        "UnsupportedError": (415, "input"), "RefusedError": (422, "input")}.items()
    # tlog-witness's statuses, each on the class naming why
    assert [c.http_status for c in (E.BadWitnessRequest, E.UntrustedCheckpoint, E.UnknownLog, E.WitnessConflict,
                                    E.InconsistentCheckpoint)] == [400, 403, 404, 409, 422]
    assert all(issubclass(c, E.WitnessRefusal) for c in (E.BadWitnessRequest, E.InconsistentCheckpoint))


@pytest.mark.parametrize("key", [k for k in RAISED if k != "bug" and not isinstance(RAISED[k], E.WitnessRefusal)])
async def test_text_and_json_routes(base, key):
    e = RAISED[key]
    status, headers, body = await fetch(f"{base}/text/{key}")
    assert status == e.http_status
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body == f"{e}\n".encode()
    status, headers, body = await fetch(f"{base}/json/{key}")
    assert status == e.http_status
    want_type = "application/json; charset=utf-8"
    if isinstance(e, E.AuthError):  # the access layer's format, whatever the route: text in this app
        want_type, want = "text/plain; charset=utf-8", f"{e}\n".encode()
    else:
        want = {"error": str(e), "kind": e.kind}
        if isinstance(e, E.UnavailableError):
            want["feeds"] = [{"feed": "tid", "problem": "never_synced"}]
    assert headers["Content-Type"] == want_type
    assert (json.loads(body) if want_type.startswith("application/json") else body) == want
    for path in ("text", "json"):
        _, headers, _ = await fetch(f"{base}/{path}/{key}")
        assert headers.get("WWW-Authenticate") == ('Bearer realm="federation"' if key == "auth" else None)
        assert headers.get("Retry-After") == ("7" if key == "ratelimited" else None)


async def test_witness_refusals_answer_as_tlog_witness(base):
    status, headers, body = await fetch(f"{base}/text/conflict-size")
    assert (status, headers["Content-Type"], body) == (409, "text/x.tlog.size", b"7\n")
    status, headers, body = await fetch(f"{base}/json/conflict-race")  # whatever the route's format
    assert (status, headers["Content-Type"], body) == (409, "text/plain", b"a concurrent request cosigned first\n")
    status, headers, body = await fetch(f"{base}/text/untrusted")
    assert (status, headers["Content-Type"], body) == (403, "text/plain", b"no trusted signature\n")


async def test_an_access_refusal_takes_the_apps_access_format():
    app = create_app([], extensions=[_extension])
    app[errors.ERROR_FORMATS].access = errors.JSON  # as PlatformNode does
    runner, base = await start(app)
    try:
        status, headers, body = await fetch(f"{base}/text/auth")
        assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="federation"'
        assert json.loads(body) == {"error": "a valid bearer token is required", "kind": "auth"}
        status, _, body = await fetch(f"{base}/text/forbidden")
        assert status == 403 and json.loads(body)["kind"] == "auth"
        status, _, body = await fetch(f"{base}/text/notfound")  # not an access refusal: the route's format
        assert (status, body) == (404, b"no such feed\n")
    finally:
        await runner.cleanup()


async def test_a_body_over_its_limit_is_answered_in_the_routes_format_and_closes(base):
    status, headers, body = await fetch(f"{base}/json/upload", "POST", data=b"x" * 11)
    assert status == 413 and headers.get("Connection", "").lower() == "close"
    assert json.loads(body) == {"error": "body of 11 bytes is over the 10-byte limit", "kind": "input"}


async def test_what_is_not_ours_passes_through(base):
    status, _, body = await fetch(f"{base}/text/bug")  # a bug: aiohttp's 500, traceback in its log
    assert status == 500 and b"a bug of ours" not in body
    status, _, body = await fetch(f"{base}/no/such/route")  # aiohttp's own 404
    assert (status, body) == (404, b"404: Not Found")


@pytest.mark.parametrize("which", ["\u00b2", "1\u00b2", "\u0661"])  # str.isdigit() says yes, int() no (or a 1)
async def test_a_trust_version_in_other_digits_is_not_found(tmp_path, which):
    from federation.net.server import PublisherSource
    from federation.store.publisher import Publisher
    from federation.core.note import Signer
    from federation.trust.rotation import install_trust_routes
    signer = Signer.generate("example.org/feeds/t")
    pub = Publisher(tmp_path / "pub.db")
    pub.create_feed("t", signer.name, signer, access="public")
    pub.close()
    runner, url = await start(create_app([PublisherSource(tmp_path / "pub.db")],
                                         extensions=[install_trust_routes([tmp_path / "pub.db"])]))
    try:
        status, headers, body = await fetch(f"{url}/feeds/t/trust/{which}")
        assert (status, body) == (404, b"not a trust version\n")
    finally:
        await runner.cleanup()
