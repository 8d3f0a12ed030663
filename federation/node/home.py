"""Where a node keeps its files (``FEDERATION_HOME``, default ``~/.federation``).

Layout, every file of a home (no other module builds these paths):

* ``publisher.db`` -- feeds this node publishes (``store.publisher``), their
  snapshot index and trust chains; ``snapshots/<feed id>/`` its snapshot files;
* ``mirror.db`` -- feeds it follows (``store.mirror``);
  ``mirror-snapshots/<follow id>/`` the snapshot each bootstrapped from;
  ``mirror.db.pdq-index`` the PDQ near-match index a serving platform node
  saved (``platform.pdq_file``, mode 0600), rebuilt whenever it does not
  match the mirror;
* ``auth.db`` -- bearer tokens and the audit log (``store.tokens``);
* ``platform.db`` -- consumer cursors and webhooks (``store.platform``), mode
  0600: it holds webhook secrets;
* ``witness.db`` -- the state of a witness this node runs (``store.witness``);
* ``state/publisher/<feed>.served-checkpoint`` -- the newest checkpoint
  this node served for each published feed, outside ``publisher.db`` on
  purpose (``store.served``): never restore it from a backup;
  ``<feed>.witnessed-checkpoint`` beside it: a checkpoint sent to witnesses
  before it was served;
* ``private/<feed>.key`` -- log keys (dir 0700, files 0600); a feed created
  or rotated with a key file elsewhere has that path recorded with it in
  ``publisher.db`` (``feed_key``).

The home is outside any source tree by default, so keys never land in a
repository.

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
from federation.core.names import check_feed_name
from federation.platform.pdq_file import index_path
from federation.store.served import served_path, witnessed_path
from federation.store.snapshots import mirror_snapshot_dir, snapshot_dir


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

    @property
    def mirror_pdq_index(self) -> Path:
        """The PDQ index saved next to the mirror (``platform serve``)."""
        return index_path(self.mirror_db)

    @property
    def auth_db(self) -> Path:
        return self.root / "auth.db"

    @property
    def platform_db(self) -> Path:
        return self.root / "platform.db"

    @property
    def witness_db(self) -> Path:
        return self.root / "witness.db"

    def databases(self) -> dict[str, Path]:
        """Every database a home may hold, by role (what ``federation backup`` copies)."""
        return {"publisher": self.publisher_db, "mirror": self.mirror_db, "auth": self.auth_db,
                "platform": self.platform_db, "witness": self.witness_db}

    def served_checkpoint(self, feed: str) -> Path:
        """``state/publisher/<feed>.served-checkpoint``: the newest checkpoint
        this node signed for a published feed, kept outside ``publisher.db``
        so a restored older copy cannot fork the log (``store.served``)."""
        return served_path(self.publisher_db, feed)

    def witnessed_checkpoint(self, feed: str) -> Path:
        """``state/publisher/<feed>.witnessed-checkpoint``: a checkpoint of a
        published feed sent to witnesses but not served (``store.served``)."""
        return witnessed_path(self.publisher_db, feed)

    @property
    def snapshots_dir(self) -> Path:
        """Snapshot files of published feeds (next to the publisher database)."""
        return snapshot_dir(self.publisher_db)

    @property
    def mirror_snapshots_dir(self) -> Path:
        """Snapshots followed feeds bootstrapped from (next to the mirror database)."""
        return mirror_snapshot_dir(self.mirror_db)

    @property
    def private_dir(self) -> Path:
        return self.root / "private"

    def feed_key(self, feed: str, recorded: str | None = None) -> Path:
        """The key file feed ``feed`` is signed with: the one recorded with
        the feed (``feed create --key``, ``feed rotate-key --new-key``:
        ``Feed.key_file``), else ``private/<feed>.key``."""
        return Path(recorded) if recorded else self.key_path(feed)

    def key_record(self, feed: str, path: Path) -> str | None:
        """What to record as feed ``feed``'s key file for a key at ``path``:
        None for ``private/<feed>.key`` (so the home can move), else the
        absolute path."""
        resolved = Path(path).resolve()
        return None if resolved == self.key_path(feed).resolve() else str(resolved)

    def key_path(self, feed: str) -> Path:
        """``private/<feed>.key``; ``InputError`` for anything but a feed name
        (no separator or ``..`` can reach the path)."""
        return self.private_dir / f"{check_feed_name(feed)}.key"
