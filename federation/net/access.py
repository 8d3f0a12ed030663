"""Who may read a feed: its stored access, and how a node config may narrow it.

Access is a property of the feed, stored with it (``feeds.access`` in
publisher.db, set by ``federation feed create --access`` and ``feed
set-access``): ``public`` (anyone) or ``members`` (a member token scoped to
the feed, see ``auth``). The default is ``members``: a clearinghouse's lists
are shared with vetted members under agreement, so forgetting the flag must
not publish one to the world.

Invariant: nothing leaves the node more openly than the feed's stored access.

* Plain ``federation serve``: the stored access, read on every request
  (``StoredAccess``), so ``feed set-access NAME members`` takes effect at once.
* ``serve --config``: a ``[[publish]]`` ``access`` may narrow a feed (members
  for one stored public) but never widen it. ``public`` for a feed stored as
  members is refused at start (``combine``): the two statements disagree and
  either guess is wrong -- the stricter silently locks out the readers the
  config promises, the looser leaks. Omitted, it is the stored access. While
  running, the stricter of the two holds (the stored one is read live).
* A followed feed (a relay, ``export --mirror``) has no stored access here; the
  node config's ``[[follow]] access`` declares it, and a feed fetched with a
  member token (``token_env``) is members-only upstream, so it is members here
  (``node.parse_config`` refuses ``public`` with ``token_env``).
* Anything unknown is members.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from federation.store.db import connect
from federation.core.errors import InputError
from federation.store.publisher import ACCESS_LEVELS, stored_access

__all__ = ["ACCESS_LEVELS", "StoredAccess", "combine", "stricter"]


def stricter(a: str, b: str) -> str:
    return "public" if a == b == "public" else "members"


def combine(declared: dict[str, str | None], stored: dict[str, str]) -> dict[str, str]:
    """The access of each feed a node config serves (pure).

    ``declared``: feed -> the config's ``access`` (None: omitted);
    ``stored``: published feed -> its stored access (followed feeds have none,
    and the config alone decides for them). Raises ``InputError`` when the
    config would open a feed stored as members.
    """
    out = {}
    for name, want in declared.items():
        have = stored.get(name)
        if want is not None and want not in ACCESS_LEVELS:
            raise InputError(f"feed {name}: access must be one of {ACCESS_LEVELS}, got {want!r}")
        if want == "public" and have == "members":
            raise InputError(f"[[publish]] {name}: the config says access = \"public\", but the feed is stored as "
                             f"members-only; refusing to publish it in the clear. Either remove 'access' from the "
                             f"config (or set it to \"members\"), or open the feed with "
                             f"'federation feed set-access {name} public'")
        if want is None:
            out[name] = have or "members"
        else:
            out[name] = want if have is None else stricter(want, have)
    return out


class StoredAccess:
    """The stored access of the published feeds ``names`` (all when None),
    read per call through its own read-only connection.

    Returns None for a name outside ``names`` (not a published feed of this
    node: the caller's config decides) and ``members`` for a published name
    the database does not hold.
    """

    def __init__(self, db: Path | str, names: list[str] | None = None):
        self.db = Path(db)
        self.only = None if names is None else set(names)
        self.conn: sqlite3.Connection | None = None

    def __call__(self, name: str) -> str | None:
        if self.only is not None and name not in self.only:
            return None
        if self.conn is None:
            self.conn = connect(self.db, readonly=True)
        return stored_access(self.conn, name) or "members"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
