"""Private key files. The only module that reads or writes them.

A key file holds one line in the Go ``sumdb/note`` private key format
(``PRIVATE+KEY+name+keyid+base64(type || seed)``): type 0x01 for log keys
(``Signer``), 0x04 for cosigner/witness keys (``Cosigner``). Files are
created with mode 0600 in a directory with mode 0700, never overwritten, and
refused if group or others can read them.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from federation.core.errors import InputError
from federation.core.note import Cosigner, Signer


def _write_new(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Losing a key is unrecoverable: never replace one.
        raise InputError(f"key file {path} already exists; refusing to overwrite it") from None
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"key file {path} not found") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"key file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
    return path.read_text()


def write_new_key(path: Path, name: str) -> Signer:
    """Generate an Ed25519 log key for ``name`` and write it to ``path`` (0600)."""
    signer = Signer.generate(name)
    _write_new(path, signer.private_key_text())
    return signer


def load_signer(path: Path) -> Signer:
    return Signer.from_private_key_text(_read(path))


def write_new_cosigner_key(path: Path, name: str):
    """Generate a cosigner (type 0x04) key for ``name`` and write it to ``path`` (0600)."""
    c = Cosigner.generate(name)
    _write_new(path, c.private_key_text())
    return c


def load_cosigner(path: Path):
    return Cosigner.from_private_key_text(_read(path))
