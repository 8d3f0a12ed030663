"""One error hierarchy for the whole package.

Errors are split by whose fault they are (python-tuf style):

* ``VerificationError`` -- the remote side sent data that failed verification.
  Each subclass has a ``kind`` naming *what* failed, so operators, metrics and
  tests can match on it: ``signature``, ``rollback``, ``fork``, ``digest``,
  ``malformed``, ``stale``.
* ``TransportError`` -- the data never arrived (connection refused, timeout,
  HTTP error status, oversize response). ``UpstreamAuthError`` (kind
  ``auth``, exit 3 like its parent) is an upstream's 401/403: the member
  token is missing or refused; ``UpstreamRateLimitedError`` (kind
  ``rate_limit``, exit 3) its 429: not taken, send again after its wait.
* ``StorageError`` -- our own local store is unusable or was changed under us
  (or a local worker process it needs died).
* ``InputError`` -- an operator's or a client's input (CSV/JSONL batch, CLI
  argument, key file, HTTP request) is invalid. Nothing is written when it
  is raised.
* ``InternalError`` -- a bug of ours caught by a check rather than an
  ``assert`` (which ``python -O`` strips), e.g. a step of checkpoint
  acceptance called out of order (``OrderError``). Nothing was written.
* ``UnavailableError`` -- fail closed: the mirror cannot stand behind an
  answer (no home, no followed feed, never synced, last sync failed
  verification, or older than its maximum age). Lookups raise it instead of
  answering "no match"; the CLI exits 5 and HTTP answers 503.

HTTP: every class states the status it is answered with (``http_status``),
and ``net.errors`` -- one aiohttp middleware -- turns whatever a handler or
middleware raises into that answer. The kinds HTTP needs beyond these are
subclasses that keep their parent's ``kind`` (so exit codes, metrics and the
JSON bodies' ``kind`` do not change): ``AuthError`` (kind ``auth``: 401,
with ``ForbiddenError`` 403 and ``RateLimitedError`` 429), and under
``InputError`` ``NotFoundError`` 404 (``GoneError`` 410), ``ConflictError``
409, ``RefusedError`` 422, ``TooLargeError`` 413, ``RequestTimeoutError``
408 and ``UnsupportedError`` 415. ``WitnessRefusal`` marks the refusals of
c2sp.org/tlog-witness; each is also the class naming why, whose status is
the one the spec names.

Invariant: a raised ``FederationError`` never leaves a mirror or a publisher
half-updated; callers may retry.
"""
from __future__ import annotations


class FederationError(Exception):
    """Base class for every error this package raises on purpose."""

    kind = "error"
    http_status = 500  # only for a bare FederationError: each subclass names its own


class VerificationError(FederationError):
    """Remote data failed verification. ``kind`` names what failed."""

    kind = "verification"
    http_status = 422  # well-formed, but it does not verify


class SignatureError(VerificationError):
    """No trusted key signed the note, or a trusted key's signature is bad."""

    kind = "signature"
    http_status = 403  # tlog-witness: no trusted key signed it


class RollbackError(VerificationError):
    """The remote offers a tree smaller than one we already verified."""

    kind = "rollback"
    http_status = 409


class ForkError(VerificationError):
    """Two validly signed trees that cannot both be true (split view)."""

    kind = "fork"
    http_status = 422  # tlog-witness: the consistency proof does not verify


class DigestError(VerificationError):
    """A seal's state digest or count disagrees with the mirror's own state."""

    kind = "digest"
    http_status = 422


class MalformedError(VerificationError):
    """Bytes that do not parse, or that do not hash to what was signed."""

    kind = "malformed"
    http_status = 400


class StaleError(VerificationError):
    """The newest trusted timestamp is older than the configured maximum."""

    kind = "stale"
    http_status = 422


class TransportError(FederationError):
    """The data could not be fetched (network, HTTP status, size limit)."""

    kind = "transport"
    http_status = 502  # an upstream did not deliver


class Unreachable(TransportError):
    """No connection could be made (refused, no route, name not found): the
    request never left this node, so the other side saw nothing of it."""


class UpstreamAuthError(TransportError):
    """An upstream refused us (HTTP 401/403): a members-only feed followed
    without a member token, or with one it does not accept. Its own kind, so
    an operator is told to fix the token, not the network."""

    kind = "auth"


