"""Static export: a feed's read side as plain files, for any web server or store.

``export_feed`` writes, under ``DIR``, what the server serves under
``/feeds/NAME/``: ``checkpoint``, ``tile/...``, ``snapshot/index``,
``snapshot/<sha256>`` and ``snapshot/<sha256>.msgpack``, ``trust/<N>`` and
``trust/latest``. Any static host
serving ``DIR`` at some URL prefix is then a tlog-tiles upstream that
mirrors verify like any other (they trust the publisher's key, never the
host), and, for a pruned feed, one a fresh mirror can bootstrap from.

Access (``federation.access``). A static directory has no access control,
so a members-only feed is refused (``InputError``, nothing written) unless
the caller passes ``include_members_only``. A published feed's access is
the stored one; a followed feed's (``--mirror``) is what the caller declares
from its node config, and unknown is members-only.

Order, and what a crash at each step leaves (the tlog-tiles rule: data
first, signed head last):

1. one read transaction (a consistent snapshot of the database);
2. every tile and bundle not already on disk is written to a temporary file
   in its directory, fsynced, and renamed into place -- a crash leaves at
   worst a stray ``.tmp-*`` file (removed by the next ``federation export``:
   ``remove_export_leftovers``) and some tiles that no checkpoint names
   yet, which nobody asks for. Bundles below the feed's minimum index
   (pruned: the server answers 410) are not written;
3. snapshot files (content-addressed, immutable), then ``snapshot/index``
   listing only files present, with the minimum index -- a crash leaves
   unlisted files, or an index whose snapshots are all present;
4. ``trust/<N>`` for every version of the trust chain, then ``trust/latest``
   -- before the checkpoint, so a checkpoint signed by a rotated key is
   never served before the trust version that names the key;
5. the checkpoint, the same way. Readers see the old checkpoint (whose
   tiles are all present) or the new one (whose tiles were all written);
6. last, bundles at or below the minimum index are deleted, now that the
   index announcing it is published -- a crash leaves some of them, which
   the next export removes (as the server's 410, only a mirror already past
   them could have used them).

Names: a feed's name becomes its directory under the export root, so every
name is checked (``names``) before a path is made of it -- also the names a
database holds, which may predate that check (a feed named ``..`` would
otherwise write next to the export root).

Failures of the disk (full, read-only, a path under a regular file) are
``StorageError``s naming the file: one error line, never a traceback.

Incremental: tiles are immutable (a path names fixed content), so an
existing file of the right length is skipped. An export never rolls the
checkpoint back: a smaller tree than the one on disk is refused.

The source is a publisher database (``feeds``) or a mirror database
(``follows``: a relay exporting a feed it verified), read through the
stores that own those tables, on one read-only connection.
"""
from __future__ import annotations

import os
from collections.abc import Callable
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from federation.net.access import stricter
from federation.store import mirror as mirror_store, publisher as publisher_store
from federation.store.db import connect
from federation.core.errors import InputError, MalformedError, StorageError
from federation.core.layout import ENTRIES, TILE_WIDTH, parse_tile_path, tile_path
from federation.core.names import FEED_NAME_PATTERN, check_feed_name, is_feed_name
from federation.core.snapshot_format import encode_index, relay_minimum_index
from federation.store.publisher import stored_access
from federation.core.checkpoint import checkpoint_size
from federation.store.snapshots import list_snapshots, minimum_index, mirror_snapshot_dir, open_msgpack_stream, \
    snapshot_dir
from federation.store.tempfiles import locked_tempfile, remove_leftovers
from federation.store.tilestore import TileStore
from federation.store.trust_chain import trust_versions

TEMP_PREFIX = ".tmp-"  # a file being written; renamed into place when complete


