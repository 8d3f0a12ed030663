"""Shared parts of the property-based tests (Hypothesis): settings, the
"only our errors" check, and a mutator of valid seeds.

Profiles: by default every fuzz test runs a fixed, derandomized set of
examples (CI stays fast and reproducible). ``FEDERATION_FUZZ=deep`` runs
many more random examples, for hunting locally::

    FEDERATION_FUZZ=deep .venv/bin/pytest -q tests/hostile/test_fuzz_decoders.py tests/hostile/test_fuzz_routes.py
"""
from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from federation.core.errors import FederationError

DEEP = os.environ.get("FEDERATION_FUZZ") == "deep"
KINDS = {"signature", "rollback", "fork", "digest", "malformed", "stale", "transport", "storage", "input",
         "unavailable"}


def fuzz_settings(examples: int) -> settings:
    """``examples`` per test in CI (derandomized), 25x that and random when deep."""
    return settings(max_examples=examples * 25 if DEEP else examples, deadline=None, derandomize=not DEEP,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


def outcome(fn, *args, **kw):
    """Run a decoder: it returns (a verified object) or raises one of our
    errors with a known kind and a message. Anything else propagates and
    fails the property."""
    try:
        return fn(*args, **kw)
    except FederationError as e:
        assert e.kind in KINDS, f"{type(e).__name__} has kind {e.kind!r}"
        assert str(e), f"{type(e).__name__} without a message"
        return e


# Byte strings that have broken parsers before: huge numbers, deep nesting,
# byte order marks, NaN/inf, newlines where a full match is needed.
NASTY = [b"9" * 5000, b"99999999999999999999", b"1e400", b"-1e400", b"NaN", b"Infinity", b"inf", b"nan",
         b"[" * 3000, b"{" * 3000, b"{a=" * 1500, b"a." * 3000, b"\n", b"\r\n", b"\x00", b"\xef\xbb\xbf",
         b"\xff\xfe", b"\xc3\x28", b'"', b"'''", b'"""', b"\\", b"0x" + b"f" * 600, b"-0", b"x001/" * 1500,
         b"\xe2\x80\x94 ", b"\xc2\xb2", b"\xd9\xa1\xd9\xa2", b"\x1c", b" ", b"+", b"=", b"/", b"..", b"%00"]


NUMBERS = [b"9" * 5000, b"99999999999999999999", b"9223372036854775808", b"1e400", b"-1e400", b"NaN", b"nan",
           b"inf", b"-1", b"1.5", b"0x" + b"f" * 600, b"0x8000000000000000", b"1_000", b"true", b'"7"', b"\xc2\xb2"]
STRUCTURES = [b"[" * 3000, b"{" * 3000, b'{"a":' * 3000, b"{a=" * 1500, b"[[" * 40 + b"]]" * 40,
              b"[" * 40 + b"]" * 40, b'"a\\n"', b'"\\ud800"']
_DIGITS = re.compile(rb"[0-9]+")
_VALUE_AT = re.compile(rb"[:=,\[] ?")


@st.composite
def mutated(draw, seeds: list[bytes], max_ops: int = 6) -> bytes:
    """A seed with a few random edits: bit flips, byte sets, insertions of
    random or nasty bytes, deletions, duplications and splices -- and, aimed
    at text formats, a number replaced by a nasty one or a nasty structure
    put where a value starts (after ``:``, ``=``, ``,`` or ``[``)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_ops))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "set", "insert", "nasty", "delete", "dup", "truncate", "number",
                                   "value"]))
        if op == "number":
            runs = list(_DIGITS.finditer(data))
            if runs:
                m = draw(st.sampled_from(runs))
                data[m.start():m.end()] = draw(st.sampled_from(NUMBERS))
            continue
        if op == "value":
            spots = [m.end() for m in _VALUE_AT.finditer(data)]
            if spots:
                at = draw(st.sampled_from(spots))
                data[at:at] = draw(st.sampled_from(STRUCTURES + NUMBERS))
            continue
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(data):
            data[pos] = draw(st.sampled_from([0, 0x0A, 0x20, 0x2B, 0x30, 0x39, 0x5B, 0x7F, 0x80, 0xC0, 0xFF]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "nasty":
            data[pos:pos] = draw(st.sampled_from(NASTY))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 32))]
        elif op == "dup" and data:
            start = draw(st.integers(0, len(data) - 1))
            chunk = data[start:start + draw(st.integers(1, 64))]
            data[pos:pos] = chunk * draw(st.integers(1, 50))
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def as_text(data: bytes) -> str:
    """Bytes as the text a str decoder may see (every byte maps to a character)."""
    return data.decode("latin-1")