class UpstreamRateLimitedError(TransportError):
    """An upstream answered 429: our request was not taken; it may be sent
    again in ``retry_after`` seconds. Its own kind (exit 3 like its parent):
    not an ``auth`` failure, since the token was fine."""

    kind = "rate_limit"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class StorageError(FederationError):
    """The local SQLite store is missing, corrupt, or was changed concurrently."""

    kind = "storage"
    http_status = 503  # "try again": the publishing API's answer to a busy database


class InputError(FederationError):
    """Operator or client input is invalid (a CLI argument, a key file, a
    batch, an HTTP request); nothing was written."""

    kind = "input"
    http_status = 400


class InternalError(FederationError):
    """A bug of ours, caught: the caller broke a documented contract."""

    kind = "internal"


class OrderError(InternalError):
    """A step of checkpoint acceptance (``core.acceptance``) was called out
    of order, or after a step that failed; the message names both steps."""


class UnavailableError(FederationError):
    """Fail closed: a lookup (or another read) cannot be answered from this mirror.

    ``problems`` lists, per feed, why (``FeedProblem``-like objects with
    ``feed``, ``problem`` and ``detail``); the message says the same in one line.
    """

    kind = "unavailable"
    http_status = 503  # fail closed

    def __init__(self, message: str, problems: tuple = ()):
        super().__init__(message)
        self.problems = tuple(problems)


# ---- refusals of HTTP requests ---------------------------------------------------


class AuthError(InputError):
    """Access control refused the request: no valid credentials (401).

    ``realm`` names the ``WWW-Authenticate: Bearer`` challenge sent with it.
    Subclasses are the other refusals of an access layer, without a challenge.
    """

    kind = "auth"
    http_status = 401

    def __init__(self, message: str, realm: str | None = None):
        super().__init__(message)
        self.realm = realm


class ForbiddenError(AuthError):
    """Valid credentials that do not allow this request (403)."""

    http_status = 403

    def __init__(self, message: str):
        super().__init__(message)


class RateLimitedError(AuthError):
    """The caller is over its rate (429); it may retry in ``retry_after`` seconds."""

    http_status = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class NotFoundError(InputError):
    """The request names something this server does not have (404)."""

    http_status = 404


class GoneError(NotFoundError):
    """The request names something removed for good, e.g. a pruned entry bundle (410)."""

    http_status = 410


class ConflictError(InputError):
    """The request conflicts with what is stored, e.g. a batch id reused for another body (409)."""

    http_status = 409


class RefusedError(InputError):
    """A well-formed request whose content is refused, e.g. a batch with a bad line (422)."""

    http_status = 422


class TooLargeError(InputError):
    """A request body over its limit (413)."""

    http_status = 413


class RequestTimeoutError(InputError):
    """A request body not received within its deadline (408)."""

    http_status = 408


class UnsupportedError(InputError):
    """A request body of a media type this route does not read (415)."""

    http_status = 415


# ---- c2sp.org/tlog-witness -------------------------------------------------------

SIZE_CONTENT_TYPE = "text/x.tlog.size"  # tlog-witness: a 409's body, the latest cosigned size


class WitnessRefusal(FederationError):
    """A witness will not cosign. Each subclass is also the class naming why,
    and ``status`` (its ``http_status``) is the code tlog-witness names."""

    @property
    def status(self) -> int:
        return self.http_status


class BadWitnessRequest(WitnessRefusal, MalformedError):
    """400: the request or its checkpoint does not parse, or contradicts itself."""


class UntrustedCheckpoint(WitnessRefusal, SignatureError):
    """403: no signature by a trusted log key verifies."""


class UnknownLog(WitnessRefusal, NotFoundError):
    """404: the witness is not configured for the checkpoint's origin."""


class InconsistentCheckpoint(WitnessRefusal, ForkError):
    """422: the consistency proof from the latest cosigned tree does not verify."""


class WitnessConflict(WitnessRefusal, ConflictError):
    """409: the witness cosigned a tree that this request does not start from.

    ``size`` is the size it last cosigned (answered as ``SIZE_CONTENT_TYPE``),
    or None when it did not say (a concurrent request moved it, or a remote
    witness's answer named none).
    """

    def __init__(self, message: str, size: int | None = None):
        super().__init__(message)
        self.size = size


class NothingNew(Exception):
    """Not an error: the remote has nothing newer than what we hold."""
