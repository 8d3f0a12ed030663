"""Bounded parsing of untrusted text: JSON, TOML and decimal integers. Pure.

Python's own parsers are not safe on hostile bytes, each in its own way:

* ``json.loads`` recurses per nesting level (``[[[[...`` -> ``RecursionError``),
  turns ``1e400`` into ``inf`` and accepts ``NaN``, and a 5000-digit number
  raises ``ValueError`` (CPython's 4300-digit limit on ``int()``);
* ``tomllib`` recurses the same way on nested arrays and inline tables,
  builds arbitrarily deep tables from dotted keys (``a.a.a...``, whose
  ``repr`` then recurses), accepts ``inf``/``nan`` and hex integers of any
  length;
* an integer that parsed still overflows SQLite (``OverflowError`` past
  ``2**63 - 1``) or ``float()`` far from where it was read.

So every text from a network or an operator goes through this module, which
checks the size first, then the nesting depth with a linear, string-aware
scan *before* the recursive parser runs, and then every number: integers
must fit a signed 64-bit SQLite INTEGER and floats must be finite.

Invariant: each function returns a value whose nesting depth is at most
``max_depth``, whose integers lie in ``[-2**63, 2**63 - 1]`` and whose floats
are finite -- or raises the ``error`` class the caller chose
(``MalformedError`` for remote bytes, ``InputError`` for operator input),
never a foreign exception.
"""
from __future__ import annotations

import json
import math
import re
import tomllib
from typing import Any

from federation.core.errors import FederationError, InputError, MalformedError

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
MAX_DEPTH = 32  # our documents nest 3 levels deep; the recursion limit is ~1000
MAX_NUMBER_CHARS = 40  # a float literal such as -1.2345678901234567e-308 is 24
_INT64_DIGITS = 19

# Tokens that matter for nesting: strings (whose brackets do not count) and
# brackets. A quote that does not start a complete string is matched alone:
# the text is then invalid, and we stop before the recursive parser sees it.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|"|[\[\]{}]', re.S)
# TOML: dotted keys, the four string forms (multi-line first), comments, and
# brackets. Each string form ends where TOML's own ends (a multi-line string
# at the last quote of its closing run, which may hold up to two quotes of
# content), so a structural bracket can never hide in what the scan takes for
# a string.
#
# A dotted key (``a.b.c = 1``, ``[a.b]``, ``"x".'y'``) nests a table per dot,
# and tomllib builds every prefix of it (quadratic: a 32 KiB ``a.a.a...``
# costs ~1 GiB), so its parts are counted here, before tomllib runs. Matched
# first (its parts may be quoted), possessively, and never from the middle of
# a bare run (the lookbehind): the scan stays linear. A float or a time's
# fraction (``1.5``, ``00:00:00.5``) matches too, as two parts: harmless.
_TOML_KEY_PART = r'(?:[A-Za-z0-9_-]++|"(?:[^"\\\n]|\\.)*+"|\'[^\'\n]*+\')'
_TOML_PARTS = re.compile(_TOML_KEY_PART)
_TOML_TOKENS = re.compile(
    r'(?P<key>(?<![A-Za-z0-9_-])%s(?:[ \t]*+\.[ \t]*+%s)++)' % (_TOML_KEY_PART, _TOML_KEY_PART)
    + r'|"""(?:[^\\]|\\.)*?"""(?!")|\'\'\'.*?\'\'\'(?!\')|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|"|\'|[\[\]{}]'
    r'|[0-9][0-9A-Za-z_]{%d,}' % MAX_NUMBER_CHARS,  # a number literal (or a bare key) too long to be ours
    re.S)


def _error(error: type[FederationError], what: str, problem: str) -> FederationError:
    return error(f"{what}: {problem}")


def _check_depth(text: str, tokens: re.Pattern, max_depth: int, what: str,
                 error: type[FederationError]) -> None:
    depth = 0
    for m in tokens.finditer(text):
        c = m.group()
        if m.lastgroup == "key":  # a dotted key: one table per part (TOML only)
            if len(_TOML_PARTS.findall(c)) > max_depth:
                raise _error(error, what, f"nested more than {max_depth} levels deep (a dotted key at "
                                          f"character {m.start()})")
        elif c in "[{":
            depth += 1
            if depth > max_depth:
                raise _error(error, what, f"nested more than {max_depth} levels deep")
        elif c in "]}":
            depth -= 1
        elif c in "\"'":
            raise _error(error, what, f"unterminated string at character {m.start()}")
        elif c[0].isdigit() and len(c) >= MAX_NUMBER_CHARS:
            raise _error(error, what, f"number {c[:20]}... is longer than {MAX_NUMBER_CHARS} characters")


