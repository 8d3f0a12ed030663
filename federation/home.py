"""Where a node keeps its files (``FEDERATION_HOME``, default ``~/.federation``).

Layout: ``publisher.db`` (feeds this node publishes), ``mirror.db`` (feeds it
follows), ``private/<feed>.key`` (log keys, dir 0700, files 0600). The home is
outside any source tree by default, so keys never land in a repository.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, value: str | None) -> "Home":
        root = Path(value or os.environ.get("FEDERATION_HOME") or Path.home() / ".federation").expanduser()
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @property
    def publisher_db(self) -> Path:
        return self.root / "publisher.db"

    @property
    def mirror_db(self) -> Path:
        return self.root / "mirror.db"

    def key_path(self, feed: str) -> Path:
        """``private/<feed>.key``; ``InputError`` for anything but a feed name
        (no separator or ``..`` can reach the path)."""
        from .names import check_feed_name
        return self.root / "private" / f"{check_feed_name(feed)}.key"
