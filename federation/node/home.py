"""Where a node keeps its files (``FEDERATION_HOME``, default ``~/.federation``).

Layout: ``publisher.db`` (feeds this node publishes), ``mirror.db`` (feeds it
follows), ``private/<feed>.key`` (log keys, dir 0700, files 0600). The home is
outside any source tree by default, so keys never land in a repository.

Resolving a home creates nothing: commands that write create it (mode 0700)
when they first store something there (``db.Store``, ``keys``); read-only
commands ``require`` it and fail closed (``UnavailableError``) on a typo'd
path instead of answering from an empty mirror they just made.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from federation.core.errors import UnavailableError


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, value: str | None) -> "Home":
        root = Path(value or os.environ.get("FEDERATION_HOME") or Path.home() / ".federation").expanduser()
        return cls(root)

    def require(self) -> "Home":
        """This home, which must exist (read-only commands); ``UnavailableError`` if not."""
        if not self.root.is_dir():
            raise UnavailableError(f"no node home at {self.root}: nothing to answer from "
                                   "(check --home / FEDERATION_HOME)")
        return self

    def ensure(self) -> "Home":
        """Create the home directory (mode 0700) if it does not exist yet."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    @property
    def publisher_db(self) -> Path:
        return self.root / "publisher.db"

    @property
    def mirror_db(self) -> Path:
        return self.root / "mirror.db"

    def key_path(self, feed: str) -> Path:
        """``private/<feed>.key``; ``InputError`` for anything but a feed name
        (no separator or ``..`` can reach the path)."""
        from federation.core.names import check_feed_name
        return self.root / "private" / f"{check_feed_name(feed)}.key"
