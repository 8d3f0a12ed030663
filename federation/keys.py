"""Private key files. The only module that reads or writes them.

A key file holds one line in the Go ``sumdb/note`` private key format
(``PRIVATE+KEY+name+keyid+base64``). Files are created with mode 0600 in a
directory with mode 0700, and refused if group or others can read them.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InputError
from .note import Signer


def write_new_key(path: Path, name: str) -> Signer:
    """Generate an Ed25519 key for ``name`` and write it to ``path`` (0600).

    Refuses to overwrite an existing file: losing a log key is unrecoverable.
    """
    signer = Signer.generate(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"key file {path} already exists; refusing to overwrite it") from None
    with os.fdopen(fd, "w") as f:
        f.write(signer.private_key_text() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return signer


def load_signer(path: Path) -> Signer:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"key file {path} not found") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"key file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
    return Signer.from_private_key_text(path.read_text())
