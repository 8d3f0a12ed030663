"""Canonical standard base64 (RFC 4648 section 4), as signed notes need it.

Python's ``base64.b64decode(validate=True)`` still accepts extra ``=`` after a
complete group and non-zero padding bits, so one key or signature could be
written as several strings; Go's ``encoding/base64`` (used by
``sumdb/note``) rejects the extra padding. We accept exactly the string that
``b64encode`` would produce.
"""
from __future__ import annotations

import base64
import binascii

from federation.core.errors import MalformedError


def b64decode_canonical(text: str | bytes) -> bytes:
    """Decode ``text``, or raise ``MalformedError`` unless it is canonical base64
    (callers name what it was, and may re-raise as another of our errors)."""
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError as e:
            raise MalformedError("base64 must be ASCII") from e
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise MalformedError(f"invalid base64: {e}") from e
    if base64.b64encode(raw) != text:
        raise MalformedError("non-canonical base64 (extra padding or padding bits)")
    return raw
