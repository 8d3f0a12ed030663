"""One error hierarchy for the whole package.

Errors are split by whose fault they are (python-tuf style):

* ``VerificationError`` -- the remote side sent data that failed verification.
  Each subclass has a ``kind`` naming *what* failed, so operators, metrics and
  tests can match on it: ``signature``, ``rollback``, ``fork``, ``digest``,
  ``malformed``, ``stale``.
* ``TransportError`` -- the data never arrived (connection refused, timeout,
  HTTP error status, oversize response).
* ``StorageError`` -- our own local store is unusable or was changed under us.
* ``InputError`` -- an operator's input (CSV/JSONL batch, CLI argument, key
  file) is invalid. Nothing is written when it is raised.
* ``InternalError`` -- a bug of ours caught by a check rather than an
  ``assert`` (which ``python -O`` strips), e.g. a step of checkpoint
  acceptance called out of order (``OrderError``). Nothing was written.
* ``UnavailableError`` -- fail closed: the mirror cannot stand behind an
  answer (no home, no followed feed, never synced, last sync failed
  verification, or older than its maximum age). Lookups raise it instead of
  answering "no match"; the CLI exits 5 and HTTP answers 503.

Invariant: a raised ``FederationError`` never leaves a mirror or a publisher
half-updated; callers may retry.
"""
from __future__ import annotations


class FederationError(Exception):
    """Base class for every error this package raises on purpose."""

    kind = "error"


class VerificationError(FederationError):
    """Remote data failed verification. ``kind`` names what failed."""

    kind = "verification"


class SignatureError(VerificationError):
    """No trusted key signed the note, or a trusted key's signature is bad."""

    kind = "signature"


class RollbackError(VerificationError):
    """The remote offers a tree smaller than one we already verified."""

    kind = "rollback"


class ForkError(VerificationError):
    """Two validly signed trees that cannot both be true (split view)."""

    kind = "fork"


class DigestError(VerificationError):
    """A seal's state digest or count disagrees with the mirror's own state."""

    kind = "digest"


class MalformedError(VerificationError):
    """Bytes that do not parse, or that do not hash to what was signed."""

    kind = "malformed"


class StaleError(VerificationError):
    """The newest trusted timestamp is older than the configured maximum."""

    kind = "stale"


class TransportError(FederationError):
    """The data could not be fetched (network, HTTP status, size limit)."""

    kind = "transport"


class StorageError(FederationError):
    """The local SQLite store is missing, corrupt, or was changed concurrently."""

    kind = "storage"


class InputError(FederationError):
    """Operator input is invalid; nothing was written."""

    kind = "input"


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

    def __init__(self, message: str, problems: tuple = ()):
        super().__init__(message)
        self.problems = tuple(problems)


class NothingNew(Exception):
    """Not an error: the remote has nothing newer than what we hold."""
