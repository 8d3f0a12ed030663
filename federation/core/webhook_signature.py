"""Standard Webhooks signatures (https://www.standardwebhooks.com/): secrets, signing, verifying.

A delivery carries three headers:

* ``webhook-id``: the message id, the same on every retry of a batch (it is
  also the idempotency key: ``NAME:FIRST-LAST``);
* ``webhook-timestamp``: unix seconds of this attempt;
* ``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256 keyed with the
  secret's bytes over ``id.timestamp.body``.

A secret is ``whsec_`` + standard base64 of 24..64 random bytes (the
specification's range). Signing and verifying are the ``standardwebhooks``
library's own, so a receiver built with it verifies us by construction (and
a test does exactly that). This module is pure: bytes in, a header value or
one of our errors out; the library's own exceptions (``RuntimeError`` for a
bad secret, ``ValueError`` for a signature without a comma,
``binascii.Error``) never leave it.

Secrets from before Standard Webhooks were 64 hex digits whose *bytes* keyed
the HMAC. ``parse_secret`` still reads that form and returns the same key
bytes as a ``whsec_`` secret, so migrating a stored secret keeps its key and
only the receiver's way of writing it changes.
"""
from __future__ import annotations

import base64
import binascii
import re
import secrets
from datetime import datetime, timezone

import standardwebhooks

from federation.core.errors import InputError

PREFIX = "whsec_"
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
NEW_KEY_BYTES = 32
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
TOLERANCE = 300  # seconds of clock skew a receiver accepts (the library's and the specification's 5 minutes)
MAX_SECRET_CHARS = len(PREFIX) + 4 * ((MAX_KEY_BYTES + 2) // 3)
_LEGACY_HEX = re.compile(r"[0-9a-fA-F]{48,128}")


def new_secret() -> str:
    """A fresh ``whsec_`` secret of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(NEW_KEY_BYTES)).decode()


def parse_secret(text: str) -> str:
    """``text`` as a canonical ``whsec_`` secret, or ``InputError``.

    Accepts ``whsec_<base64>`` (24..64 bytes) and, for secrets made before
    Standard Webhooks, an even number of hex digits (same key bytes)."""
    if not isinstance(text, str) or len(text) > MAX_SECRET_CHARS + 64:  # bound before decoding
        raise InputError(f"webhook secret must be {PREFIX}<base64> of {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes")
    text = text.strip()
    if text.startswith(PREFIX):
        try:
            key = base64.b64decode(text[len(PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"webhook secret after {PREFIX!r} is not standard base64") from None
    elif _LEGACY_HEX.fullmatch(text) and len(text) % 2 == 0:
        key = bytes.fromhex(text)
    else:
        raise InputError(f"webhook secret must be {PREFIX}<base64> of {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes"
                         " (or the hex secret of an older node)")
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise InputError(f"webhook secret has {len(key)} bytes; Standard Webhooks wants"
                         f" {MIN_KEY_BYTES}..{MAX_KEY_BYTES}")
    return PREFIX + base64.b64encode(key).decode()


def sign_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt.

    ``body`` is our own JSON (``json.dumps`` escapes non-ASCII), so its text
    and its bytes sign the same."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise InputError("a webhook body must be ASCII JSON") from None
    when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    signature = standardwebhooks.Webhook(parse_secret(secret)).sign(msg_id, when, text)
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature}


def verify(secret: str, headers, body: bytes) -> bool:
    """What a receiver runs: the library's check (constant-time compare,
    timestamps at most 5 minutes off either way). False on any bad header."""
    try:
        standardwebhooks.Webhook(parse_secret(secret)).verify(body, dict(headers), json_parse=False)
    except (standardwebhooks.WebhookVerificationError, ValueError, UnicodeDecodeError, binascii.Error,
            OverflowError, OSError):
        return False
    return True
