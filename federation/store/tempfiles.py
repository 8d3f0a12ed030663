"""Temporary files and directories that a kill leaves behind, and their removal.

Every writer that makes a file in two steps (write a temporary file, then
rename it into place) can be killed between them: a bootstrap's downloaded
snapshot (``.snapshot-*.tmp`` next to the mirror database), a snapshot
being written (``.snapshot-*.tmp`` in ``snapshots/<feed id>/``; older
versions named them ``tmp*.tmp``), an export's ``.tmp-*`` files, and the
working directory of a mirror that heals itself (``.heal-*``). The next
run of the same command removes them (``remove_leftovers``), as the mirror
clears the rows a killed sync staged.

Invariant: a leftover is removed only when no live process uses it. The
writer holds an exclusive ``flock`` on the file (on a directory: on its
``.lock`` file) for as long as it uses it, and the kernel drops the lock
when the process dies, however it dies. A locked file is left alone, so
two processes sharing a home never delete each other's work. The writer
takes the lock right after creating the file and then checks that the
name still points at its file: a cleaner that got in between (and removed
it) makes the writer start again with a new name, so no grace period is
needed for files. A directory is locked through a file inside it, which
its writer makes a moment after the directory: a directory without one
is left alone for ``GRACE_SECONDS``.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

GRACE_SECONDS = 60
LOCK_NAME = ".lock"


def _lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False if another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def locked_tempfile(directory: Path | str, prefix: str, suffix: str = "") -> tuple[int, Path]:
    """``mkstemp`` in ``directory``, with an exclusive lock on the file held by
    the returned descriptor: close it only when done with the path (after
    renaming the file into place, or after removing it)."""
    while True:
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
        # A cleaner may have locked and removed the new file before we locked
        # it: then the lock fails, or the name no longer points at our file.
        if _lock(fd) and _same_file(fd, name):
            return fd, Path(name)
        os.close(fd)


def _same_file(fd: int, name: str) -> bool:
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


@contextlib.contextmanager
def locked_tempdir(directory: Path | str, prefix: str) -> Iterator[Path]:
    """A new directory in ``directory``, locked (its ``.lock`` file) while
    the block runs and removed with everything in it after."""
    path = Path(tempfile.mkdtemp(dir=directory, prefix=prefix))
    fd = os.open(path / LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        _lock(fd)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def remove_leftovers(directory: Path | str, prefix: str, suffix: str = "", *, recursive: bool = False,
                     now: float | None = None) -> list[Path]:
    """Remove the files and directories named ``prefix*suffix`` in
    ``directory`` (and below it, with ``recursive``) that no live process
    holds (a directory without its lock file: older than ``GRACE_SECONDS``);
    return what was removed.

    Best effort: a leftover that cannot be removed now (permissions, a
    race with another cleaner) stays for the next start.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now = time.time() if now is None else now
    pattern = f"{prefix}*{suffix}"
    removed = []
    for path in (directory.rglob(pattern) if recursive else directory.glob(pattern)):
        try:
            holder = path / LOCK_NAME if path.is_dir() else path
            if path.is_dir() and not holder.exists() and now - path.lstat().st_mtime < GRACE_SECONDS:
                continue  # its writer may not have made its lock file yet
            fd = os.open(holder, os.O_RDONLY) if holder.exists() else None
        except OSError:
            continue
        try:
            if fd is not None and not _lock(fd):
                continue  # a live writer holds it
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        except OSError:
            continue
        finally:
            if fd is not None:
                os.close(fd)
    return removed
