"""Feed names: one rule for every place a name is used. Pure.

A feed name becomes a URL path segment (``/feeds/NAME/``), a key file name
(``HOME/private/NAME.key``), an export directory and a database key, so it is
checked where it enters the domain -- ``Publisher.create_feed``,
``Mirror.follow``, ``Home.key_path``, node configs, tokens -- not only at the
CLI: ``[A-Za-z0-9._-]{1,64}`` as a full match, and not ``.`` or ``..``
(which that pattern allows but a path resolves). No separator, space,
control character or traversal can reach a path.

The names of a platform node's consumers and webhooks (``check_name``) use
the same characters; they are database keys and URL segments, never paths.
"""
from __future__ import annotations

import re

from federation.core.errors import InputError

FEED_NAME_PATTERN = "[A-Za-z0-9._-]{1,64}"
_FEED_NAME_RE = re.compile(FEED_NAME_PATTERN)


def is_feed_name(name: object) -> bool:
    return isinstance(name, str) and bool(_FEED_NAME_RE.fullmatch(name)) and name not in (".", "..")


def check_feed_name(name: object) -> str:
    """``name`` if it is a valid feed name; else ``InputError`` saying why."""
    if not is_feed_name(name):
        raise InputError(f"feed name {str(name)[:80]!r} must be 1-64 characters of A-Z a-z 0-9 . _ - "
                         "(and not '.' or '..')")
    return name


def check_name(name: object, what: str) -> str:
    """``name`` if it is a valid ``what`` name (a consumer, a webhook): the
    characters and length of a feed name; else ``InputError``."""
    if not isinstance(name, str) or not _FEED_NAME_RE.fullmatch(name):
        raise InputError(f"{what} name {name!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return name
