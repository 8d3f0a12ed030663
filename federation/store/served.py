"""The newest checkpoint a publisher has signed for each feed, kept OUTSIDE its database.

A publisher database restored from an older backup (or rebuilt by hand)
no longer knows what mirrors already hold; signing from it would publish a
second tree for sizes mirrors verified, a fork every mirror refuses. So
after each signed head is committed, the publisher also records that
checkpoint note in a small file next to (not in) the database:
``state/<database stem>/<feed>.served-checkpoint`` (``served_path``; a
node's is ``HOME/state/publisher/NAME.served-checkpoint``, named through
``node.home``). ``federation backup`` does not copy these files, and the
disaster-recovery runbook (docs/node.md) says never to restore them.

Invariants: a record only ever moves forward (a larger tree size, or the
same size re-signed); it is written atomically (temporary file, fsync,
rename, fsync of the directory), so a crash leaves the old record or the
new one. It is written AFTER the database commit: a crash in between
leaves a record one version behind, which the publisher's check
(``check_extends_served``) accepts because its tree extends it.

Only checkpoints that left the node are recorded, since only they can be
forked: a version held back while it awaits cosignatures
(``Publisher.publish`` with cosigning configured) is recorded when it is
promoted (served), not at its commit -- if the disk dies first, nobody saw
it, and a recovery need not (cannot) bring it back. A pending checkpoint
that a witness received is recorded apart, in ``<feed>.witnessed-checkpoint``
(``witnessed_path``, written by ``trust.cosign`` after the round): a
witness keeps the newest checkpoint it cosigned and would hold a different
tree of that size, signed by the same key, as proof of a fork. Signing
refuses a tree that does not extend either record; ``feed recover`` needs
a copy reaching only the SERVED one, and abandons the witnessed one only
when the operator says so (``forget_witnessed``, ``--abandon-witnessed``).

The record is our own file, not network input, but it is still parsed
strictly and bounded: a damaged record is a ``StorageError`` (fail closed:
the publisher refuses to sign until an operator looks), never a traceback.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import tempfile
from pathlib import Path

from federation.core.checkpoint import Checkpoint, parse_checkpoint_body
from federation.core.errors import FederationError, ForkError, StorageError, UnavailableError
from federation.core.layout import tile_width
from federation.core.merkle import CompactRange
from federation.core.names import check_feed_name
from federation.core.note import parse_note
from federation.core.tiles import TileHashes, needed_tiles, parse_hash_tile
from federation.store.tilestore import TileStore

MAX_RECORD_BYTES = 64 * 1024  # a checkpoint note with its cosignatures is a few hundred bytes
SUFFIX = ".served-checkpoint"
WITNESSED_SUFFIX = ".witnessed-checkpoint"


def served_dir(db_path: Path | str) -> Path:
    """Where the records of the publisher database at ``db_path`` live:
    ``<its directory>/state/<its file name without suffix>/``, so two
    databases side by side (tests, or a node and its old copy) never share one."""
    p = Path(db_path)
    return p.parent / "state" / p.stem


def served_path(db_path: Path | str, feed: str) -> Path:
    return served_dir(db_path) / f"{check_feed_name(feed)}{SUFFIX}"


def witnessed_path(db_path: Path | str, feed: str) -> Path:
    """The newest checkpoint of ``feed`` sent to (and seen by) a witness
    before it was served."""
    return served_dir(db_path) / f"{check_feed_name(feed)}{WITNESSED_SUFFIX}"


def _path(db_path: Path | str, feed: str, witnessed: bool) -> Path:
    return witnessed_path(db_path, feed) if witnessed else served_path(db_path, feed)


class ServedRecord:
    """The record of one feed: the note and its parsed checkpoint (unverified:
    we wrote it; its signature was made by this node)."""

    def __init__(self, note: bytes, checkpoint: Checkpoint):
        self.note = note
        self.checkpoint = checkpoint


def read_served(db_path: Path | str, feed: str, witnessed: bool = False) -> ServedRecord | None:
    """The newest checkpoint recorded as served for ``feed`` (``witnessed``:
    as seen by a witness), or None when none was recorded yet (a new feed,
    or a node older than this record)."""
    path = _path(db_path, feed, witnessed)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e}") from None
    if len(data) > MAX_RECORD_BYTES:
        raise StorageError(f"{path} is over {MAX_RECORD_BYTES} bytes: not a checkpoint record; "
                           "inspect it before signing anything for this feed")
    try:
        cp = parse_checkpoint_body(parse_note(data).text)
    except FederationError as e:
        raise StorageError(f"{path} is damaged ({e}); inspect it before signing anything for this feed "
                           "(docs/node.md, Disaster recovery)") from None
    return ServedRecord(data, cp)


def record_served(db_path: Path | str, feed: str, note: bytes, replace: bool = False,
                  witnessed: bool = False) -> bool:
    """Record ``note`` (a checkpoint this node just committed) as feed
    ``feed``'s newest, unless the record already names a tree at least as
    large (records never move back). ``replace``: a new feed of
    another origin took the name (``create_feed`` refuses one of the same
    origin), so the old record is of another log. ``witnessed``: the record
    of what witnesses saw (``witnessed_path``). Returns whether it wrote.
    ``StorageError`` when the file cannot be written."""
    cp = parse_checkpoint_body(parse_note(note).text)
    path = _path(db_path, feed, witnessed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Two publishers of one database (the API and the CLI) each commit, then
        # record: the lock keeps the later-read, smaller record from overwriting
        # the larger one between our read and our rename.
        lock = os.open(path.parent / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise StorageError(f"cannot record the served checkpoint of feed {feed!r} in {path}: {e}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = read_served(db_path, feed, witnessed) if not replace else None
        if old is not None and old.checkpoint.size >= cp.size:
            return False  # the same tree re-signed (a refresh, a rotation) needs no new record
        _write_atomic(path, note, feed)
    finally:
        os.close(lock)  # releases the lock
    return True


def forget_witnessed(db_path: Path | str, feed: str) -> ServedRecord | None:
    """Remove the witnessed record of ``feed`` (the operator abandons a
    version no copy holds: ``feed recover --abandon-witnessed``); returns
    what it held."""
    record = read_served(db_path, feed, witnessed=True)
    if record is not None:
        path = witnessed_path(db_path, feed)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"cannot remove {path}: {e}") from None
    return record


def _write_atomic(path: Path, note: bytes, feed: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(note)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives power loss
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise StorageError(f"cannot record the served checkpoint of feed {feed!r} in {path}: {e}"
                           f"{'; check the free space of that disk' if e.errno == errno.ENOSPC else ''}") from None


def check_extends_served(conn: sqlite3.Connection, db_path: Path | str, name: str, feed_id: int, origin: str,
                         size: int, compact: CompactRange) -> None:
    """Refuse to sign for feed ``name`` unless its tree (``size``, ``compact``
    and the tiles on ``conn``) extends the newest checkpoint recorded as
    served (``read_served``): the same size and root, or a larger tree whose
    first ``record.size`` leaves hash to the recorded root.

    * The database holds less than was served (a restored backup):
      ``UnavailableError`` -- the node cannot stand behind anything it would
      sign until the missing entries are recovered; nothing is wrong with
      anyone's data, so it is not a verification failure (exit 5, fail
      closed), and the message gives both sizes and the way out.
    * The database holds a different tree for a served size: ``ForkError``
      -- signing would fork the log that mirrors verified (exit 1).
    * The database does not extend the checkpoint witnesses were sent
      (``witnessed_path``; never served): ``UnavailableError`` naming
      ``feed recover --abandon-witnessed``.
    """
    record = read_served(db_path, name)
    if record is not None and record.checkpoint.size > 0:
        _check_served_record(conn, db_path, name, feed_id, origin, size, compact, record.checkpoint)
    seen = read_served(db_path, name, witnessed=True)
    if seen is not None and seen.checkpoint.size > 0 and seen.checkpoint.origin == origin:
        _check_witnessed_record(conn, db_path, name, feed_id, size, compact, seen.checkpoint)


def _check_served_record(conn, db_path, name, feed_id, origin, size, compact, served: Checkpoint) -> None:
    where = served_path(db_path, name)
    if served.origin != origin:
        raise UnavailableError(
            f"feed {name!r}: {where} records a checkpoint of origin {served.origin!r}, the database's feed is "
            f"{origin!r}; refusing to sign until an operator checks which log this feed is (docs/node.md, "
            f"Disaster recovery; 'federation feed recover {name} --from URL' replaces that record)")
    if size < served.size:
        raise UnavailableError(
            f"feed {name!r}: the publisher database holds the log up to size {size}, but this node has served "
            f"a checkpoint of size {served.size} ({where}); entries {size}..{served.size} are missing (a restored "
            f"older backup?). Signing now would fork the log mirrors hold. Recover them from any copy of the "
            f"served log: federation feed recover {name} --from URL")
    root = compact.root() if size == served.size else _root_at(conn, feed_id, size, served.size)
    if root != served.root:
        raise ForkError(
            f"feed {name!r}: the publisher database's tree of size {served.size} differs from the checkpoint this "
            f"node served at that size ({where}); signing would fork the log. Move this database aside, restore a "
            f"backup the served log extends (or none), then: federation feed recover {name} --from URL")


def _check_witnessed_record(conn, db_path, name, feed_id, size, compact, seen: Checkpoint) -> None:
    """A checkpoint only witnesses saw (never served): a database that does
    not extend it is refused too -- the witnesses hold it signed, and a
    different tree would be a fork in their eyes -- but unlike a served one
    it can be given up on purpose: no mirror holds it."""
    if size >= seen.size:
        root = compact.root() if size == seen.size else _root_at(conn, feed_id, size, seen.size)
        if root == seen.root:
            return
    where = witnessed_path(db_path, name)
    raise UnavailableError(
        f"feed {name!r}: the publisher database does not hold the checkpoint of size {seen.size} this node sent "
        f"to witnesses for cosigning ({where}); it was never served, but the witnesses hold it signed, so a "
        f"different tree would be a fork to them. Recover it from a copy that holds it (federation feed recover "
        f"{name} --from URL), or, if none does, give it up explicitly: federation feed recover {name} --from URL "
        "--abandon-witnessed (docs/node.md, Disaster recovery)")


def _root_at(conn: sqlite3.Connection, feed_id: int, size: int, at: int) -> bytes | None:
    """Root of the first ``at`` leaves of the stored tree of ``size`` leaves,
    from its hash tiles (tlog-tiles: a tile of a larger tree begins with the
    same hashes as the smaller tree's tile, so the current tiles serve);
    None when a tile is missing (then it is not the served tree either)."""
    tiles = {}
    store = TileStore(conn, feed_id)
    for level, index, _ in needed_tiles(at, lambda th: th.mth(0, at)):
        width = tile_width(level, index, size)
        data = store.get(level, index, width)
        if data is None:
            return None
        tiles[(level, index)] = parse_hash_tile(data, width, f"stored tile {level}/{index}")
    return TileHashes(at, tiles).mth(0, at)