def _text(data: bytes | str, what: str, max_bytes: int, error: type[FederationError]) -> str:
    if len(data) > max_bytes:
        raise _error(error, what, f"{len(data)} bytes, over the {max_bytes}-byte limit")
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _error(error, what, f"not UTF-8 (byte {e.start})") from None


def check_int(value: Any, what: str, low: int = INT64_MIN, high: int = INT64_MAX,
              error: type[FederationError] = InputError) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) in ``low..high``; else ``error``."""
    if type(value) is not int or not low <= value <= high:
        shown = repr(value) if type(value) is not int or value.bit_length() < 256 else "a huge integer"
        raise _error(error, what, f"{shown[:60]} is not an integer in {low}..{high}")
    return value


def parse_uint(text: str, what: str, high: int = INT64_MAX, error: type[FederationError] = InputError) -> int:
    """An ASCII decimal integer in ``0..high`` (at most 19 digits, so
    ``int()`` never sees a long string); else ``error``."""
    if not isinstance(text, str) or not (0 < len(text) <= _INT64_DIGITS) or not text.isascii() \
            or not text.isdigit():
        raise _error(error, what, f"{text[:30]!r} is not a decimal integer in 0..{high}")
    return check_int(int(text), what, 0, high, error)


# ---- JSON ------------------------------------------------------------------------

def json_loads(data: bytes | str, what: str, *, max_bytes: int, error: type[FederationError] = MalformedError,
               max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` within bounds: size, depth, integer range, finite floats.

    Bytes must be UTF-8 (RFC 8259); a leading byte order mark is ignored.
    """
    text = _text(data, what, max_bytes, error)
    if text.startswith("\ufeff"):
        text = text[1:]
    _check_depth(text, _JSON_TOKENS, max_depth, what, error)

    def parse_int(s: str) -> int:
        if len(s.lstrip("-")) > _INT64_DIGITS:
            raise _error(error, what, f"number {s[:24]}... has more than {_INT64_DIGITS} digits")
        return check_int(int(s), what, error=error)

    def parse_float(s: str) -> float:
        if len(s) > MAX_NUMBER_CHARS:
            raise _error(error, what, f"number {s[:24]}... is longer than {MAX_NUMBER_CHARS} characters")
        f = float(s)
        if not math.isfinite(f):
            raise _error(error, what, f"number {s} is out of range")
        return f

    def parse_constant(s: str):
        raise _error(error, what, f"{s} is not a JSON number")

    try:
        return json.loads(text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)
    except json.JSONDecodeError as e:
        raise _error(error, what, f"{e.msg} (line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # backstop: the scan above should make these impossible
        raise _error(error, what, f"does not parse ({type(e).__name__})") from None


# ---- TOML ------------------------------------------------------------------------

def _check_values(doc: Any, what: str, max_depth: int, error: type[FederationError]) -> None:
    """Iteratively (no recursion on hostile data): depth, integers, floats."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            if type(value) is int:
                check_int(value, what, error=error)
            elif type(value) is float and not math.isfinite(value):
                raise _error(error, what, f"{value} is not a finite number")
            continue
        if depth > max_depth:
            raise _error(error, what, f"nested more than {max_depth} levels deep")
        stack.extend((child, depth + 1) for child in children)


def toml_loads(data: bytes | str, what: str, *, max_bytes: int, error: type[FederationError] = MalformedError,
               max_depth: int = MAX_DEPTH) -> dict:
    """``tomllib.loads`` within bounds: size, depth (brackets and dotted
    keys), integer range, finite floats."""
    text = _text(data, what, max_bytes, error)
    _check_depth(text, _TOML_TOKENS, max_depth, what, error)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _error(error, what, f"not valid TOML: {e}") from None
    except (ValueError, RecursionError, OverflowError) as e:  # backstop, as for JSON
        raise _error(error, what, f"not valid TOML: {type(e).__name__}") from None
    _check_values(doc, what, max_depth, error)
    return doc