@dataclass(frozen=True)
class ExportResult:
    feed: str
    size: int
    written: int
    skipped: int
    checkpoint_changed: bool
    access: str = "public"
    removed: int = 0         # pruned bundles deleted from the export
    minimum_index: int = 0
    snapshots: int = 0       # snapshot files listed in snapshot/index
    trust_versions: int = 0  # trust/<N> files present


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``."""
    _replace_atomic(path, lambda f: f.write(data), fsync)


def _open_binary(path: Path):
    return open(path, "rb")


def _copy_atomic(src: Path, path: Path, fsync: bool = True, opener=_open_binary) -> None:
    """``write_atomic`` for a file too big to hold in memory (a snapshot), read
    through ``opener`` (``open_msgpack_stream``: its decompressed form)."""
    def copy(f):
        with opener(src) as r:
            shutil.copyfileobj(r, f, 1 << 20)
    _replace_atomic(path, copy, fsync)


def _replace_atomic(path: Path, fill, fsync: bool) -> None:
    """A ``TEMP_PREFIX`` file in ``path``'s directory, filled by ``fill(file)``,
    fsynced and renamed to ``path`` while still locked: a kill leaves the
    temporary file to ``remove_leftovers`` of the next export, which never
    touches one a live export holds (``store.tempfiles``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = locked_tempfile(path.parent, TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            fill(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.fchmod(fd, 0o644)  # world-readable: a web server must read it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def remove_export_leftovers(out: Path | str) -> list[Path]:
    """Remove the temporary files killed exports left under ``out`` (a
    feed's export directory); ``StorageError`` if ``out`` cannot be read."""
    try:
        return remove_leftovers(out, TEMP_PREFIX, recursive=True)
    except OSError as e:
        raise StorageError(f"cannot clean up {out}: {e.strerror or e}") from None


def _is_mirror(conn: sqlite3.Connection, db) -> bool:
    """False for a publisher database, True for a mirror database."""
    if publisher_store.holds_feeds(conn):
        return False
    if mirror_store.holds_follows(conn):
        return True
    raise InputError(f"{db} is neither a publisher nor a mirror database")


def _access(conn: sqlite3.Connection, mirror: bool, name: str, declared: str | None) -> str:
    """A published feed: its stored access, narrowed by ``declared``. A
    followed feed: ``declared`` (from the node config), unknown = members."""
    if mirror:
        return declared or "members"
    have = stored_access(conn, name) or "members"
    return have if declared is None else stricter(have, declared)


def feed_access(db: Path | str, name: str, declared: str | None = None) -> str:
    """``public`` or ``members``: what ``export_feed`` would treat feed ``name`` as."""
    conn = connect(db, readonly=True)
    try:
        mirror = _is_mirror(conn, db)
        if (mirror_store.follow_id if mirror else publisher_store.feed_id)(conn, name) is None:
            raise InputError(f"no feed named {name!r} in {db}")
        return _access(conn, mirror, name, declared)
    finally:
        conn.close()


def split_by_access(db: Path | str, names: list[str], declared: dict[str, str],
                    include_members_only: bool) -> tuple[list[str], list[str]]:
    """(feeds to export, members-only feeds withheld) among ``names`` (all
    of ``db``'s when empty); ``declared``: followed feed -> config access."""
    todo, withheld = [], []
    for name in names or feed_names(db):
        check_feed_name(name)  # it becomes a directory of the export
        members = feed_access(db, name, declared.get(name)) == "members"
        (withheld if members and not include_members_only else todo).append(name)
    return todo, withheld


def feed_names(db: Path | str) -> list[str]:
    """Every feed of ``db``, each a valid feed name: ``StorageError`` naming
    any that is not (a database made before names were checked)."""
    conn = connect(db, readonly=True)
    try:
        mirror = _is_mirror(conn, db)
        names = (mirror_store.follow_names if mirror else publisher_store.feed_names)(conn)
    finally:
        conn.close()
    bad = [n for n in names if not is_feed_name(n)]
    if bad:
        raise StorageError(f"{db} holds feed(s) named {', '.join(repr(n[:80]) for n in bad)}, which is not a "
                           f"feed name ({FEED_NAME_PATTERN}, not '.' or '..') and cannot be an export directory; "
                           "nothing was exported (name the other feeds to export them)")
    return names


def export_feed(db: Path | str, name: str, out: Path | str, fsync: bool = True, *, access: str | None = None,
                include_members_only: bool = False,
                progress: Callable[[int, int], None] | None = None) -> ExportResult:
    """Export feed ``name`` of database ``db`` into directory ``out``.

    ``access``: the access the caller's node config declares (a followed
    feed's; for a published feed it can only narrow the stored one). A
    members-only feed raises ``InputError`` before anything is written,
    unless ``include_members_only``. ``progress(done, total)`` is called as
    the tiles and bundles (most of the files) are written or skipped.
    """
    out = Path(out)
    check_feed_name(name)
    try:
        conn = connect(db, readonly=True)
    except StorageError as e:
        raise InputError(str(e)) from None
    try:
        return _export(conn, db, name, out, fsync, access, include_members_only, progress)
    except OSError as e:  # the disk: full, read-only, a path under a regular file, ...
        where = f" ({e.filename})" if e.filename else ""
        raise StorageError(f"export of feed {name} to {out}: {e.strerror or e}{where}") from None
    finally:
        conn.close()


def _export(conn: sqlite3.Connection, db, name: str, out: Path, fsync: bool, access: str | None,
            include_members_only: bool, progress: Callable[[int, int], None] | None = None) -> ExportResult:
    """``export_feed``'s steps, on its read-only connection."""
    conn.execute("BEGIN")  # step 1: one snapshot for checkpoint and tiles
    mirror = _is_mirror(conn, db)
    row = (mirror_store.follow_checkpoint if mirror else publisher_store.feed_checkpoint)(conn, name)
    if row is None:
        raise InputError(f"no feed named {name!r} in {db}")
    fid, checkpoint = row
    effective = _access(conn, mirror, name, access)
    if effective == "members" and not include_members_only:
        raise InputError(f"feed {name!r} is members-only and a static directory has no access control; "
                         "refusing to write it in the clear (include_members_only: only for a directory "
                         "served to members alone)")
    if checkpoint is None:
        raise InputError(f"feed {name!r} has no complete verified version to export yet")
    size = checkpoint_size(checkpoint)
    cp_path = out / "checkpoint"
    if cp_path.exists():
        try:
            old = cp_path.read_bytes()
            old_size = checkpoint_size(old)
        except (OSError, MalformedError):
            old, old_size = None, -1
        if old_size > size:
            raise InputError(f"{cp_path} holds tree size {old_size}, newer than {size}; refusing to roll back")
    else:
        old = None
    if mirror:
        minimum, files = relay_minimum_index(mirror_store.base_size(conn, fid)), mirror_snapshot_dir(db) / str(fid)
    else:
        minimum, files = minimum_index(conn, fid), snapshot_dir(db) / str(fid)
    # Step 2: tiles and bundles, skipping immutable files already present.
    written = skipped = 0
    tiles = TileStore(conn, fid)
    sizes = list(tiles.sizes())
    for done, (level, idx, width, length) in enumerate(sizes, 1):
        if progress is not None:
            progress(done, len(sizes))
        if level == ENTRIES and idx * TILE_WIDTH + width <= minimum:
            continue  # pruned (the server answers 410); the partial bundle of the size is kept in the db
        path = out / tile_path(level, idx, width)
        try:
            if path.stat().st_size == length:
                skipped += 1
                continue
        except FileNotFoundError:
            pass
        write_atomic(path, tiles.get(level, idx, width), fsync)
        written += 1
    # Step 3: snapshot files, then the index that lists them.
    listed = []
    for ref in list_snapshots(conn, fid):
        src, dest = files / f"{ref.sha256}.snap", out / "snapshot" / ref.sha256
        if not src.exists():
            continue  # replaced (a relay's re-bootstrap): the server does not serve it either
        if not (dest.exists() and dest.stat().st_size == src.stat().st_size):
            _copy_atomic(src, dest, fsync)
            written += 1
        raw = out / "snapshot" / f"{ref.sha256}.msgpack"  # the stream without zstd (PROTOCOL.md section 11)
        if not raw.exists():
            _copy_atomic(src, raw, fsync, open_msgpack_stream)
            written += 1
        listed.append(ref)
    index = encode_index(listed, minimum)
    written += _write_if_changed(out / "snapshot" / "index", index, fsync)
    # Step 4: the trust chain, numbered versions first.
    chain = trust_versions(conn, name)
    for version, data in chain:
        written += _write_if_changed(out / "trust" / str(version), data, fsync)
    if chain:
        written += _write_if_changed(out / "trust" / "latest", chain[-1][1], fsync)
    # Step 5: the signed head.
    changed = old != checkpoint
    if changed:
        write_atomic(cp_path, checkpoint, fsync)
    conn.execute("COMMIT")
    # Step 6, last: bundles below the minimum index the index now announces.
    removed = _remove_pruned(out, minimum)
    return ExportResult(name, size, written, skipped, changed, effective, removed, minimum, len(listed),
                        len(chain))


def _write_if_changed(path: Path, data: bytes, fsync: bool) -> int:
    try:
        if path.read_bytes() == data:
            return 0
    except FileNotFoundError:
        pass
    write_atomic(path, data, fsync)
    return 1


def _remove_pruned(out: Path, minimum: int) -> int:
    """Delete exported bundles ending at or below ``minimum``; return how many."""
    root = out / "tile" / "entries"
    if minimum <= 0 or not root.is_dir():
        return 0
    removed = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith(".tmp-"):
            continue
        try:
            level, idx, width = parse_tile_path(path.relative_to(out).as_posix())
        except MalformedError:
            continue  # not ours
        if level == ENTRIES and idx * TILE_WIDTH + width <= minimum:
            path.unlink()
            removed += 1
    return removed
