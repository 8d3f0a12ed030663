"""Consistent backups of a node's databases while it runs (``federation backup``).

Each database of the home (``Home.databases``) is copied with SQLite's
online backup API (``sqlite3.Connection.backup``) in one step: the copy is
the database as of one read transaction, so a publish committing meanwhile
is either wholly in it or wholly absent -- never a checkpoint without its
tiles. WAL mode lets the node keep writing while the copy is read.

Written into the output directory, each file mode 0600 (``platform.db``
holds webhook secrets, ``auth.db`` token hashes):

* a copy of every database the home has;
* ``manifest.json``: when and by which version it was made, each copy's
  SHA-256 and size, and per published feed (read from the copy itself) its
  tree size, version, active count and the served checkpoint's root, per
  followed feed its applied size and version. ``feed recover`` and a
  restore can be checked against it.

NOT in a backup, on purpose: private keys (``HOME/private``; back them up
separately, offline -- whoever holds a log key can sign for the feed) and
the served-checkpoint records (``HOME/state``), which must survive a restore
to stop an older copy from forking the log (``store.served``).

Crash order: copies are written to ``OUT/.partial-*`` and renamed into
place, the manifest last; a backup without ``manifest.json`` is incomplete.
A failed copy removes its temporary file; one left by a killed backup is
removed by the next backup into the same OUT (only those: any other file
makes OUT refused).
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from federation import __version__
from federation.core.checkpoint import parse_checkpoint_body
from federation.core.errors import FederationError, InputError, StorageError
from federation.core.note import parse_note
from federation.node.home import Home
from federation.store.db import connect, storage_error
from federation.store.mirror import holds_follows, read_follows
from federation.store.publisher import holds_feeds, served_feeds

MANIFEST = "manifest.json"
PARTIAL = ".partial-"  # prefix of a copy being written (never a finished file)


@dataclass(frozen=True)
class Backup:
    out: Path
    manifest: dict


def backup_home(home: Home, out: Path, now: int | None = None) -> Backup:
    """Copy ``home``'s databases into ``out`` (new or empty) and write the manifest."""
    out = Path(out)
    if out.is_dir():
        _clear_litter(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty directory: back up into a new one")
    if out.resolve().is_relative_to(home.root.resolve()):
        raise InputError(f"{out} is inside the node home {home.root}: back up elsewhere (another disk)")
    sources = [(n, p) for n, p in home.databases().items() if p.exists()]
    if not sources:
        raise InputError(f"no database in {home.root}: nothing to back up")
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise StorageError(f"cannot create {out}: {e}") from None
    files, feeds, follows = {}, [], []
    for name, src in sources:
        dst = out / src.name
        _copy(src, dst)
        files[dst.name] = {"database": name, "bytes": dst.stat().st_size, "sha256": _sha256(dst)}
        conn = connect(dst, readonly=True)
        try:
            if holds_feeds(conn):
                feeds += [_published(row) for row in served_feeds(conn)]
            if holds_follows(conn):
                follows += [{"name": f.name, "origin": f.origin, "size": f.applied_size, "version": f.version}
                            for f in read_follows(conn)]
        except sqlite3.Error as e:
            raise StorageError(f"cannot read the copy {dst}: {e}") from None
        finally:
            conn.close()
    manifest = {
        "created": int(time.time()) if now is None else now,
        "tool": f"federation {__version__}",
        "home": str(home.root),
        "files": files,
        "published": feeds,
        "followed": follows,
        "not_included": ["private keys (HOME/private): back them up separately, offline",
                         "served-checkpoint records (HOME/state): never restore them",
                         "snapshot files (re-create them with 'federation snapshot write')"],
    }
    _write_private(out / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return Backup(out, manifest)


def _clear_litter(out: Path) -> None:
    """Remove our own temporary copies (``.partial-*.db``) left in ``out`` by a
    backup that was killed before it could clean up, so that OUT holding only
    them counts as empty (the same cron line works again)."""
    for p in out.glob(f"{PARTIAL}*.db"):
        try:
            p.unlink()
        except OSError as e:
            raise StorageError(f"cannot remove the unfinished copy {p}: {e}") from None


def _published(row) -> dict:
    name, origin, vkey, size, version, pending, checkpoint = row
    try:
        cp = parse_checkpoint_body(parse_note(checkpoint).text)
    except FederationError as e:
        raise StorageError(f"feed {name}: the backed-up checkpoint does not parse: {e}") from None
    return {"name": name, "origin": origin, "vkey": vkey, "size": size, "version": version,
            "checkpoint_size": cp.size, "checkpoint_root": base64.b64encode(cp.root).decode(),
            "checkpoint_sha256": hashlib.sha256(checkpoint).hexdigest(), "pending": pending is not None}


def _copy(src: Path, dst: Path) -> None:
    """``src`` copied through the online backup API into ``dst`` (0600), via a
    temporary name that is removed whatever goes wrong (our own errors from
    ``connect`` included), so a failed backup leaves OUT reusable."""
    try:
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=PARTIAL, suffix=".db")
        os.close(fd)
    except OSError as e:
        raise StorageError(f"cannot write in {dst.parent}: {e}; check the free space of that disk") from None
    try:
        source = connect(src, readonly=True)
        try:
            target = sqlite3.connect(tmp)
            try:
                source.backup(target)  # pages=-1: one step, one consistent read transaction
                # One self-contained file (no -wal beside it), whatever the node's journal mode.
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
        finally:
            source.close()
        os.chmod(tmp, 0o600)
        os.replace(tmp, dst)
    except sqlite3.Error as e:
        raise storage_error(e, f"cannot back up {src} into {dst}") or StorageError(
            f"cannot back up {src} into {dst}: {e}") from None
    except OSError as e:
        raise StorageError(f"cannot write {dst}: {e}; check the free space of that disk") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # gone already after the rename


def _write_private(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
