"""A member's client of a publisher's feedback API (``net.feedback_api``).

Synchronous (urllib), so that the CLI and the threatexchange extension --
which a stock ``threatexchange`` process calls outside any event loop --
share it. Every answer is read bounded (``MAX_ANSWER_BYTES``) and within
``timeout`` seconds, and every failure is one of our errors with a kind:

* no token at all: ``InputError`` before any request ("set VAR to ...");
* 401 (missing, malformed, unknown or revoked token): ``AuthError`` saying
  the publisher refused the token; 403: ``ForbiddenError`` (a token of
  another feed or role); 404 ``NotFoundError``; 409 ``ConflictError``;
  422 ``RefusedError``;
* 429: ``UpstreamRateLimitedError`` (a ``TransportError`` of kind
  ``rate_limit``, with the answer's ``Retry-After``): the request was not
  taken, and may be sent again after that wait;
* 5xx, refused connections, timeouts: ``TransportError``; so is any 3xx: a
  redirect is never followed, since urllib would carry the member token's
  ``Authorization`` header to whatever host the answer names (as the webhook
  deliverer, ``platform.changes``, never follows one either);
* an answer that is not the JSON object expected: ``MalformedError``.
"""
from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

from federation.core.bounded import json_loads
from federation.core.errors import (AuthError, ConflictError, FederationError, ForbiddenError, InputError,
                                    MalformedError, NotFoundError, RefusedError, TransportError,
                                    UpstreamRateLimitedError)
from federation.core.feedback import Report

MAX_ANSWER_BYTES = 8 * 1024 * 1024
TIMEOUT = 30.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Answer a 3xx as the HTTPError it is instead of following it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# urllib's default handlers, with only the redirect one replaced.
_OPENER = urllib.request.build_opener(_NoRedirect)


def feedback_url(feed_url: str) -> str:
    """The feedback endpoint of a feed's tlog-tiles prefix (``.../feeds/NAME/``)."""
    if not feed_url.startswith(("http://", "https://")):
        raise InputError(f"{feed_url!r} is not an http(s) URL of a feed (e.g. http://host:8080/feeds/tid/)")
    return feed_url.rstrip("/") + "/feedback"


class FeedbackClient:
    """Reports to, and reads back from, one feed's feedback endpoint."""

    def __init__(self, feed_url: str, token: str | None, token_hint: str = "the member token",
                 timeout: float = TIMEOUT):
        if not token:
            raise InputError(f"no member token: set {token_hint} to the token the publisher issued to your "
                             "platform for this feed ('federation token issue MEMBER --feed FEED' on its node)")
        self.url = feedback_url(feed_url)
        self.token = token.strip()
        self.timeout = timeout

    def report(self, reports: list[Report]) -> dict:
        """Send ``reports`` (all or nothing); the answer lists each as stored."""
        return self._call("POST", self.url, {"reports": [r.to_json() for r in reports]})

    def mine(self, since: int = 0, limit: int = 100) -> list[dict]:
        q = urllib.parse.urlencode({"since": since, "limit": limit})
        return self._call("GET", f"{self.url}?{q}")["reports"]

    def one(self, report_id: str) -> dict:
        return self._call("GET", f"{self.url}/{urllib.parse.quote(report_id, safe='')}")["report"]

    def _call(self, method: str, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Content-Type": "application/json", "Accept": "application/json",
            "User-Agent": "federation-feedback", "Authorization": f"Bearer {self.token}"})
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                raw = resp.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as e:
            raise _refusal(url, e) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            raise TransportError(f"{method} {url}: {getattr(e, 'reason', e)}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise MalformedError(f"{url}: answer over {MAX_ANSWER_BYTES} bytes")
        doc = json_loads(raw, f"answer of {url}", max_bytes=MAX_ANSWER_BYTES)
        if not isinstance(doc, dict):
            raise MalformedError(f"{url}: answer is not a JSON object")
        return doc


def _refusal(url: str, e: urllib.error.HTTPError) -> Exception:
    """Our error for an HTTP error answer, with the server's own message."""
    try:
        raw = e.read(64 * 1024)
    except (OSError, http.client.HTTPException):
        raw = b""
    try:
        doc = json_loads(raw, "error answer", max_bytes=64 * 1024 + 1)
        said = doc.get("error") if isinstance(doc, dict) else None
    except FederationError:  # not our JSON (a proxy's page): its text, or the status alone
        said = None
    said = said or raw.decode("utf-8", "replace").strip() or e.reason
    said = str(said)[:300]
    if e.code == 401:
        return AuthError(f"{url}: the publisher refused the token (401: {said}); check that it is the member "
                         "token issued for this feed and that it was not revoked")
    if e.code == 403:
        return ForbiddenError(f"{url}: 403: {said}")
    if e.code in (404, 410):
        return NotFoundError(f"{url}: {e.code}: {said}")
    if e.code == 409:
        return ConflictError(f"{url}: 409: {said}")
    if e.code == 429:
        retry = (e.headers.get("Retry-After", "1") if e.headers else "1").strip()
        wait = int(retry) if retry.isdigit() and len(retry) <= 6 else 1
        return UpstreamRateLimitedError(f"{url}: 429: {said}", retry_after=wait)
    if 300 <= e.code < 400:
        where = (e.headers.get("Location", "(none)") if e.headers else "(none)")[:200]
        return TransportError(f"{url}: HTTP {e.code}: redirect to {where} not followed (the member token goes to "
                              "the URL given, never elsewhere); give the publisher's feed URL itself")
    if 400 <= e.code < 500:
        return RefusedError(f"{url}: {e.code}: {said}")
    return TransportError(f"{url}: HTTP {e.code}: {said}")
